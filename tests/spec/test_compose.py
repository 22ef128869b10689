"""Compose files → kiln specs: what maps, what is refused (and why), interpolation, env files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kiln.errors import SpecInvalid
from kiln.spec import AppSpec, parse_spec
from kiln.spec.compose import Build, Conversion, convert_compose, is_compose, render_spec
from kiln.spec.envfile import EnvFileError, parse_env_file
from kiln.spec.interpolate import InterpolationError, Interpolator

EXAMPLE = Path(__file__).parents[2] / "examples" / "compose"


def convert(text: str, variables: dict[str, str] | None = None, **files: str) -> Conversion:
    return convert_compose(
        text, variables=variables or {}, read_env_file=lambda path: files.get(path)
    )


def problems(text: str, variables: dict[str, str] | None = None, **files: str) -> list[str]:
    with pytest.raises(SpecInvalid) as caught:
        convert(text, variables, **files)
    return caught.value.problems


def one(text: str, variables: dict[str, str] | None = None, **files: str) -> AppSpec:
    conversion = convert(text, variables, **files)
    assert len(conversion.specs) == 1
    return conversion.specs[0]


# --- interpolation, as the Compose specification defines it --------------------------------

VARIABLES = {"SET": "value", "EMPTY": ""}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$SET and ${SET}", "value and value"),
        ("${UNSET}", ""),
        ("${UNSET:-fallback}", "fallback"),
        ("${EMPTY:-fallback}", "fallback"),
        ("${EMPTY-fallback}", ""),
        ("${UNSET-fallback}", "fallback"),
        ("${SET:+alt}", "alt"),
        ("${EMPTY:+alt}", ""),
        ("${EMPTY+alt}", "alt"),
        ("${UNSET+alt}", ""),
        ("${UNSET:-${SET}}", "value"),
        ("${UNSET:-${ALSO_UNSET:-deep}}", "deep"),
        ("$$SET costs $$5", "$SET costs $5"),
        ("$$$SET", "$value"),
        ("a $ b $1 $-", "a $ b $1 $-"),
        ("${SET:?never used}", "value"),
        ("${SET?unused} ${UNSET:-}", "value "),
    ],
)
def test_interpolation_follows_the_compose_specification(text: str, expected: str) -> None:
    assert Interpolator(VARIABLES)(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("${UNSET:?set UNSET to the API key}", "required variable UNSET: set UNSET to the API key"),
        ("${EMPTY:?}", "required variable EMPTY: is empty or not set"),
        ("${UNSET?}", "required variable UNSET: is not set"),
        ("${SET/foo/bar}", "Compose knows only"),
        ("${}", "is not a variable"),
        ("${SET", "never closed"),
    ],
)
def test_interpolation_refuses_what_compose_refuses(text: str, message: str) -> None:
    with pytest.raises(InterpolationError, match=message.replace("?", r"\?")):
        Interpolator(VARIABLES)(text)


def test_an_unset_variable_is_remembered_once_for_a_warning() -> None:
    interpolate = Interpolator({})
    interpolate("${A} $A ${B:-x}")
    assert interpolate.unset == ["A"]


# --- environment files -------------------------------------------------------------------------


def test_env_files_read_like_compose_reads_them() -> None:
    text = """\
