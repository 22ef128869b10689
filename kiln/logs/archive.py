"""``LogArchive``: every instance's stdout and stderr kept on disk past the instance's life.

    $KILN_HOME/logs/ENV/APP/INSTANCE.SEQ.jsonl     one JSON object a line:
        {"t": unix time, "s": "stdout" | "stderr", "r": release, "i": instance, "m": text}

A segment is closed at ``max_file_bytes`` and the next one opened; per app, the oldest closed
segments go first once the app holds more than ``max_bytes_per_app`` or a segment is older
than ``max_age`` seconds. The segments instances are writing are never removed under them, so
an app holds at most ``max_bytes_per_app`` plus one segment per running instance.
Reading merges every segment of the app in time order; following polls the files, so the
instances of a new release join the stream the moment they write a line.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from kiln.model import AppKey

log = logging.getLogger("kiln.logs")

_SEGMENT = re.compile(r"^(?P<instance>[A-Za-z0-9_.-]+?)\.(?P<seq>[0-9]{1,9})\.jsonl$")
POLL_SECONDS = 0.2


@dataclass(frozen=True, kw_only=True)
class ArchivedLine:
    at: datetime
    stream: str  # stdout | stderr (router lines: access)
    release: int
    instance: str
    text: str


@dataclass(frozen=True, kw_only=True)
class LogQuery:
    release: int | None = None
    instance: str | None = None
    since: datetime | None = None
    grep: str | None = None

    def matches(self, line: ArchivedLine) -> bool:
        if self.release is not None and line.release != self.release:
            return False
        if self.instance is not None and line.instance != self.instance:
            return False
        if self.since is not None and line.at < self.since:
            return False
        return self.grep is None or self.grep in line.text


def _parse(raw: bytes) -> ArchivedLine | None:
    try:
        data: Any = json.loads(raw)
        return ArchivedLine(
            at=datetime.fromtimestamp(float(data["t"]), UTC),
            stream=str(data["s"]),
            release=int(data["r"]),
            instance=str(data["i"]),
            text=str(data["m"]),
        )
    except (ValueError, KeyError, TypeError):
        return None  # a torn last line (kiln stopped mid-write): skipped


class SegmentWriter:
    """Appends one instance's lines; opens the next segment at the size limit."""

    def __init__(self, archive: LogArchive, key: AppKey, instance: str, release: int) -> None:
        self._archive = archive
        self.key = key
        self.instance = instance
        self.release = release
        self._dir = archive.app_dir(key)
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        existing = archive.segments_of(key, instance)
        self._seq = existing[-1][0] if existing else 1
        self.last_at = _last_time(existing[-1][1]) if existing else 0.0
        self._handle: IO[bytes] | None = None
        self._size = 0

    @property
    def path(self) -> Path:
        return self._dir / f"{self.instance}.{self._seq}.jsonl"

    def write(self, at: float, stream: str, text: str) -> None:
        if self._handle is None:
            self._handle = open(self.path, "ab")  # noqa: SIM115 (kept open while it writes)
            self._size = self._handle.tell()
            self._archive.writing.add(self.path)
        record = {"t": at, "s": stream, "r": self.release, "i": self.instance, "m": text}
        data = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        self._handle.write(data)
        self._handle.flush()
        self._size += len(data)
        self.last_at = at
        if self._size >= self._archive.max_file_bytes:
            self.close()
            self._seq += 1

    def close(self) -> None:
        """Close the segment (the next line opens the next one) and apply the app's bounds."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None
            self._archive.writing.discard(self.path)
            self._archive.prune(self.key)


def _last_time(path: Path) -> float:
    """The time of the last whole line of a segment (to skip what is already kept)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 65536))
            tail = handle.read().splitlines()
    except OSError:
        return 0.0
    for raw in reversed(tail):
        line = _parse(raw)
        if line is not None:
            return line.at.timestamp()
    return 0.0


