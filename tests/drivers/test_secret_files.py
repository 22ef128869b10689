"""SecretFiles' sweep after a crash: the directories of containers that are gone leave memory;
those of containers that exist, or are being created right now, stay."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiln.drivers.secret_files import SecretFiles

SHM = Path("/dev/shm")


@pytest.fixture
def files() -> Iterator[SecretFiles]:
    if not SHM.is_dir():
        pytest.fail("these tests need /dev/shm (a tmpfs), as kiln's secret files do")
    root = SHM / f"kiln-test-{uuid.uuid4().hex}"
    try:
        yield SecretFiles(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def started(files: SecretFiles, name: str) -> Path:
    """What the driver does for a container with file secrets: write, create, hand over."""
    directory = files.write(name, {"DB_PASSWORD": b"hunter2"})
    files.created(name)
    files.hand_over(directory, 0, 0)  # 0500, as for an instance's user
    return directory


def left_by_a_crashed_kiln(files: SecretFiles, name: str) -> Path:
    """A directory from an earlier kiln process: this one never wrote it."""
    directory = files.directory(name)
    directory.mkdir(parents=True, mode=0o500)
    (directory / "DB_PASSWORD").write_bytes(b"hunter2")
    directory.chmod(0o500)
    return directory


def test_directories_of_containers_that_are_gone_are_removed_and_live_ones_stay(
    files: SecretFiles,
) -> None:
    live = started(files, "kiln-abc-web-r1-aaaa")
    removed_by_hand = started(files, "kiln-abc-web-r1-bbbb")
    stale = left_by_a_crashed_kiln(files, "kiln-abc-web-r1-cccc")
    since = files.mark()
    assert sorted(files.sweep({"kiln-abc-web-r1-aaaa", "kiln-other"}, since=since)) == [
        "kiln-abc-web-r1-bbbb",
        "kiln-abc-web-r1-cccc",
    ]
    assert live.is_dir() and (live / "DB_PASSWORD").read_bytes() == b"hunter2"
    assert not removed_by_hand.exists() and not stale.exists()


def test_a_directory_written_for_a_container_not_created_yet_stays(files: SecretFiles) -> None:
    since = files.mark()
    directory = files.write("kiln-abc-web-r2-dddd", {"S": b"v"})  # create_container not back yet
    assert files.sweep(set(), since=since) == []
    assert directory.is_dir()
    # Its container exists and is gone again: the next listing sweeps it.
    files.created("kiln-abc-web-r2-dddd")
    assert files.sweep(set(), since=files.mark()) == ["kiln-abc-web-r2-dddd"]
    assert not directory.exists()


def test_a_container_created_while_the_listing_ran_keeps_its_directory(
    files: SecretFiles,
) -> None:
    since = files.mark()  # the listing begins ...
    directory = started(files, "kiln-abc-web-r3-eeee")  # ... the container is created ...
    assert files.sweep(set(), since=since) == []  # ... the listing missed it: kept
    assert directory.is_dir()
    assert files.sweep({"kiln-abc-web-r3-eeee"}, since=files.mark()) == []
    assert directory.is_dir()


def test_a_failed_start_leaves_nothing_to_keep(files: SecretFiles) -> None:
    directory = files.write("kiln-abc-web-r4-ffff", {"S": b"v"})
    files.remove("kiln-abc-web-r4-ffff")  # create_container failed
    assert not directory.exists()
    left_by_a_crashed_kiln(files, "kiln-abc-web-r4-ffff")
    assert files.sweep(set(), since=files.mark()) == ["kiln-abc-web-r4-ffff"]


def test_a_sweep_without_any_secret_directory_does_nothing(files: SecretFiles) -> None:
    assert not files.root.exists()
    assert files.sweep(set(), since=files.mark()) == []
    files.root.mkdir(mode=0o700)
    (files.root / "not-a-directory").write_bytes(b"")
    assert files.sweep(set(), since=files.mark()) == []
    assert (files.root / "not-a-directory").exists()