# a comment
LOG_LEVEL=info
export REGION=eu
GREETING="hello # not a comment"   # a comment
MULTI="one\\ntwo"
LITERAL='$HOME and \\n'
URL=http://${HOST:-localhost}:$PORT/ # comment
HASH=a#b
SPANS="first
second"
FROM_SHELL
NOT_IN_SHELL
EMPTY=
"""
    assert parse_env_file(text, {"PORT": "80", "FROM_SHELL": "yes"}) == {
        "LOG_LEVEL": "info",
        "REGION": "eu",
        "GREETING": "hello # not a comment",
        "MULTI": "one\ntwo",
        "LITERAL": "$HOME and \\n",
        "URL": "http://localhost:80/",
        "HASH": "a#b",
        "SPANS": "first\nsecond",
        "FROM_SHELL": "yes",
        "EMPTY": "",
    }


def test_an_unclosed_quote_in_an_env_file_names_its_line() -> None:
    with pytest.raises(EnvFileError, match="line 2"):
        parse_env_file('A=1\nB="never closed\nC=3\n', {})


# --- the realistic stack -----------------------------------------------------------------------


def example() -> Conversion:
    return convert_compose(
        (EXAMPLE / "compose.yaml").read_text(),
        variables={"DB_PASSWORD": "s3cret"},
        read_env_file=lambda path: (EXAMPLE / path).read_text(),
    )


def test_the_web_worker_cache_stack_becomes_three_apps() -> None:
    conversion = example()
    web, worker, cache = conversion.specs
    assert [s.app for s in (web, worker, cache)] == ["web", "worker", "cache"]
    assert conversion.builds == {"web": Build(context="./web")}
    assert web.image == "web"  # until kiln deploy builds it and pins the digest
    assert worker.image == cache.image == "kiln-hello:v1"
    assert web.port == 8080 and web.instances == 2
    assert [(r.host, r.path) for r in web.effective_routes()] == [("shop.localhost", "/")]
    assert web.env["DATABASE_URL"] == "postgres://shop:s3cret@db.internal:5432/shop"
    assert web.env["GREETING"] == "hello from compose"  # from app.env
    assert web.env["FEATURE_FLAGS"] == "checkout,$literal"  # single-quoted: literal
    assert web.health is not None and web.health.command is not None
    assert web.health.command[:3] == ["/bin/busybox", "sh", "-c"]
    assert (web.health.interval, web.health.timeout, web.health.grace) == (1.0, 0.5, 20.0)
    assert web.health.unhealthy_threshold == 3
    assert web.resources.cpus == 0.5 and web.resources.memory == 64 * 1024**2
    assert web.resources.pids == 64
    assert web.security.read_only and web.security.tmpfs == ["/tmp"]
    assert (web.deploy.strategy, web.deploy.max_surge, web.deploy.max_unavailable) == (
        "rolling",
        1,
        0,
    )

    assert worker.port is None and worker.effective_routes() == []
    assert worker.command is not None and worker.command[:3] == ["/bin/busybox", "sh", "-c"]
    assert "$HOSTNAME" in worker.command[3]  # $$ in Compose is a literal $
    assert worker.env["QUEUE"] == "default" and worker.env["WORKER_CONCURRENCY"] == "2"
    assert worker.deploy.strategy == "recreate"  # stop-first, parallelism ≥ replicas
    assert not worker.security.read_only  # Compose's default: a writable root filesystem
    assert worker.drift == "report" and web.drift == "replace"  # a writable root: report only

    assert cache.port == 8080 and cache.resources.memory == 32 * 1024**2
    assert cache.security.cap_add == ["NET_BIND_SERVICE"] and cache.stop_grace == 5.0
    assert [(v.name, v.path, v.shared) for v in cache.volumes] == [("cache-data", "/data", False)]


def test_the_stack_warns_about_what_kiln_leaves_out() -> None:
    warnings = example().warnings
    assert any(w.startswith("services.web.depends_on: ignored") for w in warnings)
    assert any("services.worker.depends_on.cache.condition: service_healthy" in w for w in warnings)
    assert any("host port 8000 is not published" in w for w in warnings)
    assert any("com.example.team ignored" in w for w in warnings)


def test_each_rendered_document_parses_back_to_the_same_spec() -> None:
    for spec in example().specs:
        assert parse_spec(render_spec(spec, comment="x")) == spec


def test_a_rendered_build_takes_the_place_of_the_image() -> None:
    conversion = example()
    web = conversion.specs[0]
    document = yaml.safe_load(render_spec(web, build=conversion.builds["web"]))
    assert "image" not in document and document["build"] == "./web"
    assert list(document)[:2] == ["app", "build"]  # where image: was
    tagged = render_spec(web, build=Build(context=".", dockerfile="web.Dockerfile", image="web:2"))
    document = yaml.safe_load(tagged)
    assert document["image"] == "web:2"
    assert document["build"] == {"context": ".", "dockerfile": "web.Dockerfile"}


def test_a_compose_file_is_told_from_a_kiln_yaml() -> None:
    assert is_compose({"services": {"web": {}}})
    assert not is_compose({"app": "web", "image": "x"})
    assert not is_compose(["services"])


# --- mapping details ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("update", "replicas", "expected"),
    [
        ("{order: start-first, parallelism: 2}", 4, ("rolling", 2, 0)),
        ("{order: start-first, parallelism: 0}", 3, ("rolling", 3, 0)),
        ("{order: stop-first, parallelism: 1}", 3, ("rolling", 0, 1)),
        ("{parallelism: 2}", 3, ("rolling", 0, 2)),  # Compose's default order is stop-first
        ("{order: stop-first, parallelism: 0}", 3, ("recreate", 1, 0)),
    ],
)
def test_update_config_becomes_a_strategy(
    update: str, replicas: int, expected: tuple[str, int, int]
) -> None:
    spec = one(
        f"services: {{web: {{image: x, deploy: {{replicas: {replicas}, update_config: {update}}}}}}}"
    )
    assert (spec.deploy.strategy, spec.deploy.max_surge, spec.deploy.max_unavailable) == expected


def test_environment_in_both_forms_and_from_the_shell() -> None:
    spec = one(
        """
