#!/bin/sh
# render.sh VERSION OUTDIR: lay out the build context of the kiln counter example in OUTDIR.
#
#   OUTDIR/Dockerfile
#   OUTDIR/rootfs/bin/busybox            the static busybox (Debian package busybox-static)
#   OUTDIR/rootfs/app/start.sh           serves on $PORT (default 8080)
#   OUTDIR/rootfs/www/healthz            200 "ok"
#   OUTDIR/rootfs/www/cgi-bin/count      GET: the counter; POST: add one, then answer the new value
#
# The counter lives in $COUNTER_DIR (default /var/lib/counter), the app's volume. A POST is
# answered only once the new value is on the volume (written to a temporary file, synced,
# renamed over the old one): what a client was told is never lost to a kill of the instance.
set -eu
VERSION=${1:?usage: render.sh VERSION OUTDIR}
OUT=${2:?usage: render.sh VERSION OUTDIR}
BUSYBOX=${BUSYBOX:-/bin/busybox}
HERE=$(cd "$(dirname "$0")" && pwd)
case "$VERSION" in
  ''|*[!A-Za-z0-9._-]*) echo "render.sh: VERSION must be letters, digits, . _ - (got '$VERSION')" >&2; exit 2 ;;
esac
R="$OUT/rootfs"
mkdir -p "$R/bin" "$R/app" "$R/www/cgi-bin" "$R/var/lib/counter"
cp "$HERE/Dockerfile" "$OUT/Dockerfile"
cp "$BUSYBOX" "$R/bin/busybox"
ln -sf busybox "$R/bin/sh"
printf 'ok\n' > "$R/www/healthz"
cat > "$R/www/cgi-bin/count" <<CGI
#!/bin/sh
B=/bin/busybox
DATA=\${COUNTER_DIR:-/var/lib/counter}
# One request at a time (busybox has no flock): a directory is the lock.
until \$B mkdir "\$DATA/.lock" 2>/dev/null; do \$B usleep 2000; done
trap '\$B rmdir "\$DATA/.lock"' EXIT
N=\$(\$B cat "\$DATA/count" 2>/dev/null || echo 0)
case "\$N" in ''|*[!0-9]*) N=0 ;; esac
if [ "\$REQUEST_METHOD" = POST ]; then
  N=\$((N + 1))
  echo "\$N" > "\$DATA/count.tmp"
  \$B sync
  \$B mv -f "\$DATA/count.tmp" "\$DATA/count"
  \$B sync
fi
printf 'Content-Type: text/plain\r\n\r\n%s counter $VERSION\n' "\$N"
CGI
chmod 0755 "$R/www/cgi-bin/count"
cat > "$R/app/start.sh" <<START
#!/bin/sh
# Serves /www with busybox httpd on \$PORT (default 8080); the counter is on the volume.
PORT=\${PORT:-8080}
DATA=\${COUNTER_DIR:-/var/lib/counter}
# Never two writers (kiln's promise for a volume that is not shared): a lock left by a killed
# instance is stale, so it goes.
/bin/busybox rmdir "\$DATA/.lock" 2>/dev/null || true
echo "counter $VERSION listening on \${HOST:-*}:\$PORT, data in \$DATA (\$(/bin/busybox cat "\$DATA/count" 2>/dev/null || echo 0))"
exec /bin/busybox httpd -f -p "\${HOST:+\$HOST:}\$PORT" -h /www
START
