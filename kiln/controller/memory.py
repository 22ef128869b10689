"""Memory kiln freed goes back to the system a few seconds after apps are forgotten.

Python frees a destroyed app's objects, but glibc's malloc keeps the freed pages in its arenas
(the main one and one per thread that allocated: the Docker driver's workers), so the server's
resident size stayed at its peak: bench/scale.py saw 96 MB at start, 144 MB with 100 apps, and
144 MB again after all of them were destroyed. ``malloc_trim(0)`` hands every whole free page of
every arena back. It runs in a thread (it walks the arenas), once per burst of forgotten apps:
a hundred destroys at once make one trim, a few seconds after the last.

Not glibc (musl, macOS): nothing to call, and ``soon()`` does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
from collections.abc import Callable

from kiln.background import stop_tasks

log = logging.getLogger("kiln.controller")

TRIM_DELAY = 5.0
"""Seconds after the last ``soon()`` before trimming: a burst of destroys makes one trim."""


def glibc_trim() -> Callable[[], object] | None:
    """``malloc_trim(0)`` of the process's C library, or None where there is none."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


class MemoryTrimmer:
    def __init__(
        self,
        *,
        trim: Callable[[], object] | None = None,
        delay: float = TRIM_DELAY,
    ) -> None:
        self._trim = trim
        self._delay = delay
        self._asked = asyncio.Event()  # soon() again while waiting: wait the delay again
        self._task: asyncio.Task[None] | None = None
        self.trims = 0  # trims made (for tests and benchmarks)

    def soon(self) -> None:
        """Trim ``delay`` seconds from now (later again if asked again meanwhile)."""
        if self._trim is None:
            return
        self._asked.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="memory trim")

    async def close(self) -> None:
        task, self._task = self._task, None
        await stop_tasks(task)

    async def _run(self) -> None:
        assert self._trim is not None
        try:
            while self._asked.is_set():  # again when asked while the last trim ran
                while self._asked.is_set():
                    self._asked.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._asked.wait(), self._delay)
                await asyncio.to_thread(self._trim)
                self.trims += 1
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("giving freed memory back failed")
        finally:
            if self._task is asyncio.current_task():
                self._task = None
