"""Exit codes of the server and of the supervisor: how each tells its parent why it ended."""

from __future__ import annotations

from enum import IntEnum


class ServerExit(IntEnum):
    OK = 0  # asked to stop (SIGTERM, SIGINT, POST /v1/shutdown)
    FAILED = 1  # an error; starting again may help
    BAD_CONFIG = 2  # a KILN_* setting is invalid: starting again cannot help
    CONFLICT = 7  # something else holds what kiln needs (API socket or port, NGINX's port,
    #               this home); nothing was started


class SupervisorExit(IntEnum):
    OK = 0  # stopped (SIGTERM, `kiln down`), or the server was asked to stop
    FAILED = 1
    BAD_CONFIG = 2  # the server's first start failed on a setting
    CONFLICT = 7  # the server's first start found a clash; nothing runs
    ALREADY_SUPERVISED = 10  # another supervisor holds this home


# A first start that ends like this is not retried: the user must change something first.
PERMANENT = {
    ServerExit.BAD_CONFIG: SupervisorExit.BAD_CONFIG,
    ServerExit.CONFLICT: SupervisorExit.CONFLICT,
}
