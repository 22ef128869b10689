"""Group commit: one run of a piece of work for every caller that asks at about the same time.

The route table is NGINX's config: changing it is a render, ``nginx -t``, a reload and a wait
for the new workers, a few hundred milliseconds at a hundred apps. Done once per caller, a
hundred apps destroyed (or deploying) together queued a hundred applies one behind the other.
Here they share: while one run is under way every caller that asks joins the next, which
starts as soon as the running one ends and carries all their requests at once.

    caller A ──join(a)──┐                           ┌──▶ A, B: the run that started after both asked
    caller B ──join(b)──┼─▶ GroupCommit: one run ───┤
    caller C ──join(c)──┘   in flight at a time     └──▶ C (asked while it ran): the next run

**Freshness** (as ``SharedRead`` in shared.py): a caller only joins a run that *starts after it
asked*, so the run reads desired state that already holds the caller's change and never
answers from a state older than the call. A run starts one event-loop step after its first
caller asked, so callers woken in the same step join it.

Every caller of a run gets the same result (or the same error); the work receives the
arguments of all of its callers (``force`` flags, say) and its result says what each caller
needs to know (for routes: which apps NGINX refused). A caller cancelled while it waits does
not cancel the run the others wait for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from kiln.background import stop_tasks

A = TypeVar("A")
T = TypeVar("T")


class GroupCommit(Generic[A, T]):
    """``work(args)`` once for everyone who joins at the same time: single flight, fresh."""

    def __init__(self, *, name: str) -> None:
        self._name = name
        self._next: asyncio.Future[T] | None = None  # callers waiting for a run not started yet
        self._args: list[A] = []  # their arguments
        self._work: Callable[[list[A]], Awaitable[T]] | None = None
        self._task: asyncio.Task[None] | None = None
        self.runs = 0  # runs made (for tests and benchmarks)
        self.joins = 0  # callers served (for tests and benchmarks)

    async def join(self, arg: A, work: Callable[[list[A]], Awaitable[T]]) -> T:
        """The result of a run of ``work`` that started after this call, with ``arg`` among
        its arguments. Every caller of one ``GroupCommit`` passes the same work (the run uses
        the one its first caller gave)."""
        self.joins += 1
        if self._next is None:
            future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
            # Nobody may be left to hear a failure (every caller cancelled): not an error.
            future.add_done_callback(_consume)
            self._next, self._args, self._work = future, [], work
        self._args.append(arg)
        waiting_for = self._next
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"group commit: {self._name}")
        # Shielded: one caller cancelled (its loop forgotten) must not cancel the others' run.
        return await asyncio.shield(waiting_for)

    async def close(self) -> None:
        """Cancel a run in flight and the one waiting (their callers see ``CancelledError``)."""
        task, self._task = self._task, None
        await stop_tasks(task)
        if self._next is not None:
            self._next.cancel()
            self._next = None

    async def _run(self) -> None:
        # Started as a task: its first step runs after the callers of this loop step joined.
        try:
            while self._next is not None and self._work is not None:
                future, self._next = self._next, None
                args, self._args = self._args, []
                self.runs += 1
                try:
                    result = await self._work(args)
                except asyncio.CancelledError:
                    future.cancel()
                    raise
                except Exception as exc:
                    if not future.done():
                        future.set_exception(exc)
                else:
                    if not future.done():
                        future.set_result(result)
        finally:
            if self._task is asyncio.current_task():
                self._task = None


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
