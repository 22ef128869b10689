"""httpx, imported without its command line.

httpx's package ``__init__`` imports ``httpx._main`` (the ``httpx`` command), which loads click,
Rich and Pygments (~35 ms) whenever they are installed — and typer brings all three. kiln never
runs that command, and ``kiln status --json`` needs none of them (kiln/cli/README.md,
"Start-up"). A ``None`` entry in ``sys.modules`` makes that one import fail with ImportError,
which httpx handles (it then defines a stub ``main``); the entry is removed right after, so a
later ``import httpx._main`` works as usual.
"""

from __future__ import annotations

import sys

if "httpx" not in sys.modules and "httpx._main" not in sys.modules:
    sys.modules["httpx._main"] = None  # type: ignore[assignment]
    try:
        import httpx
    finally:
        del sys.modules["httpx._main"]
else:
    import httpx

__all__ = ["httpx"]
