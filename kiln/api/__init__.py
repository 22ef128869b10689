"""kiln's HTTP API: ``create_app(service, token=...)`` and the server that runs it."""

from kiln.api.app import create_app
from kiln.api.auth import load_or_create_token

__all__ = ["create_app", "load_or_create_token"]
