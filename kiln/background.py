"""Background tasks: ``Periodic`` runs one step, waits, and again, until it is closed;
``stop_tasks`` cancels tasks and waits until each has ended.

For the engine's samplers, watchers and loops. A periodic step that fails is logged and the next
one runs anyway: a bug in one must not end its sampling for good. Below every layer (like
``kiln.lazy``): asyncio and logging only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any


async def stop_tasks(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel every task given (None: none), then wait until each has ended; their
    cancellation is not an error here."""
    running = [task for task in tasks if task is not None]
    for task in running:
        task.cancel()
    for task in running:
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Periodic:
    def __init__(
        self,
        step: Callable[[], Awaitable[object]],  # what it returns is not looked at
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
        task, self._task = self._task, None
        await stop_tasks(task)

    async def _run(self) -> None:
        while True:
            try:
                await self._step()
            except Exception:
                self._log.exception("%s failed; trying again in %gs", self._name, self.every)
            await asyncio.sleep(self.every)
