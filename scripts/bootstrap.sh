#!/usr/bin/env bash
# Install what kiln needs on Debian 12 when it is missing, then the pinned Python deps.
# Idempotent and quick on a second run: apt runs only for missing packages, pip only when
# requirements.lock changed. Needs root (or sudo) only when an apt package is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1mkiln bootstrap:\033[0m %s\n' "$*" >&2; }

missing=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for pkg in docker.io nginx libnginx-mod-http-lua libnginx-mod-http-ndk lua-cjson busybox-static iproute2 ${KILN_EXTRA_APT:-}; do
    have_pkg "$pkg" || missing+=("$pkg")
done
# npm installs the dashboard's browser library (uPlot) below; Debian's npm brings nodejs.
command -v npm >/dev/null 2>&1 || missing+=(npm)
PYTHON="${PYTHON:-python3}"
# Debian's own python3 needs python3-venv for `python3 -m venv`.
if [ ! -x .venv/bin/python ] && ! "$PYTHON" -c "import ensurepip, venv" >/dev/null 2>&1; then
    missing+=(python3-venv)
fi
if ((${#missing[@]})); then
    say "installing with apt: ${missing[*]}"
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Docker engine follows each container's log (kiln keeps every instance's output) with one
# inotify instance per follower, and falls back to polling the file every 200 ms once the user's
# inotify instances run out: Debian's default of 128 is reached at about 100 instances, and the
# polling then costs the engine ~1.5 % of a core at 300 (bench/README.md, "Scale").
want_inotify=8192
have_inotify=$(cat /proc/sys/fs/inotify/max_user_instances 2>/dev/null || echo "$want_inotify")
if [ "$have_inotify" -lt "$want_inotify" ]; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo -n"; fi
    if echo "fs.inotify.max_user_instances = $want_inotify" \
        | $SUDO tee /etc/sysctl.d/60-kiln.conf >/dev/null 2>&1 \
        && $SUDO sysctl -q -w "fs.inotify.max_user_instances=$want_inotify" >/dev/null 2>&1; then
        say "raised fs.inotify.max_user_instances $have_inotify -> $want_inotify (/etc/sysctl.d/60-kiln.conf)"
    else
        say "fs.inotify.max_user_instances is $have_inotify: past ~100 instances the Docker engine polls their logs; raise it: sudo sysctl -w fs.inotify.max_user_instances=$want_inotify"
    fi
fi

if [ ! -x .venv/bin/python ]; then
    say "creating .venv"
    "$PYTHON" -m venv .venv
fi
stamp=".venv/.kiln-lock-$(sha256sum requirements.lock pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -e "$stamp" ]; then
    say "installing Python dependencies from requirements.lock"
    .venv/bin/python -m pip install -q --disable-pip-version-check --require-hashes -r requirements.lock
    .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
    rm -f .venv/.kiln-lock-*
    touch "$stamp"
fi
# kiln's own .pyc files, as `pip install` (not -e) writes them for an installed package: the
# `kiln` command then does not compile its modules on every run (~30 ms of `kiln status`) where
# PYTHONDONTWRITEBYTECODE keeps Python from writing them itself. Only changed files recompile.
.venv/bin/python -m compileall -q -x /node_modules/ kiln >/dev/null

# The dashboard's browser libraries, exactly as package-lock.json pins them; kiln serves them
# from disk (no CDN), so the page works with no internet once this ran.
ui=kiln/api/ui
ui_stamp="$ui/node_modules/.kiln-lock-$(sha256sum "$ui/package-lock.json" | cut -c1-16)"
if [ ! -e "$ui_stamp" ]; then
    say "installing the dashboard's browser libraries with npm ci"
    (cd "$ui" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
    touch "$ui_stamp"
fi
