"""kiln's settings: one typed, frozen object, read from ``KILN_*`` environment variables.

Every setting has a documented default so that ``kiln up`` works with no configuration on one
machine. ``Settings.from_env()`` is the only place that reads the environment: a pydantic model
whose fields are named after the variables parses and checks them, so a bad value is refused with
the variable's name and what it must be (every bad one at once), and nothing starts.

| variable                  | default                                  | what it is                                  |
|---------------------------|------------------------------------------|---------------------------------------------|
| ``KILN_HOME``             | ``~/.local/share/kiln``                  | state: SQLite store, token, NGINX prefix    |
| ``KILN_API_SOCKET``       | ``$KILN_HOME/run/api.sock``              | the kiln API's unix socket (0600), default  |
| ``KILN_API_TCP``          | ``0``                                    | ``1``: also serve the API on TCP (opt-in)   |
| ``KILN_API_HOST``         | ``127.0.0.1``                            | where the opt-in TCP API listens            |
| ``KILN_API_PORT``         | ``7070``                                 |                                             |
| ``KILN_API_URL``          | unset                                    | the CLI talks to this TCP URL instead of    |
|                           |                                          | the socket (e.g. ``http://127.0.0.1:7070``) |
| ``KILN_CA``               | unset                                    | the CLI trusts this CA file (PEM) for an    |
|                           |                                          | https API (private CA, self-signed cert)    |
| ``KILN_HTTP_HOST``        | ``127.0.0.1``                            | where NGINX listens for app traffic         |
| ``KILN_HTTP_PORT``        | ``8080``                                 |                                             |
| ``KILN_NGINX``            | ``nginx``                                | the NGINX binary                            |
| ``KILN_RESYNC_SECONDS``   | ``10``                                   | level-based resync period of every app loop |
|                           |                                          | (a net under the engine's events, which     |
|                           |                                          | wake an app's loop at once)                 |
| ``KILN_EVENT_LOOP``       | ``uvloop``                               | the server's event loop: ``uvloop``, or     |
|                           |                                          | ``asyncio`` (the standard library's)        |
| ``KILN_WATCHDOG_SECONDS`` | ``10``                                   | a server silent this long is restarted      |
| ``KILN_BRIDGE_PATH``      | ``auto``                                 | how NGINX reaches bridge instances: at the  |
|                           |                                          | container's address (``direct``), through a |
|                           |                                          | published loopback port (``published``), or |
|                           |                                          | direct when this host routes to the bridge  |
| ``KILN_SETTINGS``         | ``$KILN_HOME/settings.yaml``             | the settings file (``kiln.config.file``)    |
| ``DOCKER_HOST``           | ``$KILN_HOME/docker-host``, else the SDK's default | which Docker engine the driver uses |
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import stat
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, overload

from platformdirs import user_data_dir
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from kiln.errors import InvalidInput

if TYPE_CHECKING:
    from kiln.config.file import FileSettings

MIN_WATCHDOG_SECONDS = 3.0
SETTINGS_FILE_NAME = "settings.yaml"


def _remembered_docker_host(home: Path) -> str | None:
    """The engine a kiln-started Docker daemon listens on (written by scripts/demo.sh), so that
    `kiln up` from any shell finds the same engine without DOCKER_HOST."""
    try:
        return (home / "docker-host").read_text().strip() or None
    except OSError:
        return None


_INSTALLATION_ID = re.compile(r"[0-9a-f]{32}")


def _http_url(text: str) -> str:
    url = text.strip().rstrip("/")
    if not re.fullmatch(r"https?://[^/?#\s]+", url):
        raise ValueError("no scheme, host and port")
    return url


def _default_home() -> Path:
    return Path(user_data_dir("kiln", appauthor=False))


# How each variable is read: pydantic parses and checks it, and ``description`` is what an
# error says the variable must be. The aliases are the variables' names, so the validation
# error's location *is* the variable to fix. (pydantic-settings would only add reading
# ``os.environ`` under a prefix, at ~20 ms more start-up for every CLI command: asyncio,
# argparse and python-dotenv come with it; measured for issue 10.)
_ExpandedPath = Annotated[Path, AfterValidator(lambda path: path.expanduser())]
_Lowercase = BeforeValidator(lambda text: text.strip().lower() if isinstance(text, str) else text)
_Port = Annotated[int, Field(ge=0, le=65535, description="a TCP port number (0-65535)")]


class _Environment(BaseModel):
    """The ``KILN_*`` variables (and ``DOCKER_HOST``); a variable that is unset or empty is
    its default."""

    model_config = ConfigDict(frozen=True, extra="ignore", validate_by_alias=True)

    home: _ExpandedPath | None = Field(None, alias="KILN_HOME", description="a directory")
    api_socket: _ExpandedPath | None = Field(
        None, alias="KILN_API_SOCKET", description="a file path"
    )
    api_tcp: Annotated[bool, _Lowercase] = Field(False, alias="KILN_API_TCP", description="1 or 0")
    api_host: str = Field("127.0.0.1", alias="KILN_API_HOST")
    api_port: _Port = Field(7070, alias="KILN_API_PORT")
    api_url: Annotated[str, AfterValidator(_http_url)] | None = Field(
        None,
        alias="KILN_API_URL",
        description="like http://127.0.0.1:7070 (scheme, host, port; no path)",
    )
    ca: _ExpandedPath | None = Field(None, alias="KILN_CA", description="a PEM file's path")
    http_host: str = Field("127.0.0.1", alias="KILN_HTTP_HOST")
    http_port: _Port = Field(8080, alias="KILN_HTTP_PORT")
    nginx: str = Field("nginx", alias="KILN_NGINX")
    resync_seconds: float = Field(
        10.0,
        alias="KILN_RESYNC_SECONDS",
        gt=0,
        allow_inf_nan=False,
        description="a number of seconds above 0",
    )
    event_loop: Annotated[Literal["uvloop", "asyncio"], _Lowercase] = Field(
        "uvloop", alias="KILN_EVENT_LOOP", description="uvloop or asyncio"
    )
    watchdog_seconds: float = Field(
        10.0,
        alias="KILN_WATCHDOG_SECONDS",
        ge=MIN_WATCHDOG_SECONDS,
        allow_inf_nan=False,
        description=(
            f"a number of seconds, at least {MIN_WATCHDOG_SECONDS:g} "
            "(the server shows it is alive once a second)"
        ),
    )
    bridge_path: Annotated[Literal["auto", "direct", "published"], _Lowercase] = Field(
        "auto", alias="KILN_BRIDGE_PATH", description="one of auto, direct, published"
    )
    settings: _ExpandedPath | None = Field(None, alias="KILN_SETTINGS", description="a file path")
    docker_host: str | None = Field(None, alias="DOCKER_HOST")

    @classmethod
    def read(cls, environ: Mapping[str, str]) -> _Environment:
        names = {info.alias for info in cls.model_fields.values()}
        given = {name: value for name, value in environ.items() if name in names and value.strip()}
        try:
            return cls.model_validate(given)
        except ValidationError as exc:
            raise InvalidInput("; ".join(cls._problem(error) for error in exc.errors())) from exc

    @classmethod
    def _problem(cls, error: Any) -> str:
        name = str(error["loc"][0])
        allowed = next(
            (
                info.description
                for info in cls.model_fields.values()
                if info.alias == name and info.description
            ),
            None,
        )
        text = str(error["input"])
        what = f"must be {allowed}" if allowed else f"is not valid ({error['msg']})"
        return f"{name} {what}, got {text[:100]!r}"


class _ReadOnFirstUse:
    """``Settings.file`` of ``from_env(file_on_first_use=True)``: the file is read then."""


_READ_ON_FIRST_USE = _ReadOnFirstUse()


class _FileField:
    """``Settings.file``: what was given, else every default; or, from
    ``from_env(file_on_first_use=True)``, the settings file read (and checked) when first
    asked for. The CLI's client asks only on TCP (is the API https?), so a read on the unix
    socket does not import the file's models (~7 ms; kiln/cli/README.md, "Start-up")."""

    @overload
    def __get__(self, settings: None, owner: type[Settings]) -> None: ...
    @overload
    def __get__(self, settings: Settings, owner: type[Settings]) -> FileSettings: ...
    def __get__(self, settings: Settings | None, owner: type[Settings]) -> FileSettings | None:
        if settings is None:
            return None  # the dataclass default: not given
        value = settings.__dict__["_file"]
        if value is None or value is _READ_ON_FIRST_USE:
            from kiln.config.file import FileSettings, load_file_settings

            value = FileSettings() if value is None else load_file_settings(settings.settings_path)
            settings.__dict__["_file"] = value
        return value  # type: ignore[no-any-return]

    def __set__(self, settings: Settings, value: FileSettings | _ReadOnFirstUse | None) -> None:
        settings.__dict__["_file"] = value


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Where kiln keeps its state and where it listens.

    Built from the environment by ``from_env``, or directly (tests, benchmarks): direct
    construction reads nothing and checks nothing.
    """

    home: Path = field(default_factory=_default_home)
    api_socket: Path | None = None  # None: run_dir / "api.sock"
    api_tcp: bool = False
    api_host: str = "127.0.0.1"
    api_port: int = 7070
    client_api_url: str | None = None  # KILN_API_URL: the CLI goes there (TCP), not the socket
    client_ca: Path | None = None  # KILN_CA: the CA file the CLI trusts for an https API
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    nginx_binary: str = "nginx"
    # A net under the engine's events (which wake an app's loop at once): what no event told of
    # (a stream that dropped one, a container without labels' events) is converged this late.
    resync_seconds: float = 10.0
    event_loop: str = "uvloop"  # the server's: uvloop (libuv), or asyncio's own
    watchdog_seconds: float = 10.0
    docker_host: str | None = None
    bridge_path: str = "auto"
    settings_file: Path | None = None  # None: home / "settings.yaml"
    file: _FileField = _FileField()  # the settings file's sections; every default if not given

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, file_on_first_use: bool = False
    ) -> Settings:
        """The settings the environment (``os.environ`` unless given) asks for; a bad value
        raises ``InvalidInput`` naming each variable and what it must be, and so does a bad
        settings file — when ``file`` is first used with ``file_on_first_use`` (the CLI's
        client), else here."""
        env = _Environment.read(os.environ if environ is None else environ)
        home = env.home or _default_home()
        file: FileSettings | _ReadOnFirstUse = _READ_ON_FIRST_USE
        if not file_on_first_use:
            from kiln.config.file import load_file_settings

            file = load_file_settings(env.settings or home / SETTINGS_FILE_NAME)
        return cls(
            home=home,
            api_socket=env.api_socket,
            api_tcp=env.api_tcp,
            api_host=env.api_host,
            api_port=env.api_port,
            client_api_url=env.api_url,
            client_ca=env.ca,
            http_host=env.http_host,
            http_port=env.http_port,
            nginx_binary=env.nginx,
            resync_seconds=env.resync_seconds,
            event_loop=env.event_loop,
            watchdog_seconds=env.watchdog_seconds,
            docker_host=env.docker_host or _remembered_docker_host(home),
            bridge_path=env.bridge_path,
            settings_file=env.settings,
            file=file,
        )

    # Paths under KILN_HOME. One place, so that nothing else builds them by hand.
    @property
    def db_path(self) -> Path:
        return self.home / "kiln.db"

    @property
    def token_path(self) -> Path:
        return self.home / "token"

    @property
    def nginx_dir(self) -> Path:
        return self.home / "nginx"

    @property
    def run_dir(self) -> Path:
        """Private runtime files (pid files, the NGINX admin socket); mode 0700."""
        return self.home / "run"

    @property
    def settings_path(self) -> Path:
        return self.settings_file or self.home / SETTINGS_FILE_NAME

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def api_socket_path(self) -> Path:
        """The API's unix socket: only the owner of ``KILN_HOME`` can reach it."""
        return self.api_socket if self.api_socket is not None else self.run_dir / "api.sock"

    @property
    def installation_id_path(self) -> Path:
        """This installation's identity, created with its home; every object kiln creates on
        an engine carries it, so two kilns on one engine never touch each other's objects."""
        return self.home / "installation-id"

    @property
    def server_pid_path(self) -> Path:
        """The server's pid, locked by it while it lives (``kiln.supervisor.pidfile``)."""
        return self.run_dir / "kiln.pid"

    @property
    def supervisor_pid_path(self) -> Path:
        """The supervising process's pid, locked by it while it lives."""
        return self.run_dir / "supervisor.pid"

    @property
    def heartbeat_path(self) -> Path:
        """Rewritten every second by the server's event loop; silence means a hang."""
        return self.run_dir / "heartbeat"

    @property
    def server_log_path(self) -> Path:
        return self.log_dir / "server.log"

    @property
    def supervisor_log_path(self) -> Path:
        return self.log_dir / "supervisor.log"

    def environment(self) -> dict[str, str]:
        """The variables ``from_env`` turns back into these settings (for a service unit)."""
        env = {
            "KILN_HOME": str(self.home.absolute()),
            "KILN_API_TCP": "1" if self.api_tcp else "0",
            "KILN_API_HOST": self.api_host,
            "KILN_API_PORT": str(self.api_port),
            "KILN_HTTP_HOST": self.http_host,
            "KILN_HTTP_PORT": str(self.http_port),
            "KILN_NGINX": self.nginx_binary,
            "KILN_RESYNC_SECONDS": f"{self.resync_seconds:g}",
            "KILN_EVENT_LOOP": self.event_loop,
            "KILN_WATCHDOG_SECONDS": f"{self.watchdog_seconds:g}",
            "KILN_BRIDGE_PATH": self.bridge_path,
        }
        if self.api_socket is not None:
            env["KILN_API_SOCKET"] = str(self.api_socket.absolute())
        if self.docker_host is not None:
            env["DOCKER_HOST"] = self.docker_host
        if self.settings_file is not None:
            env["KILN_SETTINGS"] = str(self.settings_file.absolute())
        return env

    @property
    def api_url(self) -> str:
        """The opt-in TCP listener's URL: https when the settings file names a certificate."""
        scheme = "https" if self.file.api.tls is not None else "http"
        return f"{scheme}://{self.api_host}:{self.api_port}"


