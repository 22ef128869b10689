#!/bin/sh
# build.sh VERSION [TAG]: build the counter example offline and print its image id.
#   ./build.sh v1        -> kiln-counter:v1
set -eu
VERSION=${1:?usage: build.sh VERSION [TAG]}
TAG=${2:-kiln-counter:$VERSION}
HERE=$(cd "$(dirname "$0")" && pwd)
REMEMBERED="${KILN_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/kiln}/docker-host"
if [ -z "${DOCKER_HOST:-}" ] && [ -s "$REMEMBERED" ]; then
  DOCKER_HOST=$(cat "$REMEMBERED")
  export DOCKER_HOST
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kiln-counter-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT INT TERM
"$HERE/render.sh" "$VERSION" "$WORK/context"
DOCKER_BUILDKIT=0 docker build --quiet --tag "$TAG" "$WORK/context"
