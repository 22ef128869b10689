"""Whose a container is, from its labels: the one rule every DockerDriver call goes through."""

from __future__ import annotations

import pytest

from kiln.drivers.docker import DockerDriver, Owner, engine_container_name, owner
from kiln.errors import InvalidInput
from kiln.model import LABEL_INSTALLATION, LABEL_MANAGED

ME = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({LABEL_MANAGED: "true", LABEL_INSTALLATION: ME}, Owner.OURS),
        ({LABEL_MANAGED: "true"}, Owner.LEGACY),
        ({LABEL_MANAGED: "true", LABEL_INSTALLATION: "f" * 32}, Owner.OTHER),
        ({LABEL_MANAGED: "true", LABEL_INSTALLATION: ""}, Owner.OTHER),
        ({LABEL_MANAGED: "true", LABEL_INSTALLATION: ME[:8]}, Owner.OTHER),  # a prefix is not us
        ({LABEL_INSTALLATION: ME}, Owner.OTHER),  # not kiln-managed
        ({}, Owner.OTHER),
        (None, Owner.OTHER),
    ],
)
def test_owner_by_labels(labels: dict[str, str] | None, expected: Owner) -> None:
    assert owner(labels, ME) is expected


def test_engine_names_carry_the_installation() -> None:
    assert engine_container_name(ME, "dev-web-r1-abcdef") == "kiln-01234567-dev-web-r1-abcdef"


@pytest.mark.parametrize("bad", ["", "has space", "-leading", "a/b"])
def test_a_driver_needs_a_usable_installation_id(bad: str) -> None:
    with pytest.raises(InvalidInput, match="installation id"):
        DockerDriver(installation_id=bad, base_url="unix:///nonexistent/docker.sock")