# --- files under KILN_HOME that only their owner may read ---------------------------------


def read_or_create_installation_id(settings: Settings) -> str:
    """This installation's identity: a random id (uuid4 hex) stored in its home (0600).

    Every container, network and volume kiln creates carries it as a label, and kiln adopts,
    watches and removes only objects with its own id; the API's identity answer names it.
    Whoever needs it first (the server, the CLI) creates it: mode 0600 from the start, and
    published with ``link()`` so two processes racing to create it end up with the same id
    (and nobody reads a half-written file).
    """
    path = settings.installation_id_path
    with contextlib.suppress(FileNotFoundError):
        return _installation_id_in(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(uuid.uuid4().hex + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        # link() fails if another process created the file meanwhile: theirs wins.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return _installation_id_in(path)


def _installation_id_in(path: Path) -> str:
    text = path.read_text(encoding="utf-8").strip()
    if not _INSTALLATION_ID.fullmatch(text):
        raise InvalidInput(
            f"{path} does not hold a kiln installation id (32 hex digits); "
            "restore it from a backup, or delete it only if this kiln has created nothing yet"
        )
    return text


IDENTIFY_CONTEXT = b"kiln-identify-v2:"

# A token is 256 random bits, so a plain SHA-256 (no slow KDF) keeps a stolen store from
# yielding tokens. Two different derivations: the id a client may show a server it has not
# identified yet, and the hash the server stores, checks bearer tokens against and keys its
# identity proof with. Knowing the id gives nothing towards the hash.
_TOKEN_ID_CONTEXT = b"kiln-token-id-v1:"
_TOKEN_HASH_CONTEXT = b"kiln-token-v1:"


def token_id(token: str) -> str:
    """What a client shows ``/v1/identify`` so the server knows which token to prove."""
    return hashlib.sha256(_TOKEN_ID_CONTEXT + token.encode("utf-8")).hexdigest()[:32]


def token_hash(token: str) -> str:
    """What the server stores instead of the token."""
    return hashlib.sha256(_TOKEN_HASH_CONTEXT + token.encode("utf-8")).hexdigest()


def identity_proof(token: str, nonce: str) -> str:
    """What a kiln server answers to prove it knows ``token`` without revealing it: hex
    HMAC-SHA256 keyed with ``token_hash(token)`` over ``kiln-identify-v2:`` + the client's
    fresh nonce. The server stores only the hash, so the hash is the key
    (``identity_proof_from_hash``).

    The client computes the same with its own token and compares before it sends the token
    anywhere (``POST /v1/identify``). The prefix keeps these MACs from meaning anything else.
    """
    return identity_proof_from_hash(token_hash(token), nonce)


def identity_proof_from_hash(stored_hash: str, nonce: str) -> str:
    mac = hmac.new(
        stored_hash.encode("ascii"), IDENTIFY_CONTEXT + nonce.encode("ascii"), hashlib.sha256
    )
    return mac.hexdigest()


def refuse_unless_private(path: Path) -> None:
    """Raise ``InvalidInput`` when other users may read or write ``path`` (a token, say).

    A secret that others could already read is no secret: kiln refuses it rather than use it,
    and says how to fix the mode. A missing file is not this function's business.
    """
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if mode & 0o077:
        raise InvalidInput(
            f"{path} is open to other users (mode {mode:04o}); kiln refuses to use it. "
            f"Run `chmod 600 {path}` and try again."
        )


def make_state_private(settings: Settings) -> None:
    """Mode 0600 for the store (``kiln.db``, its ``-wal`` and ``-shm``) and kiln's logs.

    The server calls this before it opens the store: an absent ``kiln.db`` is created empty
    with mode 0600 (a valid empty SQLite database), and SQLite gives the WAL and SHM files the
    database's own mode; files left by an older kiln are narrowed to 0600.
    """
    settings.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    db = settings.db_path
    with contextlib.suppress(FileExistsError):
        os.close(os.open(db, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    logs = sorted(settings.log_dir.iterdir()) if settings.log_dir.is_dir() else []
    if settings.log_dir.is_dir():
        os.chmod(settings.log_dir, 0o700)
    for path in [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"), *logs]:
        with contextlib.suppress(FileNotFoundError):
            if path.is_file() and stat.S_IMODE(path.stat().st_mode) & 0o077:
                os.chmod(path, 0o600)
