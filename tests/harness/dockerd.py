"""A private Docker daemon for tests and benchmarks, on its own Linux bridge.

Never the default socket: each ``PrivateDockerd`` runs its own ``dockerd`` (with its own managed
containerd) under a private directory, on a bridge it creates itself, so ``docker0`` and the host's
iptables are never touched::

    D/docker.sock   the API socket (``docker_host`` is ``unix://D/docker.sock``)
    D/data          --data-root (images, containers)
    D/exec          --exec-root (containerd state, netns mounts)
    D/docker.pid    --pidfile
    D/dockerd.log   the daemon's output

Networking: ``--bridge=<ours> --iptables=false --ip-masq=false --ip-forward=false``. Ports
published on 127.0.0.1 work through docker-proxy (the userland proxy), which dials the container
on our bridge; no NAT rule is needed, and containers cannot reach beyond the host.

Names are unique per process (``kb<pid>x<n>``; the subnet is a free 10.213.X.0/24 chosen under a
lock file), so two test runs can coexist. ``close()`` removes every container, stops the daemon by
pid (TERM, then KILL), deletes the bridge, unmounts leftovers and removes the directory.

Standalone, for benchmarks: ``python -m tests.harness.dockerd --dir DIR`` prints the
``DOCKER_HOST`` and runs until SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import http.client
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

MARKER = ".kiln-private-dockerd"  # a directory without it is never deleted
_LOCK_PATH = Path(tempfile.gettempdir()) / "kiln-dockerd-bridges.lock"
_SUBNET_POOL = ipaddress.IPv4Network("10.213.0.0/16")
_counter_lock = threading.Lock()
_counter = 0


class DockerdError(RuntimeError):
    """The private daemon could not be started or stopped; the message says why."""


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _api(socket_path: Path, method: str, url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = _UnixHTTPConnection(str(socket_path), timeout)
    try:
        conn.request(method, url)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _next_name() -> str:
    global _counter
    with _counter_lock:
        _counter += 1
        return f"kb{os.getpid()}x{_counter}"  # at most 15 characters, the kernel's limit


def _used_networks() -> list[ipaddress.IPv4Network]:
    out = subprocess.run(
        ["ip", "-4", "-o", "route", "show", "table", "all"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    out += subprocess.run(
        ["ip", "-4", "-o", "addr", "show"], check=True, capture_output=True, text=True
    ).stdout
    used = []
    for word in out.split():
        with contextlib.suppress(ValueError):
            if "/" in word:
                network = ipaddress.ip_network(word, strict=False)
                if isinstance(network, ipaddress.IPv4Network):
                    used.append(network)
    return used


def _run(*argv: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise DockerdError(f"{' '.join(argv)} failed: {result.stderr.strip()}")


def bridge_mac(gateway: ipaddress.IPv4Interface) -> str:
    """A locally administered unicast MAC for the bridge, from its gateway address."""
    return "02:6b:" + ":".join(f"{octet:02x}" for octet in gateway.ip.packed)


def create_bridge(name: str, prefix: int = 24) -> ipaddress.IPv4Interface:
    """Create bridge ``name`` with the gateway address of a free 10.213.X.0/``prefix`` (a /24
    holds 253 containers; a benchmark with more asks for a shorter prefix)."""
    _LOCK_PATH.touch(exist_ok=True)
    with _LOCK_PATH.open("r+") as lock:
        # Two runs choosing at the same time would otherwise pick the same free subnet.
        fcntl.flock(lock, fcntl.LOCK_EX)
        used = _used_networks()
        subnets = list(_SUBNET_POOL.subnets(new_prefix=prefix))[1:-1]
        start = os.getpid() % len(subnets)
        for offset in range(len(subnets)):
            subnet = subnets[(start + offset) % len(subnets)]
            if any(subnet.overlaps(u) for u in used if u.prefixlen > 0):
                continue
            gateway = ipaddress.IPv4Interface(f"{subnet.network_address + 1}/{prefix}")
            # An address of its own: a bridge without one takes the lowest MAC of its ports,
            # which changes whenever a container starts or stops; containers then send their
            # replies to the host's old address and connections stall for seconds (what
            # dockerd does for the bridges it creates itself).
            _run("ip", "link", "add", name, "address", bridge_mac(gateway), "type", "bridge")
            try:
                _run("ip", "addr", "add", str(gateway), "dev", name)
                _run("ip", "link", "set", name, "up")
            except DockerdError:
                delete_bridge(name)
                raise
            return gateway
    raise DockerdError(f"no free /{prefix} left in {_SUBNET_POOL} for a private Docker bridge")


def delete_bridge(name: str) -> None:
    subprocess.run(["ip", "link", "del", name], capture_output=True)


def _mounts_under(directory: Path) -> list[str]:
    prefix = str(directory.resolve()) + "/"
    found = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            mount_point = line.split()[4].replace("\\040", " ")
            if (mount_point + "/").startswith(prefix):
                found.append(mount_point)
    return found


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_gone(pid: int, deadline: float, proc: subprocess.Popen[bytes] | None) -> bool:
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return True
        if proc is None and not _pid_alive(pid):
            return True
        time.sleep(0.02)
    return False


class PrivateDockerd:
    """One private ``dockerd``; a context manager. ``docker_host`` is what clients use."""

    def __init__(
        self,
        directory: Path | str | None = None,
        *,
        start_timeout: float = 30.0,
        live_restore: bool = False,
        keep_data: bool = False,
        subnet_prefix: int = 24,
        default_runtime: str | None = None,
    ) -> None:
        if directory is None:
            # Short path: a unix socket path must stay under 108 bytes.
            self.dir = Path(tempfile.mkdtemp(prefix=f"kiln-dockerd-{os.getpid()}-", dir="/tmp"))
            (self.dir / MARKER).touch()
        else:
            self.dir = Path(directory).resolve()
            self.dir.mkdir(parents=True, exist_ok=True)
            if not any(self.dir.iterdir()) or (self.dir / MARKER).exists():
                (self.dir / MARKER).touch()
        longest = self.dir / "exec" / "containerd" / "containerd.sock.ttrpc"
        if len(str(longest)) > 100:
            # containerd's sockets live under the exec root; a unix socket path has 108 bytes.
            raise DockerdError(
                f"{self.dir} is too long a path for dockerd's sockets; use a shorter one"
            )
        self.start_timeout = start_timeout
        self.live_restore = live_restore
        self.keep_data = keep_data
        self.subnet_prefix = subnet_prefix
        # An OCI runtime other than runc (e.g. "crun", which must be installed) for every
        # container of this daemon, registered under its name from $PATH.
        self.default_runtime = default_runtime
        self.bridge = _next_name()
        self.gateway: ipaddress.IPv4Interface | None = None
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self.dir / "docker.sock"

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def _argv(self) -> list[str]:
        config = self.dir / "daemon.json"
        # Our own (empty) config file: /etc/docker/daemon.json belongs to the host's daemon.
        config.write_text(json.dumps({}))
        argv = [
            "dockerd",
            "-H", self.docker_host,
            "--data-root", str(self.dir / "data"),
            "--exec-root", str(self.dir / "exec"),
            "--pidfile", str(self.dir / "docker.pid"),
            "--config-file", str(config),
            f"--bridge={self.bridge}",
            "--iptables=false",
            "--ip-masq=false",
            "--ip-forward=false",
            "--ip6tables=false",
        ]  # fmt: skip
        if self.live_restore:
            argv.append("--live-restore")
        if self.default_runtime is not None:
            path = shutil.which(self.default_runtime)
            if path is None:
                raise DockerdError(f"runtime {self.default_runtime!r} is not installed")
            argv += [f"--add-runtime={self.default_runtime}={path}"]
            argv += [f"--default-runtime={self.default_runtime}"]
        return argv

    def start(self) -> PrivateDockerd:
        if shutil.which("dockerd") is None:
            raise DockerdError("dockerd is not installed (apt-get install docker.io)")
        if os.geteuid() != 0:
            raise DockerdError("a private dockerd needs root (it creates a bridge and mounts)")
        began = time.monotonic()
        if self.gateway is None:
            self.gateway = create_bridge(self.bridge, self.subnet_prefix)
        env = dict(os.environ, DOCKER_SERVICE_PREFER_OFFLINE_IMAGE="1")
        env.pop("DOCKER_HOST", None)
        log = (self.dir / "dockerd.log").open("ab")
        try:
            self._proc = subprocess.Popen(
                self._argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # a Ctrl-C of the test run must not kill it mid-cleanup
            )
        finally:
            log.close()
        deadline = began + self.start_timeout
        while True:
            if self._proc.poll() is not None:
                self._proc = None
                raise DockerdError(
                    f"dockerd exited during startup; last lines of {self.dir / 'dockerd.log'}:\n"
                    + self.log_tail()
                )
            with contextlib.suppress(OSError, http.client.HTTPException):
                if _api(self.socket_path, "GET", "/_ping", timeout=1.0)[0] == 200:
                    break
            if time.monotonic() > deadline:
                self._stop_process()
                raise DockerdError(
                    f"dockerd did not answer on {self.docker_host} within {self.start_timeout}s;"
                    f" last lines of its log:\n{self.log_tail()}"
                )
            time.sleep(0.02)
        self.startup_seconds = time.monotonic() - began
        return self

    def log_tail(self, lines: int = 20) -> str:
        path = self.dir / "dockerd.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def remove_all_containers(self) -> None:
        """Force-remove every container (SIGKILL), so stopping the daemon waits for nothing."""
        if self._proc is None:
            return
        with contextlib.suppress(OSError, http.client.HTTPException):
            status, body = _api(self.socket_path, "GET", "/containers/json?all=1", timeout=10)
            if status != 200:
                return
            ids = [c["Id"] for c in json.loads(body)]
            threads = [
                threading.Thread(
                    target=_api,
                    args=(self.socket_path, "DELETE", f"/containers/{cid}?force=1&v=1", 30),
                )
                for cid in ids
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

    def _stop_process(self, grace: float = 20.0) -> None:
        proc = self._proc
        if proc is None:
            return
        containerd_pid = self._containerd_pid()
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        if not _wait_gone(proc.pid, time.monotonic() + grace, proc):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(10)
        # dockerd stops its managed containerd on a clean exit; after a KILL it would be orphaned.
        if containerd_pid is not None and not _wait_gone(
            containerd_pid, time.monotonic() + 5, None
        ):
            with contextlib.suppress(ProcessLookupError):
                os.kill(containerd_pid, signal.SIGKILL)
        self._proc = None

    def _containerd_pid(self) -> int | None:
        path = self.dir / "exec" / "containerd" / "containerd.pid"
        with contextlib.suppress(OSError, ValueError):
            return int(path.read_text().strip())
        return None

    def stop(self) -> None:
        """Stop the daemon (its data stays). Running containers are stopped by dockerd itself."""
        self._stop_process()

    def restart(self) -> None:
        """Stop and start the same daemon on the same data: the "engine restarted" scenario."""
        self._stop_process()
        self.start()

    def close(self) -> None:
        """Remove every container, stop the daemon, delete the bridge and the directory."""
        try:
            self.remove_all_containers()
            self._stop_process()
        finally:
            delete_bridge(self.bridge)
            self.gateway = None
            for mount_point in reversed(_mounts_under(self.dir)):
                subprocess.run(["umount", "-l", mount_point], capture_output=True)
            if not self.keep_data and (self.dir / MARKER).exists() and not _mounts_under(self.dir):
                shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PrivateDockerd:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", help="directory for the daemon (default: a new one under /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the directory (images) on exit")
    parser.add_argument("--live-restore", action="store_true")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with PrivateDockerd(args.dir, live_restore=args.live_restore, keep_data=args.keep) as daemon:
        print(f"DOCKER_HOST={daemon.docker_host}", flush=True)
        print(
            f"# pid {daemon.pid}, bridge {daemon.bridge} ({daemon.gateway}),"
            f" up in {daemon.startup_seconds:.2f}s; SIGTERM or Ctrl-C to stop",
            file=sys.stderr,
            flush=True,
        )
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
