from __future__ import annotations

import pytest

from tests.ui.libraries import ensure_ui_libraries


@pytest.fixture(scope="session", autouse=True)
def ui_libraries() -> None:
    ensure_ui_libraries()
