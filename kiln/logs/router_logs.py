"""NGINX's log files: rotation without a reload, and an app's access log lines.

Rotation (``rotate``): ``access.log`` → ``access.log.1`` → … → ``access.log.KEEP`` (the oldest
is removed), then NGINX is told to reopen its files (``USR1``, as ``nginx -s reopen``). Until
it reopens, NGINX keeps writing into the renamed file (same inode), and on reopen it flushes its
buffer there first: no line is lost, and no worker is replaced.

Reading (``access_history``, ``follow_access``): the JSON lines of ``access.log`` and its
rotated files whose ``upstream`` is the app (``ENV/APP``), oldest first; following survives a
rotation (what is left of the old file is read before the new one).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kiln.logs.archive import POLL_SECONDS, ArchivedLine, LogQuery
from kiln.model import AppKey


def rotated(path: Path, keep: int) -> list[Path]:
    """The file and its rotated copies, oldest first."""
    older = [path.with_name(f"{path.name}.{n}") for n in range(keep, 0, -1)]
    return [p for p in older if p.exists()] + ([path] if path.exists() else [])


def rotate(path: Path, keep: int) -> bool:
    """Shift ``path`` to ``path.1`` (and older ones up, dropping the last); False if there is
    nothing to rotate. The caller makes NGINX reopen its files afterwards."""
    try:
        if path.stat().st_size == 0:
            return False
    except FileNotFoundError:
        return False
    oldest = path.with_name(f"{path.name}.{keep}")
    oldest.unlink(missing_ok=True)
    for n in range(keep - 1, 0, -1):
        source = path.with_name(f"{path.name}.{n}")
        if source.exists():
            source.rename(path.with_name(f"{path.name}.{n + 1}"))
    path.rename(path.with_name(f"{path.name}.1"))
    return True


def _access_line(raw: bytes, upstream: str) -> ArchivedLine | None:
    if upstream.encode() not in raw:
        return None  # cheap skip of other apps' lines
    try:
        data: Any = json.loads(raw)
    except ValueError:
        return None
    if data.get("upstream") != upstream:
        return None
    try:
        at = datetime.fromisoformat(str(data["time"])).astimezone(UTC)
    except (KeyError, ValueError):
        return None
    release = data.get("release")
    text = (
        f"{data.get('method', '')} {data.get('host', '')}{data.get('uri', '')} "
        f"{data.get('status', '')} {data.get('request_time', '')}s"
        f" upstream={data.get('upstream_addr', '') or '-'}"
    )
    return ArchivedLine(
        at=at,
        stream="access",
        release=int(release) if isinstance(release, int) else 0,
        instance=str(data.get("instance") or "-"),
        text=text,
    )


def _upstream(key: AppKey) -> str:
    return f"{key.environment}/{key.app}"


def access_history(
    path: Path, key: AppKey, query: LogQuery, *, keep: int, tail: int | None = None
) -> list[ArchivedLine]:
    upstream = _upstream(key)
    lines: list[ArchivedLine] = []
    for file in rotated(path, keep):
        try:
            with open(file, "rb") as handle:
                for raw in handle:
                    parsed = _access_line(raw, upstream)
                    if parsed is not None and query.matches(parsed):
                        lines.append(parsed)
        except OSError:
            continue
    return lines[-tail:] if tail else lines if tail is None else []


class _Tail:
    """Where a follower is in the access log, across rotations."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            info = path.stat()
            self.inode: int | None = info.st_ino
            self.offset = info.st_size
        except OSError:
            self.inode, self.offset = None, 0

    def read_new(self) -> list[bytes]:
        try:
            info = self.path.stat()
        except OSError:
            return []  # between a rotation and NGINX's reopen
        chunks: list[bytes] = []
        if self.inode is not None and info.st_ino != self.inode:
            # Rotated: finish the old file (now .1; complete once NGINX reopened) first.
            old = self.path.with_name(f"{self.path.name}.1")
            try:
                if os.stat(old).st_ino == self.inode:
                    with open(old, "rb") as handle:
                        handle.seek(self.offset)
                        chunks.append(handle.read())
            except OSError:
                pass
            self.inode, self.offset = info.st_ino, 0
        if self.inode is None:
            self.inode = info.st_ino
        if info.st_size > self.offset:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read(info.st_size - self.offset)
            complete = data.rfind(b"\n") + 1
            self.offset += complete
            chunks.append(data[:complete])
        return chunks


async def follow_access(
    path: Path, key: AppKey, query: LogQuery, *, keep: int, tail: int | None = None
) -> AsyncIterator[ArchivedLine]:
    upstream = _upstream(key)
    position = await asyncio.to_thread(_Tail, path)
    for line in await asyncio.to_thread(access_history, path, key, query, keep=keep, tail=tail):
        yield line
    while True:
        await asyncio.sleep(POLL_SECONDS)
        for chunk in await asyncio.to_thread(position.read_new):
            for raw in chunk.splitlines():
                parsed = _access_line(raw, upstream)
                if parsed is not None and query.matches(parsed):
                    yield parsed