services:
  web:
    image: x
    env_file: [base.env, {path: missing.env, required: false}]
    environment: [A=1, FROM_SHELL, UNSET_IN_SHELL, B=two=2]
""",
        {"FROM_SHELL": "shell"},
        **{"base.env": "A=0\nC=3\n"},
    )
    assert spec.env == {"A": "1", "C": "3", "FROM_SHELL": "shell", "B": "two=2"}
    mapping = one("services: {web: {image: x, environment: {N: 1, T: true, S: null}}}", {"S": "s"})
    assert mapping.env == {"N": "1", "T": "true", "S": "s"}


def test_route_labels_and_the_port_label() -> None:
    spec = one(
        """
services:
  api:
    image: x
    ports: ["8080:80", "9090"]
    labels:
      kiln.port: "80"
      kiln.route.host: "api.example.com, API.example.org"
      kiln.route.path: /v1,/v2
"""
    )
    assert spec.port == 80
    assert [(r.host, r.path) for r in spec.routes or []] == [
        ("api.example.com", "/v1"),
        ("api.example.com", "/v2"),
        ("api.example.org", "/v1"),
        ("api.example.org", "/v2"),
    ]


def test_commands_healthchecks_network_and_user() -> None:
    spec = one(
        """
services:
  web:
    image: x
    command: ./server --greeting "hello world"
    ports: [{target: 8000, published: "80"}]
    healthcheck: {test: "curl -f http://localhost:8000/", interval: 1m30s, timeout: 10s}
    network_mode: host
    user: 1000
    cpus: 1.5
    pids_limit: 100
"""
    )
    assert spec.command == ["./server", "--greeting", "hello world"]
    assert spec.health is not None
    assert spec.health.command == ["/bin/sh", "-c", "curl -f http://localhost:8000/"]
    assert (spec.health.interval, spec.health.timeout) == (90.0, 10.0)
    assert spec.network == "host" and spec.user == "1000"
    assert (spec.resources.cpus, spec.resources.pids) == (1.5, 100)


def test_the_drift_label_chooses_what_a_changed_instance_gets() -> None:
    spec = one("services: {web: {image: x, labels: {kiln.drift: replace}}}")
    assert spec.drift == "replace" and not spec.security.read_only
    assert problems("services: {web: {image: x, labels: {kiln.drift: ignore}}}") == [
        "services.web.labels.kiln.drift: replace or report, got 'ignore'"
    ]


def test_port_equal_to_the_environment_port_is_dropped() -> None:
    spec = one("services: {web: {image: x, ports: ['3000'], environment: {PORT: 3000}}}")
    assert spec.port == 3000 and "PORT" not in spec.env


# --- what kiln cannot run: every problem at once, each named with why -------------------------

UNSUPPORTED = """
services:
  web:
    image: x
    volumes: [./data:/var/lib/data]
    entrypoint: [/init]
    network_mode: "service:db"
    ports: ["53:53/udp"]
    labels: {kiln.route.hots: a.example.com}
    imagee: typo
    deploy:
      mode: global
      resources: {limits: {memory: lots}}
  Bad_Name:
    build: {context: ., args: {VERSION: 1}}
  worker:
    image: y
    environment: {A: "${REQUIRED:?set REQUIRED first}"}
volumes:
  data: {}
"""


def test_every_unsupported_or_unknown_key_is_named_at_once() -> None:
    found = problems(UNSUPPORTED)
    expected = [
        "services.web.volumes.0: './data' is a host path, and a bind mount is not supported:"
        " kiln mounts no host paths",
        "services.web.entrypoint: not supported: kiln sets only the command",
        "services.web.imagee: is not a Compose key kiln knows",
        "services.web.deploy.resources.limits.memory: ",
        "services.Bad_Name: the service's name becomes the app's name",
        "services.Bad_Name.build.args: not supported: kiln's build passes no build arguments",
        "services.worker.environment.A: required variable REQUIRED: set REQUIRED first",
        "services.web.network_mode: 'service:db' is not supported",
        "services.web.ports.0: udp is not supported",
        "services.web.labels.kiln.route.hots: not a label kiln knows",
        "services.web.deploy.mode: global is not supported",
    ]
    for start in expected:
        assert any(p.startswith(start) for p in found), (start, found)


def test_what_is_found_after_the_typed_models_is_named_too() -> None:
    found = problems(
        """
