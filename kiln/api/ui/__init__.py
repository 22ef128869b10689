"""The dashboard: a web UI at ``/ui`` over the same ``Service`` as the API (see README.md)."""

from kiln.api.ui.routes import token_authenticator, ui_router

__all__ = ["token_authenticator", "ui_router"]
