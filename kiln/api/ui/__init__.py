"""The dashboard: a web UI at ``/ui`` over the same ``Service`` as the API (see README.md)."""

from kiln.api.ui.routes import create_ui_app, token_authenticator

__all__ = ["create_ui_app", "token_authenticator"]
