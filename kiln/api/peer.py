"""Who is on the other end of a unix-socket connection, as the kernel says (SO_PEERCRED).

A client's ``X-Kiln-Actor`` header is its own claim; the kernel's answer is not. The server
runs uvicorn with ``PeerCredentialsProtocol``, which asks the kernel once per connection and
puts the answer in each request's ASGI scope; ``peer_of(scope)`` reads it back. TCP
connections (and servers started without this protocol) have no peer: None.
"""

from __future__ import annotations

import asyncio
import functools
import pwd
import socket
import struct
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

SCOPE_KEY = "kiln.peer"
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


@dataclass(frozen=True)
class PeerCredentials:
    pid: int
    uid: int
    gid: int

    @property
    def user(self) -> str:
        """The login name of ``uid``, or the number when the system has no name for it."""
        return _user_name(self.uid)


@functools.lru_cache(maxsize=64)
def _user_name(uid: int) -> str:
    # Cached: a lookup may ask NSS (files, LDAP) and requests come from few users.
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def peer_credentials(sock: socket.socket | None) -> PeerCredentials | None:
    """The kernel's record of the process that connected ``sock``; None off a unix socket."""
    if sock is None or sock.family != socket.AF_UNIX or not hasattr(socket, "SO_PEERCRED"):
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except OSError:
        return None
    pid, uid, gid = _UCRED.unpack(raw)
    return PeerCredentials(pid=pid, uid=uid, gid=gid)


def peer_of(scope: Scope) -> PeerCredentials | None:
    peer = scope.get(SCOPE_KEY)
    return peer if isinstance(peer, PeerCredentials) else None


class PeerCredentialsProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol that records the connection's peer in every request's scope.

    Pass it as ``uvicorn.Config(http=PeerCredentialsProtocol)``.
    """

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        peer = peer_credentials(transport.get_extra_info("socket"))
        if peer is not None:
            self.app = _with_peer(self.app, peer)


def _with_peer(app: ASGIApp, peer: PeerCredentials) -> Any:
    async def with_peer(scope: Scope, receive: Receive, send: Send) -> None:
        scope[SCOPE_KEY] = peer
        await app(scope, receive, send)

    return with_peer
