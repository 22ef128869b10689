"""kiln: run container apps as immutable infrastructure behind NGINX."""

from __future__ import annotations

from typing import Any


def version() -> str:
    """The installed kiln version, or ``0+unknown`` when running from an uninstalled tree."""
    # Imported here: importlib.metadata costs ~20 ms, and most commands never ask for the
    # version (kiln/cli/README.md, "Start-up").
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("kiln")
    except PackageNotFoundError:
        return "0+unknown"


def __getattr__(name: str) -> Any:
    # ``kiln.__version__`` is looked up on first use (PEP 562), then kept as a plain attribute.
    if name == "__version__":
        value = globals()["__version__"] = version()
        return value
    raise AttributeError(f"module 'kiln' has no attribute {name!r}")
