"""kiln token create|ls|revoke and kiln audit, as a user runs them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from kiln.cli.commands.access import parse_since
from kiln.errors import InvalidInput

from .conftest import Kiln

SPEC = "app: web\nenvironment: {env}\nimage: example/web:1\nport: 8080\n"


def test_a_staging_token_deploys_to_staging_only_and_stops_when_revoked(kiln: Kiln) -> None:
    made = kiln.run("token", "create", "ci-staging", "--role", "deployer", "--env", "staging")
    assert made.exit_code == 0, made.output
    token = made.stdout.strip()
    assert "ci-staging: deployer for staging" in made.stderr
    assert "shown this once" in made.stderr

    listed = json.loads(kiln.run("token", "ls", "--json").stdout)
    assert [(t["name"], t["role"], t["environments"]) for t in listed] == [
        ("ci-staging", "deployer", ["staging"]),
        ("local-token", "admin", []),
    ]
    assert token not in kiln.run("token", "ls").stdout

    ci = Kiln(service=kiln.service, env={**kiln.env, "KILN_TOKEN": token}, home=kiln.home)
    spec_dir = kiln.home.parent
    for env in ("staging", "production"):
        (spec_dir / f"{env}.yaml").write_text(SPEC.format(env=env))
    ok = ci.run("deploy", "-f", str(spec_dir / "staging.yaml"), "--no-wait")
    assert ok.exit_code == 0, ok.output
    refused = ci.run("deploy", "-f", str(spec_dir / "production.yaml"), "--no-wait")
    assert refused.exit_code == 6
    assert "may not deploy in production" in refused.stderr
    assert ci.run("token", "ls").exit_code == 6  # not an admin

    assert kiln.run("token", "revoke", "ci-staging").exit_code == 0
    gone = ci.run("status")
    assert gone.exit_code == 6
    assert "was revoked" in gone.stderr


def test_audit_lists_changes_and_refusals(kiln: Kiln) -> None:
    kiln.run("token", "create", "dash", "--role", "viewer")
    viewer_token = json.loads(
        kiln.run("token", "create", "ro", "--role", "viewer", "--json").stdout
    )["token"]
    viewer = Kiln(
        service=kiln.service, env={**kiln.env, "KILN_TOKEN": viewer_token}, home=kiln.home
    )
    assert viewer.run("scale", "web", "3").exit_code == 6
    entries = json.loads(kiln.run("audit", "--json").stdout)
    assert [(e["path"], e["outcome"], e["token"]) for e in entries] == [
        ("/v1/tokens", "ok", "local-token"),
        ("/v1/tokens", "ok", "local-token"),
        ("/v1/apps/dev/web/scale", "refused", "ro"),
    ]
    table = kiln.run("audit", "--app", "web").stdout
    assert "POST /v1/apps/dev/web/scale" in table and "403 refused" in table
    assert json.loads(kiln.run("audit", "--since", "1h", "--json").stdout) == entries
    assert json.loads(kiln.run("audit", "--since", "2999-01-01", "--json").stdout) == []


def test_token_create_refuses_an_unknown_role_and_a_limited_admin(kiln: Kiln) -> None:
    bad = kiln.run("token", "create", "x", "--role", "root")
    assert bad.exit_code == 2 and "--role must be one of admin, deployer, viewer" in bad.stderr
    limited = kiln.run("token", "create", "x", "--role", "admin", "--env", "staging")
    assert limited.exit_code == 2 and "an admin token is for every environment" in limited.stderr


def test_since_takes_a_time_ago_or_a_date() -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert parse_since("30m", now) == now - timedelta(minutes=30)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("2026-11-30", now) == datetime(2026, 11, 30, tzinfo=UTC)
    with pytest.raises(InvalidInput, match="give a time ago"):
        parse_since("yesterday", now)
