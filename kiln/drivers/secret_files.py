"""Secret files for Docker instances: a directory per instance on a memory file system of the
engine's host, bind-mounted read-only at ``/run/secrets``.

Why this way. Docker 20.10 cannot put files into a container's tmpfs: ``put_archive`` before
start fails (the tmpfs does not exist yet — the path is looked up in the image's layers) and
after start it writes to the root file system (refused when it is read-only, and hidden under
the tmpfs otherwise) — checked against a real engine. Writing to the container's layer would put
plaintext on disk, and an env var or a command would show in ``docker inspect``. So kiln writes
each instance's files into ``/dev/shm/kiln-<installation>/<container name>/`` (tmpfs: memory,
never disk; the directory is refused unless it is on tmpfs or ramfs), mode 0400 and owned by the
instance's user, and mounts that directory read-only at ``/run/secrets``; inside the instance
``/run/secrets`` is a tmpfs. ``docker inspect`` shows the directory's path, never a value. The
directory goes when the instance is removed. This needs the engine on the same host as kiln (a
unix socket); a remote engine is refused for file secrets with a clear error.

After a crash. A kiln killed with -9 removes nothing; if its containers are then removed (by
hand, or by the next kiln's convergence) their directories would stay in memory for good. So
every full listing of the engine sweeps: a directory whose container the listing did not show
goes (``mark`` before the listing, ``sweep`` after). The directory of a container being created
is written *before* the container exists, so a directory stays while it is being written
(``write`` until ``created``) and when its container was created after the listing began: the
listing may have missed it, the next one will not. What is being written is known to this
object only: one ``SecretFiles`` per root, as there is one driver per installation and server.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import shutil
import threading
from collections.abc import Collection, Mapping
from pathlib import Path

from kiln.errors import PermanentFailure

log = logging.getLogger(__name__)

MEMORY_FILE_SYSTEMS = frozenset({"tmpfs", "ramfs"})
MOUNT_POINT = "/run/secrets"


def file_system_of(path: Path) -> str | None:
    """The type of the file system ``path`` is on (longest mount point in /proc/self/mountinfo)."""
    target = str(path.resolve())
    best, kind = "", None
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) < 5 or not right:
            continue
        mount_point = fields[4].replace("\\040", " ")
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, kind = mount_point, right.split()[0]
    return kind


class SecretFiles:
    def __init__(self, root: Path) -> None:
        self.root = root
        # Container starts run in the driver's worker threads, the sweep on the event loop.
        self._lock = threading.Lock()
        self._ticks = itertools.count(1)
        self._writing: set[str] = set()  # written, their container not created yet
        self._created_at: dict[str, int] = {}  # name → the tick its container was created at

    def directory(self, container_name: str) -> Path:
        return self.root / container_name

    def write(self, container_name: str, values: Mapping[str, bytes]) -> Path:
        """The instance's directory with one 0400 file per secret (owned by root until
        ``hand_over``)."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        kind = file_system_of(self.root)
        if kind not in MEMORY_FILE_SYSTEMS:
            raise PermanentFailure(
                f"secret files go to {self.root}, which is on {kind or 'an unknown file system'},"
                " not in memory: kiln never writes a secret to disk. Mount a tmpfs there"
            )
        os.chmod(self.root, 0o700)
        with self._lock:
            self._writing.add(container_name)
        directory = self.directory(container_name)
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(mode=0o700)
        for name, value in values.items():
            fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            try:
                os.write(fd, value)
            finally:
                os.close(fd)
        return directory

    @staticmethod
    def hand_over(directory: Path, uid: int, gid: int) -> None:
        """Give the files to the instance's user: only it (and root) can read them."""
        if os.geteuid() != 0 and uid != os.geteuid():
            raise PermanentFailure(
                f"secret files must belong to the instance's user (uid {uid}), and only root"
                " can give them away: run kiln as root, or the app as kiln's own user"
            )
        for path in directory.iterdir():
            os.chown(path, uid, gid)
        os.chown(directory, uid, gid)
        os.chmod(directory, 0o500)

    def created(self, container_name: str) -> None:
        """The container of a ``write`` exists on the engine: from now on a listing shows it."""
        with self._lock:
            if container_name in self._writing:
                self._writing.discard(container_name)
                self._created_at[container_name] = next(self._ticks)

    def remove(self, container_name: str) -> None:
        with self._lock:
            self._writing.discard(container_name)
            self._created_at.pop(container_name, None)
        self._remove_directory(self.directory(container_name))

    def mark(self) -> int:
        """Take before listing the engine's containers; give to ``sweep`` after."""
        with self._lock:
            return next(self._ticks)

    def sweep(self, existing: Collection[str], *, since: int) -> list[str]:
        """Remove the directories of containers not in ``existing`` (the names a full listing
        that began at ``since``, a ``mark``, found) — but not one being written, nor one whose
        container was created after the mark. Returns the names removed."""
        try:
            entries = [e for e in os.scandir(self.root) if e.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            return []
        except OSError as exc:
            log.warning("cannot look for stale secret directories in %s: %s", self.root, exc)
            return []
        removed = []
        for entry in entries:
            name = entry.name
            # Under the lock: a start that writes this name now waits for the removal, and
            # then writes a directory of its own.
            with self._lock:
                if (
                    name in existing
                    or name in self._writing
                    or self._created_at.get(name, 0) > since
                ):
                    continue
                self._created_at.pop(name, None)
                self._remove_directory(Path(entry.path))
            removed.append(name)
        if removed:
            log.info(
                "removed the secret directories of %d containers that no longer exist: %s",
                len(removed),
                ", ".join(sorted(removed)),
            )
        return removed

    @staticmethod
    def _remove_directory(directory: Path) -> None:
        if directory.exists():
            # Readable by its owner only (0500): make it writable for root's rmtree first.
            with contextlib.suppress(OSError):
                os.chmod(directory, 0o700)
            shutil.rmtree(directory, ignore_errors=True)
