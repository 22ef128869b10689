"""``volumes:`` in kiln.yaml: read-only mounts, and what they allow."""

from __future__ import annotations

import pytest

from kiln.errors import SpecInvalid
from kiln.spec import parse_spec, spec_hash

BASE = "app: web\nimage: nginx:1.27\nport: 80\n"


def problems(text: str) -> list[str]:
    with pytest.raises(SpecInvalid) as caught:
        parse_spec(text)
    return caught.value.problems


def test_a_volume_is_writable_unless_it_says_read_only() -> None:
    spec = parse_spec(
        BASE + "volumes:\n  - {name: data, path: /data}\n"
        "  - {name: assets, path: /srv/assets, read_only: true}\n"
    )
    assert [(v.name, v.read_only) for v in spec.volumes] == [("data", False), ("assets", True)]


@pytest.mark.parametrize("given", ["yes", "'true'", "1", "ro"])
def test_read_only_must_be_true_or_false(given: str) -> None:
    found = problems(BASE + f"volumes:\n  - {{name: assets, path: /a, read_only: {given}}}\n")
    assert len(found) == 1
    assert found[0].startswith("volumes.0.read_only: ") and "bool" in found[0]


def test_a_read_only_volume_has_no_writer_so_instances_and_canary_may_share_it() -> None:
    spec = parse_spec(
        BASE + "instances: 3\ndeploy: {strategy: canary}\n"
        "volumes:\n  - {name: assets, path: /srv/assets, read_only: true}\n"
    )
    assert spec.instances == 3 and not spec.single_writer()


def test_a_writable_unshared_volume_still_has_one_writer() -> None:
    found = problems(BASE + "instances: 3\nvolumes:\n  - {name: data, path: /data}\n")
    assert any("data is not shared, so it has one writer" in p for p in found)


def test_pre_snapshot_on_a_read_only_volume_is_refused_with_why() -> None:
    found = problems(
        BASE + "volumes:\n  - {name: assets, path: /a, read_only: true, pre_snapshot: [sync]}\n"
    )
    assert found == [
        "volumes.0.pre_snapshot: assets is read_only, so the app writes nothing there to"
        " checkpoint: drop pre_snapshot (a snapshot copies it while the app runs)"
    ]


def test_read_only_false_keeps_the_hash_of_a_release_made_before_it_existed() -> None:
    before = parse_spec(BASE + "volumes:\n  - {name: data, path: /data}\n")
    explicit = parse_spec(BASE + "volumes:\n  - {name: data, path: /data, read_only: false}\n")
    read_only = parse_spec(BASE + "volumes:\n  - {name: data, path: /data, read_only: true}\n")
    # The hash this spec had before read_only existed: its releases must not look changed.
    made_before = "sha256:9eaba4da9312693d9bca84fe21a2db04ad7b1bbbc1f26621a396837cf013d723"
    assert spec_hash(before) == spec_hash(explicit) == made_before
    assert spec_hash(read_only) != spec_hash(before)
