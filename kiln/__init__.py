"""kiln: run container apps as immutable infrastructure behind NGINX."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _package_version


def version() -> str:
    """The installed kiln version, or ``0+unknown`` when running from an uninstalled tree."""
    try:
        return _package_version("kiln")
    except PackageNotFoundError:
        return "0+unknown"


__version__ = version()
