#!/usr/bin/env bash
# dockerd.sh start|stop|status|purge DIR: a private Docker daemon under DIR, on its own bridge.
#
#   start   start dockerd in the background (detached), wait until its socket answers and print
#           its address, unix://DIR/docker.sock, on stdout. A no-op if it already runs.
#   stop    stop it (TERM, then KILL after 30 s) and delete its bridge; images and containers
#           stay in DIR/data for the next start (dockerd itself stops running containers).
#   status  print the address and exit 0 if it answers, exit 1 if not.
#   purge   remove every container, stop, and delete DIR.
#
# Never the default socket, never docker0: the daemon gets its own Linux bridge (a free
# 10.213.X.0/24) and runs with --iptables=false --ip-masq=false --ip-forward=false, so it leaves
# no rule behind. Ports published on 127.0.0.1 work through docker-proxy. The Python twin is
# tests/harness/dockerd.py. Needs root (a bridge, mounts).
set -euo pipefail

usage() { echo "usage: $0 start|stop|status|purge DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
CMD=$1
mkdir -p "$2"
DIR=$(cd "$2" && pwd)
SOCK="$DIR/docker.sock"
PIDFILE="$DIR/docker.pid"
MARKER="$DIR/.kiln-private-dockerd"
LOCK="${TMPDIR:-/tmp}/kiln-dockerd-bridges.lock"

say() { echo "dockerd.sh: $*" >&2; }

answers() {
    if command -v curl >/dev/null; then
        curl -fsS --max-time 2 --unix-socket "$SOCK" http://localhost/_ping >/dev/null 2>&1
    else
        docker -H "unix://$SOCK" version >/dev/null 2>&1
    fi
}

daemon_pid() {
    local pid
    [ -s "$PIDFILE" ] || return 1
    pid=$(cat "$PIDFILE")
    kill -0 "$pid" 2>/dev/null || return 1
    # A stale pid file could name an unrelated process by now.
    grep -q dockerd "/proc/$pid/comm" 2>/dev/null || return 1
    echo "$pid"
}

bridge_name() {
    if [ -s "$DIR/bridge" ]; then cat "$DIR/bridge"; return; fi
    echo "kd$(printf '%s' "$DIR" | sha256sum | cut -c1-10)"
}

create_bridge() {
    local name=$1 start x
    if ip link show "$name" >/dev/null 2>&1; then return; fi
    start=$(( $(printf '%s' "$DIR" | cksum | cut -d' ' -f1) % 254 + 1 ))
    exec 9>>"$LOCK"
    flock 9  # two starts at once must not pick the same free subnet
    for i in $(seq 0 253); do
        x=$(( (start + i) % 254 + 1 ))
        if ip -4 -o addr show | grep -q " 10\.213\.$x\." \
            || ip -4 route show table all | grep -qE "(^| )10\.213\.$x\.0/24"; then
            continue
        fi
        # A fixed address: a bridge without one takes the lowest MAC of its ports, which changes
        # as containers come and go, and their replies to the host then stall for seconds.
        ip link add "$name" address "$(printf '02:6b:0a:d5:%02x:01' "$x")" type bridge
        ip addr add "10.213.$x.1/24" dev "$name"
        ip link set "$name" up
        echo "$name" > "$DIR/bridge"
        flock -u 9
        return
    done
    flock -u 9
    say "no free /24 in 10.213.0.0/16 for a bridge"
    exit 1
}

unmount_leftovers() {
    # dockerd unmounts its data root on a clean exit; after a KILL it may not have.
    awk -v d="$DIR/" '{ if (index($5 "/", d) == 1) print $5 }' /proc/self/mountinfo \
        | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
}

stop_daemon() {
    local pid containerd_pid=""
    if pid=$(daemon_pid); then
        [ -s "$DIR/exec/containerd/containerd.pid" ] && containerd_pid=$(cat "$DIR/exec/containerd/containerd.pid")
        kill -TERM "$pid"
        for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            say "dockerd $pid did not stop in 30 s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
            if [ -n "$containerd_pid" ] && grep -q containerd "/proc/$containerd_pid/comm" 2>/dev/null; then
                kill -KILL "$containerd_pid" 2>/dev/null || true
            fi
        fi
    fi
    ip link del "$(bridge_name)" 2>/dev/null || true
    unmount_leftovers
}

case "$CMD" in
start)
    [ "$(id -u)" -eq 0 ] || { say "needs root (it creates a bridge)"; exit 1; }
    command -v dockerd >/dev/null || { say "dockerd is not installed (apt-get install docker.io)"; exit 1; }
    if daemon_pid >/dev/null && answers; then echo "unix://$SOCK"; exit 0; fi
    [ -n "$(ls -A "$DIR")" ] || touch "$MARKER"
    BRIDGE=$(bridge_name)
    create_bridge "$BRIDGE"
    echo '{}' > "$DIR/daemon.json"
    DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 setsid nohup dockerd \
        -H "unix://$SOCK" --data-root "$DIR/data" --exec-root "$DIR/exec" \
        --pidfile "$PIDFILE" --config-file "$DIR/daemon.json" \
        --bridge="$BRIDGE" --iptables=false --ip6tables=false --ip-masq=false --ip-forward=false \
        </dev/null >>"$DIR/dockerd.log" 2>&1 &
    PID=$!
    for _ in $(seq 600); do
        if answers; then echo "unix://$SOCK"; exit 0; fi
        if ! kill -0 "$PID" 2>/dev/null; then
            say "dockerd exited during startup; the end of $DIR/dockerd.log:"
            tail -n 20 "$DIR/dockerd.log" >&2
            ip link del "$BRIDGE" 2>/dev/null || true
            exit 1
        fi
        sleep 0.05
    done
    say "dockerd did not answer on $SOCK within 30 s; see $DIR/dockerd.log"
    exit 1
    ;;
stop)
    stop_daemon
    ;;
status)
    if daemon_pid >/dev/null && answers; then echo "unix://$SOCK"; exit 0; fi
    exit 1
    ;;
purge)
    if daemon_pid >/dev/null && answers; then
        ids=$(docker -H "unix://$SOCK" ps -aq 2>/dev/null || true)
        # shellcheck disable=SC2086
        [ -z "$ids" ] || docker -H "unix://$SOCK" rm -f $ids >/dev/null 2>&1 || true
    fi
    stop_daemon
    if [ -e "$MARKER" ] && ! grep -q " $DIR/" /proc/self/mountinfo; then
        rm -rf "$DIR"
    else
        say "kept $DIR (not created by dockerd.sh, or something is still mounted there)"
    fi
    ;;
*) usage ;;
esac
