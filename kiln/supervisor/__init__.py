"""Keeping the kiln server running: pid files, liveness, the supervising process, systemd.

    kiln up ─▶ python -m kiln.supervisor (detached; run/supervisor.pid)
                 └─▶ python -m kiln.api.server (run/kiln.pid, run/api.sock, run/heartbeat)
    kiln up --install-service (systemd is PID 1) ─▶ a unit: systemd restarts and watches instead

| module | what |
|---|---|
| ``pidfile`` | pid files locked by their process for its life: alive ⇔ locked (zombies too) |
| ``liveness`` | the server's heartbeat file and sd_notify (READY=1, WATCHDOG=1) |
| ``parent`` | the supervising process: restart with backoff, SIGKILL a silent server |
| ``control`` | what ``kiln up``/``kiln down`` use: find, spawn and signal those processes |
| ``systemd`` | the unit file (pure ``render_unit``), install, systemctl |
| ``ports`` | who holds a TCP port or a unix socket (clear clash messages) |
| ``exits`` | the exit codes of the server and of the supervisor |

See README.md for the files each process keeps. This package never imports the server (``kiln.api``) or anything below it that runs kiln
(import-linter contract): the supervisor must survive whatever breaks the server.
"""
