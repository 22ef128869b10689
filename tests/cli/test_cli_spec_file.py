"""`kiln deploy -f FILE` refuses a file the server could never take, before sending it."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiln.spec import MAX_SPEC_BYTES

from .conftest import Kiln


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"app: web\nimage: caf\xe9\n", "is not UTF-8 text (line 2, column 11): save it as UTF-8"),
        (b"# " + b"x" * MAX_SPEC_BYTES, "is larger than 256 KiB, the most a spec may be"),
    ],
)
def test_a_file_the_server_would_refuse_exits_2_with_a_clear_error(
    kiln: Kiln, tmp_path: Path, content: bytes, message: str
) -> None:
    spec = tmp_path / "kiln.yaml"
    spec.write_bytes(content)

    result = kiln.run("deploy", "-f", str(spec))

    assert result.exit_code == 2, result.output
    assert f"{spec} {message}" in result.stderr
    assert "Traceback" not in result.output
    assert kiln.service.apps == {}


def test_a_directory_exits_2(kiln: Kiln, tmp_path: Path) -> None:
    result = kiln.run("deploy", "-f", str(tmp_path))

    assert result.exit_code == 2, result.output
    assert f"{tmp_path} is a directory: give the spec file with -f PATH" in result.stderr


def test_a_missing_file_exits_2(kiln: Kiln, tmp_path: Path) -> None:
    result = kiln.run("deploy", "-f", str(tmp_path / "nope.yaml"))

    assert result.exit_code == 2, result.output
    assert "nope.yaml not found: give the app's spec with -f PATH" in result.stderr


def test_a_spec_of_exactly_the_limit_is_sent(kiln: Kiln, tmp_path: Path) -> None:
    head = b"app: web\nimage: example/web:1\nport: 8080\n# "
    spec = tmp_path / "kiln.yaml"
    spec.write_bytes(head + b"x" * (MAX_SPEC_BYTES - len(head) - 1) + b"\n")

    result = kiln.run("deploy", "-f", str(spec), "--no-wait")

    assert result.exit_code == 0, result.output
