#!/usr/bin/env bash
# The whole test suite: lint, types, layering, then every test (unit, integration, end to end).
# Integration tests start their own private dockerd and NGINX; nothing else must be running.
set -euo pipefail
cd "$(dirname "$0")/.."
KILN_EXTRA_APT="wrk docker-registry chromium prometheus" scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"

echo "== ruff" && ruff check kiln tests bench
echo "== mypy" && mypy kiln
echo "== import-linter" && lint-imports
# Test files run in parallel (each worker starts its own private dockerd and NGINX); a file's
# tests stay together so its module fixtures start once. KILN_TEST_WORKERS=0 runs serially.
echo "== pytest" && pytest -n "${KILN_TEST_WORKERS:-3}" --dist loadfile "$@"
