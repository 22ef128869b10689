"""Per-environment overrides: the spec as one environment runs it.

```
kiln.yaml (base + environments: {production: {...}})
    │ for_environment(spec, "production")
    ▼
effective spec: environment = production, the override applied, no environments block
```

Which fields an environment may change is ``model.OVERRIDABLE``; ``instances`` and ``routes``
replace the base's, ``env`` and ``resources`` are merged by key (an env value of ``null``
removes the variable), ``deploy`` replaces the whole deploy section. The image, the command,
the health checks and everything else are the same in every environment by construction.
Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

from kiln.spec.model import AppSpec


def merged_for(spec: AppSpec, environment: str) -> dict[str, Any]:
    """The effective spec of ``environment`` as plain data (not validated yet)."""
    data = spec.model_dump(mode="json", exclude={"environments"})
    data["environment"] = environment
    override = (spec.environments or {}).get(environment)
    if override is None:
        return data
    if override.instances is not None:
        data["instances"] = override.instances
    if override.env is not None:
        env = dict(data["env"])
        for name, value in override.env.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        data["env"] = env
    if override.resources is not None:
        given = override.resources.model_dump(
            mode="json", include=set(override.resources.model_fields_set)
        )
        data["resources"] = {**data["resources"], **given}
    if override.deploy is not None:
        data["deploy"] = override.deploy.model_dump(mode="json")
    if override.routes is not None:
        data["routes"] = [route.model_dump(mode="json") for route in override.routes]
    return data


def for_environment(spec: AppSpec, environment: str | None = None) -> AppSpec:
    """The spec ``environment`` (default: the spec's own) runs: its override applied.

    The base was validated with every environment resolved (``AppSpec`` checks them), so this
    does not fail for a spec that parsed.
    """
    return AppSpec.model_validate(merged_for(spec, environment or spec.environment))


def base_for(spec: AppSpec, environment: str) -> AppSpec:
    """The base spec (overrides not applied) moved to ``environment``: what a release keeps so
    that a promotion can apply the next environment's override to the same base."""
    return spec.model_copy(update={"environment": environment})
