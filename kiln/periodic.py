"""``Periodic``: a background task that runs one step, waits, and again, until it is closed.

For the engine's samplers and watchers. A step that fails is logged and the next one runs
anyway: a bug in one must not end its sampling for good. Below every layer (like ``kiln.lazy``):
asyncio and logging only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable


class Periodic:
    def __init__(
        self,
        step: Callable[[], Awaitable[None]],
        *,
        every: float,
        name: str,
        log: logging.Logger,
    ) -> None:
        self.every = every
        self._step = step
        self._name = name
        self._log = log
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run the first step now, then one every ``every`` seconds; a no-op when running."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self._name)

    async def close(self) -> None:
        """Cancel the task and wait for it to end; ``start`` may run it again."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self._step()
            except Exception:
                self._log.exception("%s failed; trying again in %gs", self._name, self.every)
            await asyncio.sleep(self.every)
