"""The store: desired state (apps, releases, rollouts) and the event log, behind ``Store``."""

from kiln.store.base import Store
from kiln.store.sqlite import SqliteStore

__all__ = ["SqliteStore", "Store"]
