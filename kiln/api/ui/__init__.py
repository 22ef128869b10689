"""The dashboard: a web UI at ``/ui`` over the same ``Service`` as the API (see README.md)."""

from kiln.api.ui.routes import access_authenticator, create_ui_app

__all__ = ["access_authenticator", "create_ui_app"]