class LogArchive:
    def __init__(
        self,
        root: Path,
        *,
        max_bytes_per_app: int = 50 * 1024 * 1024,
        max_file_bytes: int = 5 * 1024 * 1024,
        max_age: float = 7 * 24 * 3600.0,
    ) -> None:
        self.root = root
        self.max_bytes_per_app = max_bytes_per_app
        self.max_file_bytes = max_file_bytes
        self.max_age = max_age
        self.writing: set[Path] = set()  # segments open for writing: never pruned

    def app_dir(self, key: AppKey) -> Path:
        return self.root / key.environment / key.app

    def segments(self, key: AppKey) -> list[tuple[str, int, Path]]:
        """(instance, seq, path) of every segment of the app."""
        found: list[tuple[str, int, Path]] = []
        try:
            entries = list(os.scandir(self.app_dir(key)))
        except OSError:
            return found
        for entry in entries:
            match = _SEGMENT.match(entry.name)
            if match:
                found.append((match["instance"], int(match["seq"]), Path(entry.path)))
        return found

    def segments_of(self, key: AppKey, instance: str) -> list[tuple[int, Path]]:
        return sorted((seq, path) for inst, seq, path in self.segments(key) if inst == instance)

    def writer(self, key: AppKey, instance: str, release: int) -> SegmentWriter:
        return SegmentWriter(self, key, instance, release)

    def instances(self, key: AppKey) -> set[str]:
        return {inst for inst, _, _ in self.segments(key)}

    # --- retention ---------------------------------------------------------------------

    def prune(self, key: AppKey, *, now: float | None = None) -> int:
        """Remove the app's oldest closed segments past the size or age bound; how many."""
        moment = time.time() if now is None else now
        aged: list[tuple[float, int, Path]] = []
        total = 0
        for _, _, path in self.segments(key):
            try:
                info = path.stat()
            except OSError:
                continue
            total += info.st_size
            aged.append((info.st_mtime, info.st_size, path))
        aged.sort()
        removed = 0
        for mtime, size, path in aged:
            too_old = moment - mtime > self.max_age
            if not too_old and total <= self.max_bytes_per_app:
                break
            if path in self.writing:
                continue
            try:
                path.unlink()
            except OSError:
                continue
            total -= size
            removed += 1
        return removed

    def prune_all(self) -> int:
        removed = 0
        for env_dir in _dirs(self.root):
            for app_dir in _dirs(env_dir):
                removed += self.prune(AppKey(env_dir.name, app_dir.name))
        return removed

    # --- reading -----------------------------------------------------------------------

    def history(
        self, key: AppKey, query: LogQuery, *, tail: int | None = None
    ) -> list[ArchivedLine]:
        """Kept lines of the app matching ``query``, oldest first (the last ``tail``)."""
        per_file: list[Iterator[ArchivedLine]] = []
        for instance, _, path in self.segments(key):
            if query.instance is not None and instance != query.instance:
                continue
            if query.since is not None:
                try:
                    if path.stat().st_mtime < query.since.timestamp():
                        continue  # nothing written after `since`
                except OSError:
                    continue
            per_file.append(_read_segment(path, query))
        merged = heapq.merge(*per_file, key=lambda line: line.at)
        if tail is None:
            return list(merged)
        last: list[ArchivedLine] = []
        for line in merged:
            last.append(line)
            if len(last) > 2 * tail + 1000:
                del last[: len(last) - tail]
        return last[-tail:] if tail else []

    async def follow(
        self, key: AppKey, query: LogQuery, *, tail: int | None = None
    ) -> AsyncIterator[ArchivedLine]:
        """``history`` then new lines as they are written, from every instance of the app,
        including instances that appear later (a rollout's new release)."""
        offsets: dict[Path, int] = {}
        for _, _, path in self.segments(key):
            try:
                offsets[path] = path.stat().st_size
            except OSError:
                continue
        for line in await asyncio.to_thread(self.history, key, query, tail=tail):
            yield line
        while True:
            await asyncio.sleep(POLL_SECONDS)
            for line in await asyncio.to_thread(self._new_lines, key, query, offsets):
                yield line

    def _new_lines(
        self, key: AppKey, query: LogQuery, offsets: dict[Path, int]
    ) -> list[ArchivedLine]:
        """Lines written since ``offsets`` (updated), in time order; new segments from 0."""
        fresh: list[ArchivedLine] = []
        for instance, _, path in self.segments(key):
            if query.instance is not None and instance != query.instance:
                continue
            start = offsets.get(path, 0)
            try:
                size = path.stat().st_size
                if size <= start:
                    continue
                with open(path, "rb") as handle:
                    handle.seek(start)
                    chunk = handle.read(size - start)
            except OSError:
                continue
            complete = chunk.rfind(b"\n") + 1  # a half-written line waits for its end
            offsets[path] = start + complete
            for raw in chunk[:complete].splitlines():
                parsed = _parse(raw)
                if parsed is not None and query.matches(parsed):
                    fresh.append(parsed)
        fresh.sort(key=lambda line: line.at)
        return fresh


def _read_segment(path: Path, query: LogQuery) -> Iterator[ArchivedLine]:
    try:
        with open(path, "rb") as handle:
            for raw in handle:
                if not raw.endswith(b"\n"):
                    break
                parsed = _parse(raw)
                if parsed is not None and query.matches(parsed):
                    yield parsed
    except OSError:
        return


def _dirs(path: Path) -> Iterable[Path]:
    try:
        return [Path(e.path) for e in os.scandir(path) if e.is_dir()]
    except OSError:
        return []
