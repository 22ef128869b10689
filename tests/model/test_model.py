"""The vocabulary's own rules: releases pin digests and never change, keys parse both ways."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from kiln.model import AppKey, Release, RolloutState
from kiln.spec import parse_spec, spec_hash

NOW = datetime(2025, 1, 1, tzinfo=UTC)
SPEC = parse_spec("app: web\nimage: nginx:1.27\nport: 80\n")
DIGEST = "sha256:" + "ab" * 32


def _release(**fields: object) -> Release:
    values: dict[str, object] = {
        "key": AppKey("dev", "web"),
        "number": 1,
        "image": "nginx:1.27",
        "digest": DIGEST,
        "spec": SPEC,
        "spec_hash": spec_hash(SPEC),
        "created_at": NOW,
        "created_by": "ana",
        "message": "first",
        **fields,
    }
    return Release(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("digest", [DIGEST, f"registry.local/web@{DIGEST}"])
def test_release_accepts_an_image_pinned_by_digest(digest: str) -> None:
    assert _release(digest=digest).digest == digest


@pytest.mark.parametrize("digest", ["nginx:1.27", "nginx:latest", ""])
def test_release_refuses_an_image_tag(digest: str) -> None:
    with pytest.raises(ValueError, match="pins its image by digest"):
        _release(digest=digest)


def test_release_numbers_start_at_one() -> None:
    with pytest.raises(ValueError, match="start at 1, got 0"):
        _release(number=0)


def test_release_and_its_spec_cannot_be_changed() -> None:
    release = _release()

    with pytest.raises(dataclasses.FrozenInstanceError):
        release.digest = "sha256:" + "00" * 32  # type: ignore[misc]
    with pytest.raises(ValueError, match="frozen"):
        release.spec.instances = 5


def test_app_key_prints_and_parses_as_env_slash_app() -> None:
    key = AppKey.parse("staging/web")

    assert key == AppKey("staging", "web")
    assert str(key) == "staging/web"
    assert sorted([AppKey("b", "a"), AppKey("a", "z")]) == [AppKey("a", "z"), AppKey("b", "a")]


@pytest.mark.parametrize("text", ["web", "staging/", ""])
def test_app_key_without_both_parts_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="ENV/APP"):
        AppKey.parse(text)


def test_only_in_progress_rollouts_are_unfinished() -> None:
    assert [s for s in RolloutState if not s.finished] == [RolloutState.IN_PROGRESS]