services:
  web:
    image: x
    network_mode: "service:db"
    ports: ["53:53/udp"]
    labels: {kiln.route.hots: a.example.com}
    deploy: {mode: global}
"""
    )
    assert any(
        p.startswith("services.web.network_mode: 'service:db' is not supported") for p in found
    )
    assert any("services.web.ports.0: udp is not supported" in p for p in found)
    assert any(
        p.startswith("services.web.labels.kiln.route.hots: not a label kiln knows") for p in found
    )
    assert any(p.startswith("services.web.deploy.mode: global is not supported") for p in found)


def test_kiln_rules_are_reported_with_the_service() -> None:
    found = problems("services: {web: {image: x, tmpfs: [relative/path]}}")
    assert found == [
        "services.web: as kiln.yaml, security.tmpfs.0: must be an absolute path other than /"
        " (no spaces, commas or colons), optionally followed by :OPTIONS, got 'relative/path'"
    ]


def test_a_missing_required_env_file_is_a_problem() -> None:
    assert problems("services: {web: {image: x, env_file: prod.env}}") == [
        "services.web.env_file: prod.env does not exist (next to the Compose file); create it or"
        " set required: false"
    ]


def test_yaml_limits_apply_as_to_a_kiln_yaml() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefg", "bcdefgh", strict=False)
    )
    with pytest.raises(SpecInvalid):
        convert(bomb + "services: {web: {image: x}}\n")


# --- build: ------------------------------------------------------------------------------------


def test_build_alone_builds_and_names_the_image_after_the_service() -> None:
    conversion = convert("services: {web: {build: ./src, ports: ['8080']}}")
    assert conversion.builds == {"web": Build(context="./src")}
    assert conversion.specs[0].image == "web"


def test_build_with_context_and_dockerfile() -> None:
    conversion = convert(
        "services: {web: {build: {context: src, dockerfile: docker/web.Dockerfile}}}"
    )
    assert conversion.builds["web"] == Build(context="src", dockerfile="docker/web.Dockerfile")
    assert conversion.builds["web"].as_spec() == {
        "context": "src",
        "dockerfile": "docker/web.Dockerfile",
    }


def test_image_and_build_tag_the_build_with_the_image_as_compose_does() -> None:
    conversion = convert("services: {web: {image: 'shop/web:1.4', build: .}}")
    assert conversion.builds["web"] == Build(context=".", image="shop/web:1.4")
    assert conversion.specs[0].image == "shop/web:1.4"


def test_a_registry_host_in_the_image_of_a_build_is_left_to_kilns_registry() -> None:
    conversion = convert(
        "services: {web: {image: 'registry.example.com:5000/shop/web:2', build: .}}"
    )
    assert conversion.builds["web"].image == "shop/web:2"
    assert any(
        "services.web.image: the build goes to kiln's registry as shop/web:2" in w
        for w in conversion.warnings
    )


def test_what_kilns_build_cannot_do_is_named_with_why() -> None:
    found = problems(
        """
services:
  web:
    image: web@sha256:0123456789012345678901234567890123456789012345678901234567890123
    build:
      context: https://github.com/example/web.git
      dockerfile: ../Dockerfile
      args: [VERSION=1]
      target: prod
      dockerfile_inline: FROM scratch
      imagee: x
"""
    )
    for start in (
        "services.web.build.args: not supported: kiln's build passes no build arguments",
        "services.web.build.target: not supported: kiln builds the Dockerfile's last stage",
        "services.web.build.dockerfile_inline: not supported",
        "services.web.build.imagee: is not a Compose key kiln knows",
        "services.web.build: 'https://github.com/example/web.git' is not supported: kiln builds a"
        " directory",
        "services.web.build.dockerfile: '../Dockerfile' is outside the context",
        "services.web.image: 'web@sha256:",
    ):
        assert any(p.startswith(start) for p in found), (start, found)


def test_build_options_kiln_has_no_use_for_are_warnings() -> None:
    conversion = convert("services: {web: {build: {context: ., no_cache: true, labels: {a: b}}}}")
    assert any(w.startswith("services.web.build.no_cache: ignored") for w in conversion.warnings)
    assert any(w.startswith("services.web.build.labels: ignored") for w in conversion.warnings)


# --- volumes: ----------------------------------------------------------------------------------


def test_named_volumes_in_both_syntaxes_become_kiln_volumes() -> None:
    spec = one(
        """
