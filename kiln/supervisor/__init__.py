"""Keeping the kiln server running: pid files, liveness, clash facts.

    kiln up ─▶ python -m kiln.api.server (run/kiln.pid, run/api.sock, run/heartbeat)

| module | what |
|---|---|
| ``pidfile`` | pid files locked by their process for its life: alive ⇔ locked (zombies too) |
| ``liveness`` | the server's heartbeat file and sd_notify (READY=1, WATCHDOG=1) |
| ``control`` | what ``kiln up``/``kiln down`` use: find, spawn and signal those processes |
| ``ports`` | who holds a TCP port or a unix socket (clear clash messages) |
| ``exits`` | the exit codes of the server and of the supervisor |

This package never imports the server (``kiln.api``) or anything below it that runs kiln
(import-linter contract): the supervisor must survive whatever breaks the server.
"""
