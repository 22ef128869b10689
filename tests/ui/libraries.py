"""The dashboard's browser libraries for tests: installed with ``npm ci`` from the committed
lock when a checkout has not run scripts/bootstrap.sh yet (a fresh worktree), as CI's
bootstrap does. A failure fails the tests that need them, with npm's words."""

from __future__ import annotations

import subprocess
from pathlib import Path

import kiln.api.ui.routes as ui_routes

UI_DIR = Path(ui_routes.__file__).parent


def ensure_ui_libraries() -> None:
    if all(path.is_file() for path in ui_routes.STATIC_FILES.values()):
        return
    result = subprocess.run(
        ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=UI_DIR,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    missing = [name for name, path in ui_routes.STATIC_FILES.items() if not path.is_file()]
    if result.returncode != 0 or missing:
        raise RuntimeError(
            f"npm ci in {UI_DIR} failed (exit {result.returncode}), missing {missing}:\n"
            f"{result.stderr[-2000:]}\nrun scripts/bootstrap.sh"
        )
