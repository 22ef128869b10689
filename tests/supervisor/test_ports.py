"""Who holds a port: the facts behind "cannot start: pid 12 (nginx) listens on 8080"."""

from __future__ import annotations

import os
import socket

from kiln.supervisor.ports import describe_pids, tcp_listeners, tcp_port_is_free

NO_SUCH_PID = 2**22 + 1  # above Linux's largest pid_max


def test_the_process_listening_on_a_port_is_found_and_named() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert not tcp_port_is_free("127.0.0.1", port)
        assert os.getpid() in tcp_listeners(port)
        said = describe_pids({os.getpid()})
    assert said.startswith(f"pid {os.getpid()} (") and "(?)" not in said


def test_a_connected_socket_is_no_listener() -> None:
    with socket.socket() as listener, socket.socket() as client:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client.connect(listener.getsockname())
        client_port = client.getsockname()[1]
        assert os.getpid() not in tcp_listeners(client_port)


def test_a_process_that_is_gone_is_described_without_a_name() -> None:
    assert describe_pids({NO_SUCH_PID}) == f"pid {NO_SUCH_PID} (?)"
