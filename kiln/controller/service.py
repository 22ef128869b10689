"""What the API asks of the running kiln: the ``Service`` protocol.

``kiln.controller.engine.Engine`` implements it by delegating to ``commands`` (writes) and
``reads`` (reads) over the shared ``ControlPlane``. Writes go to the store (desired state) and
wake the app's loop; reads combine the store with what the loops last observed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from kiln.controller.views import AppStatus, DeployResult, ReleaseView
from kiln.drivers.base import LogLine
from kiln.model import AppKey, Event


class Service(Protocol):
    async def deploy(self, spec_text: str, *, message: str, who: str) -> DeployResult:
        """Validate the spec (``SpecInvalid``), pin its image (``ImageNotFound``), append a
        release and start its rollout. Same digest and spec hash as the target: only the
        scale is applied, ``changed`` is False."""

    async def rollback(
        self, key: AppKey, *, to: int | None, message: str, who: str
    ) -> DeployResult:
        """A new release that reuses release ``to``'s digest and spec (default: the release
        before the current one). ``NotFound`` / ``Conflict`` when there is nothing to go back to."""

    async def scale(self, key: AppKey, instances: int, *, who: str) -> AppStatus: ...

    async def stop(self, key: AppKey, *, who: str) -> AppStatus:
        """Zero instances, history kept; ``deploy`` or ``scale`` starts it again."""

    async def destroy(self, key: AppKey, *, who: str) -> None:
        """Stop every instance, drop the routes, forget the app."""

    async def status(self, key: AppKey) -> AppStatus:
        """``NotFound`` for an unknown app."""

    async def list_status(self) -> list[AppStatus]: ...

    async def releases(self, key: AppKey) -> list[ReleaseView]:
        """Oldest first. ``NotFound`` for an unknown app."""

    async def events(
        self, *, key: AppKey | None, after_id: int = 0, limit: int = 100
    ) -> list[Event]: ...

    def follow_events(self, *, key: AppKey | None, after_id: int) -> AsyncIterator[Event]:
        """Events after ``after_id`` as they are appended, until cancelled."""

    def logs(
        self, key: AppKey, *, instance: str | None, follow: bool, tail: int | None
    ) -> AsyncIterator[LogLine]:
        """Log lines of the app's instances (or one). ``NotFound`` for unknown app/instance."""

    async def request_shutdown(self) -> None:
        """Stop the server gracefully (NGINX and the apps keep serving)."""
