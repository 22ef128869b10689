"""Pure builders of what an instance is: its id, container name, labels and run settings."""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from datetime import datetime

from kiln.model import (
    LABEL_APP,
    LABEL_ENV,
    LABEL_INSTANCE,
    LABEL_MANAGED,
    LABEL_RELEASE,
    AppKey,
    InstanceSpec,
    Release,
    SecretRef,
    VolumeMount,
)
from kiln.spec import Network


def new_instance_id(
    key: AppKey, release: int, *, now: datetime, taken: Collection[str], salt: int = 0
) -> str:
    """A short id, unique among ``taken``: ``r<release>-<6 hex>``. Deterministic in its inputs."""
    attempt = salt
    while True:
        seed = f"{key}|{release}|{now.isoformat()}|{attempt}".encode()
        candidate = f"r{release}-{hashlib.sha256(seed).hexdigest()[:6]}"
        if candidate not in taken:
            return candidate
        attempt += 1


def container_name(key: AppKey, instance_id: str) -> str:
    """The instance's name within its installation. The driver puts ``kiln-<installation>-`` in
    front on the engine, so two installations deploying the same app never clash."""
    return f"{key.environment}-{key.app}-{instance_id}"


def instance_spec(release: Release, instance_id: str) -> InstanceSpec:
    """Everything the driver needs to run one instance of ``release``."""
    spec = release.spec
    key = release.key
    env = dict(spec.env)
    env.update(
        {
            "KILN_APP": key.app,
            "KILN_ENVIRONMENT": key.environment,
            "KILN_RELEASE": str(release.number),
            "KILN_INSTANCE": instance_id,
        }
    )
    return InstanceSpec(
        id=instance_id,
        key=key,
        release=release.number,
        name=container_name(key, instance_id),
        image=release.digest,
        command=tuple(spec.command) if spec.command else None,
        env=env,
        port=spec.port,
        labels={
            LABEL_MANAGED: "true",
            LABEL_ENV: key.environment,
            LABEL_APP: key.app,
            LABEL_RELEASE: str(release.number),
            LABEL_INSTANCE: instance_id,
        },
        cpus=spec.resources.cpus,
        memory_bytes=spec.resources.memory,
        pids_limit=spec.resources.pids,
        user=spec.user,
        read_only=spec.security.read_only,
        tmpfs=tuple(spec.security.tmpfs),
        cap_add=tuple(spec.security.cap_add),
        stop_grace=spec.stop_grace,
        host_network=spec.network is Network.HOST,
        # Names and versions only: the value reaches the driver, never a plan.
        secrets=tuple(
            SecretRef(use.name, release.secret_versions.get(use.name, 0), use.delivery == "env")
            for use in spec.secrets
        ),
        volumes=tuple(VolumeMount(v.name, v.path, v.read_only) for v in spec.volumes),
    )
