"""Logs kept past an instance's life (``LogArchive``) and NGINX's log files (rotation, an
app's access lines)."""

from kiln.logs.archive import ArchivedLine, LogArchive, LogQuery, SegmentWriter
from kiln.logs.router_logs import access_history, follow_access, rotate, rotated

__all__ = [
    "ArchivedLine",
    "LogArchive",
    "LogQuery",
    "SegmentWriter",
    "access_history",
    "follow_access",
    "rotate",
    "rotated",
]
