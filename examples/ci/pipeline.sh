#!/bin/sh
# examples/ci/pipeline.sh — build → staging → smoke check → production, from any CI.
#
#   examples/ci/pipeline.sh [SPEC]          # SPEC: the app's kiln.yaml (default ./kiln.yaml)
#
# 1. build   the image as APP:VERSION: `kiln build` when this kiln has it, else `docker build`
#            (or your own BUILD_CMD); the spec's top-level `image:` line is replaced by that tag
#            in a temporary copy, so the kiln.yaml in the repository stays as it is.
# 2. staging `kiln deploy -e staging --wait`: the release goes live or the pipeline stops
#            (exit 3: the rollout failed and staging went back to its previous release).
# 3. smoke   curl through NGINX with the staging host (retried briefly): the new release answers.
# 4. prod    `kiln promote APP --from staging --to production --wait`: the same image digest and
#            spec (production's `environments:` overrides applied), production's strategy, after
#            the gates. A gate that refuses (exit 8, e.g. the soak is not over) is retried until
#            PROMOTE_TIMEOUT seconds have passed (default 0: fail at once with the gates listed).
#
# Everything is read from the environment, so the same script runs in GitHub Actions, GitLab CI,
# Jenkins, Buildkite or a terminal:
#
#   KILN              the kiln command                    (default: kiln)
#   CONTEXT           the build context                   (default: the spec's directory)
#   VERSION           the image tag                       (default: git short sha, else a timestamp)
#   IMAGE             the image to build                  (default: APP:VERSION)
#   BUILD_CMD         a command that builds $IMAGE        (default: kiln build, else docker build)
#   SMOKE_URL         NGINX's address                     (default: http://127.0.0.1:${KILN_HTTP_PORT:-8080})
#   SMOKE_HOST        the Host header of the check        (default: APP.staging.localhost)
#   SMOKE_PATH        the path that must answer 2xx       (default: /)
#   PROMOTE_TIMEOUT   seconds to keep retrying refused gates (default: 0)
#   MESSAGE           kept on both releases               (default: "ci VERSION")
#
# Exit codes: 0 production runs the new release; 10 the build failed; 11 the smoke check failed;
# otherwise kiln's own (2 bad spec, 3 rollout failed, 5 kiln not reachable, 8 a gate refused).
set -eu

SPEC=${1:-kiln.yaml}
KILN=${KILN:-kiln}
[ -f "$SPEC" ] || { echo "pipeline: no spec at $SPEC (give its path as the first argument)" >&2; exit 2; }
APP=$(sed -n 's/^app:[[:space:]]*\([a-z0-9-]*\).*/\1/p' "$SPEC" | head -n 1)
[ -n "$APP" ] || { echo "pipeline: $SPEC has no top-level app: line" >&2; exit 2; }
CONTEXT=${CONTEXT:-$(dirname "$SPEC")}
if [ -z "${VERSION:-}" ]; then
  VERSION=$(git -C "$CONTEXT" rev-parse --short HEAD 2>/dev/null || date -u +%Y%m%d%H%M%S)
fi
IMAGE=${IMAGE:-$APP:$VERSION}
MESSAGE=${MESSAGE:-ci $VERSION}
SMOKE_URL=${SMOKE_URL:-http://127.0.0.1:${KILN_HTTP_PORT:-8080}}
SMOKE_HOST=${SMOKE_HOST:-$APP.staging.localhost}
SMOKE_PATH=${SMOKE_PATH:-/}
PROMOTE_TIMEOUT=${PROMOTE_TIMEOUT:-0}

step() { printf '\n==> %s\n' "$*"; }

step "build $IMAGE"
if [ -n "${BUILD_CMD:-}" ]; then
  sh -c "$BUILD_CMD" || exit 10
elif $KILN build --help >/dev/null 2>&1; then
  $KILN build "$CONTEXT" -t "$IMAGE" || exit 10
else
  DOCKER_BUILDKIT=0 docker build --quiet --tag "$IMAGE" "$CONTEXT" || exit 10
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/kiln-pipeline.XXXXXX")
trap 'rm -rf "$WORK"' EXIT INT TERM
sed "s|^image:.*|image: $IMAGE|" "$SPEC" > "$WORK/kiln.yaml"

step "deploy $APP to staging"
$KILN deploy -f "$WORK/kiln.yaml" -e staging --wait -m "$MESSAGE"

step "smoke check $SMOKE_HOST$SMOKE_PATH through $SMOKE_URL"
if ! curl --fail --silent --show-error --max-time 5 --retry 5 --retry-delay 1 \
    --retry-connrefused -H "Host: $SMOKE_HOST" "$SMOKE_URL$SMOKE_PATH" > "$WORK/smoke"; then
  echo "pipeline: the smoke check failed; staging keeps the release, production is untouched" >&2
  exit 11
fi
head -c 200 "$WORK/smoke"; echo

step "promote $APP from staging to production"
deadline=$(( $(date +%s) + PROMOTE_TIMEOUT ))
while :; do
  status=0
  $KILN promote "$APP" --from staging --to production --wait -m "$MESSAGE" || status=$?
  if [ "$status" -ne 8 ] || [ "$(date +%s)" -ge "$deadline" ]; then
    exit "$status"
  fi
  echo "pipeline: a gate refused; trying again in 15 s (until PROMOTE_TIMEOUT)" >&2
  sleep 15
done