services:
  db:
    image: postgres:16
    volumes:
      - pg_data:/var/lib/postgresql/data
      - {type: volume, source: backups, target: /backups, read_only: true}
      - {type: tmpfs, target: /run/pg, tmpfs: {size: 16m, mode: 01777}}
volumes:
  pg_data: {driver: local, name: shop_pg, labels: {a: b}}
  backups:
"""
    )
    assert [(v.name, v.path, v.shared, v.read_only) for v in spec.volumes] == [
        ("pg-data", "/var/lib/postgresql/data", False, False),
        ("backups", "/backups", False, True),
    ]
    assert spec.security.tmpfs == ["/tmp", f"/run/pg:size={16 * 1024**2},mode=1777"]


def test_volume_renames_are_warned_about_and_ro_mounts_stay_read_only() -> None:
    conversion = convert(
        "services: {db: {image: x, volumes: ['pg_data:/data:ro', 'logs:/logs:rw']}}\n"
        "volumes: {pg_data: {}, logs: {}}"
    )
    assert any("volume pg_data is named pg-data in kiln" in w for w in conversion.warnings)
    assert not any("read-write" in w for w in conversion.warnings)
    spec = parse_spec(render_spec(conversion.specs[0]))
    assert [(v.name, v.read_only) for v in spec.volumes] == [("pg-data", True), ("logs", False)]


def test_ro_and_rw_together_are_refused() -> None:
    found = problems("services: {db: {image: x, volumes: ['d:/d:ro,rw']}}\nvolumes: {d: {}}")
    assert "services.db.volumes.0: ro or rw, not both, got 'd:/d:ro,rw'" in found


def test_read_only_volume_with_replicas_needs_no_shared() -> None:
    spec = one(
        "services: {web: {image: x, deploy: {replicas: 3}, volumes: ['assets:/a:ro']}}\n"
        "volumes: {assets: {}}"
    )
    assert spec.instances == 3
    assert spec.volumes[0].read_only and not spec.volumes[0].shared


def test_replicas_or_start_first_share_the_volume_as_compose_does() -> None:
    replicas = one(
        "services: {web: {image: x, deploy: {replicas: 3}, volumes: ['up:/up']}}\nvolumes: {up: {}}"
    )
    assert replicas.volumes[0].shared and replicas.instances == 3
    start_first = one(
        "services: {web: {image: x, deploy: {update_config: {order: start-first}},"
        " volumes: ['up:/up']}}\nvolumes: {up: {}}"
    )
    assert start_first.volumes[0].shared


def test_what_kiln_cannot_mount_is_named_with_why() -> None:
    found = problems(
        """
services:
  web:
    image: x
    volumes:
      - ./static:/srv/static
      - /var/run/docker.sock:/var/run/docker.sock
      - /data
      - {type: bind, source: ., target: /src}
      - {type: volume, target: /anonymous}
      - {type: npipe, source: x, target: /x}
      - {type: volume, source: shared, target: /s, volume: {subpath: a}}
      - undeclared:/u
      - shared:/s2:rx
  other:
    image: y
    volumes: [shared:/s]
volumes:
  shared: {}
  outside: {external: true}
  fancy: {driver: nfs, driver_opts: {type: nfs}}
"""
    )
    for start in (
        "services.web.volumes.0: './static' is a host path, and a bind mount is not supported:"
        " kiln mounts no host paths: an instance is immutable",
        "services.web.volumes.1: '/var/run/docker.sock' is a host path",
        "services.web.volumes.2: '/data' is an anonymous volume",
        "services.web.volumes.3: a bind mount is not supported",
        "services.web.volumes.4: an anonymous volume",
        "services.web.volumes.5.type: npipe is not supported",
        "services.web.volumes.6.volume.subpath: not supported",
        "services.web.volumes.7: volume undeclared is not declared",
        "services.web.volumes.8: rx is not a mode kiln knows",
        "volumes.shared: used by web and other, but a kiln volume belongs to one app",
        "volumes.outside.external: not supported: kiln touches only volumes it created",
        "volumes.fancy.driver: 'nfs' is not supported",
        "volumes.fancy.driver_opts: not supported",
    ):
        assert any(p.startswith(start) for p in found), (start, found)
