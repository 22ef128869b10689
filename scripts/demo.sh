#!/usr/bin/env bash
# Start kiln with its demo app: install what is missing, make sure a Docker engine answers,
# start kiln, build the demo image offline and deploy it with 3 instances. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
KILN_EXTRA_APT="curl ${KILN_EXTRA_APT:-}" scripts/bootstrap.sh
export PATH="$ROOT/.venv/bin:$PATH"
KILN_HOME="${KILN_HOME:-$(python -c 'from kiln.config import Settings; print(Settings.from_env().home)')}"
export KILN_HOME
mkdir -p "$KILN_HOME"

say() { printf '\033[1mkiln demo:\033[0m %s\n' "$*" >&2; }
answers() { DOCKER_HOST="$1" docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

# 1. A Docker engine: DOCKER_HOST if it answers, else the one kiln started before, else the
#    system's default socket if it answers, else start a private one under $KILN_HOME/docker.
engine=""
if [ -n "${DOCKER_HOST:-}" ] && answers "$DOCKER_HOST"; then
    engine="$DOCKER_HOST"
elif [ -s "$KILN_HOME/docker-host" ] && answers "$(cat "$KILN_HOME/docker-host")"; then
    engine="$(cat "$KILN_HOME/docker-host")"
elif [ -S /var/run/docker.sock ] && answers "unix:///var/run/docker.sock"; then
    engine="unix:///var/run/docker.sock"
else
    say "no Docker engine answers; starting one for kiln under $KILN_HOME/docker"
    engine="$(scripts/dockerd.sh start "$KILN_HOME/docker")"
    echo "$engine" > "$KILN_HOME/docker-host"
fi
export DOCKER_HOST="$engine"
say "Docker engine: $DOCKER_HOST"

# 2. kiln itself (a no-op when it already runs).
kiln up

# 3. The demo image, built offline (FROM scratch + static busybox), and its deploy.
say "building the demo image kiln-hello:v1"
examples/hello/build.sh v1 healthy kiln-hello:v1 >/dev/null
kiln deploy -f examples/hello/kiln.yaml -m "demo" --wait

port="${KILN_HTTP_PORT:-8080}"
say "the demo app answers at http://127.0.0.1:${port}/"
curl -fsS "http://127.0.0.1:${port}/" || true
cat >&2 <<HELP

Try:  .venv/bin/kiln status hello      # instances, health, routes
      examples/hello/build.sh v2 healthy kiln-hello:v2 && sed 's/:v1/:v2/' examples/hello/kiln.yaml > /tmp/hello-v2.yaml
      .venv/bin/kiln deploy -f /tmp/hello-v2.yaml   # a rolling update
      .venv/bin/kiln releases hello && .venv/bin/kiln rollback hello
HELP
