"""Pid files that prove their process is alive: the owner holds an ``flock`` on the file for
its whole life.

A pid alone can be stale (the process died) or reused (another process got the number); an
``flock`` cannot: the kernel drops it when its holder exits, also when the holder is killed
with ``-9`` or lingers as an unreaped zombie. So "is kiln running?" is "is its pid file
locked?", and the pid written inside names the holder to signal.

    PidFile(path).acquire()  ─▶ O_CREAT + flock(LOCK_EX) + write our pid   (held → AlreadyHeld)
    holder(path)             ─▶ the pid of the live holder, or None
    PidFile.release()        ─▶ unlink while still holding the lock, then close
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from pathlib import Path

# A reader takes a shared lock for a moment to test the file; an owner starting at that very
# moment retries for this long before it believes someone else holds the file.
_ACQUIRE_RETRY_SECONDS = 0.5
_POLL = 0.01


class AlreadyHeld(Exception):
    """Another live process holds the pid file."""

    def __init__(self, path: Path, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        super().__init__(f"{path} is held by a live process (pid {pid or 'unknown'})")


class PidFile:
    """A pid file owned (locked) by this process until ``release`` or exit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Lock the file and write our pid; ``AlreadyHeld`` if a live process has it."""
        deadline = time.monotonic() + _ACQUIRE_RETRY_SECONDS
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() < deadline:
                    time.sleep(_POLL)
                    continue
                raise AlreadyHeld(self.path, holder(self.path)) from None
            if not _same_file(fd, self.path):
                # The previous owner unlinked the file between our open and our lock: the
                # lock we got is on a file nobody else will ever look at. Start over.
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            os.fchmod(fd, 0o600)
            self._fd = fd
            return

    def release(self) -> None:
        if self._fd is None:
            return
        # Unlinked while the lock is still ours, so no one can lock the dying file in between
        # (see the check in ``acquire``).
        with contextlib.suppress(FileNotFoundError):
            if _same_file(self._fd, self.path):
                self.path.unlink()
        os.close(self._fd)
        self._fd = None


def holder(path: Path) -> int | None:
    """The pid of the live process holding ``path``, else None. 0: held, pid not yet written."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int:
    # The owner writes its pid right after it locks: give it that moment.
    deadline = time.monotonic() + _ACQUIRE_RETRY_SECONDS
    while True:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text.isdigit():
            return int(text)
        if time.monotonic() >= deadline:
            return 0
        time.sleep(_POLL)


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (on_disk.st_dev, on_disk.st_ino)
