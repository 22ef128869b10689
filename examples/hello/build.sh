#!/bin/sh
# build.sh VERSION [VARIANT] [TAG]: build the kiln demo app offline and print its image id.
#
#   ./build.sh v1                        -> kiln-hello:v1, healthy
#   ./build.sh v5-flaky flaky kiln-hello:flaky
#
# Uses the docker CLI, so it honours DOCKER_HOST; without it, the engine kiln uses (the one
# scripts/demo.sh started, remembered in $KILN_HOME/docker-host). The legacy builder is used on purpose
# (DOCKER_BUILDKIT=0): Docker 20.10 has no buildx here, and the image needs no BuildKit feature.
set -eu
VERSION=${1:?usage: build.sh VERSION [VARIANT] [TAG]}
VARIANT=${2:-healthy}
TAG=${3:-kiln-hello:$VERSION}
HERE=$(cd "$(dirname "$0")" && pwd)
REMEMBERED="${KILN_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/kiln}/docker-host"
if [ -z "${DOCKER_HOST:-}" ] && [ -s "$REMEMBERED" ]; then
  DOCKER_HOST=$(cat "$REMEMBERED")
  export DOCKER_HOST
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kiln-hello-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT INT TERM
"$HERE/render.sh" "$VERSION" "$VARIANT" "$WORK/context"
if ! DOCKER_BUILDKIT=0 docker build --quiet \
    --label "org.opencontainers.image.version=$VERSION" --label "io.kiln.demo.variant=$VARIANT" \
    --tag "$TAG" "$WORK/context" > "$WORK/id" 2> "$WORK/err"; then
  echo "build.sh: docker build of $TAG failed:" >&2
  cat "$WORK/err" >&2
  exit 1
fi
cat "$WORK/id"
