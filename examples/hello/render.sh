#!/bin/sh
# render.sh VERSION VARIANT OUTDIR: lay out the build context of the kiln demo app in OUTDIR.
#
#   OUTDIR/Dockerfile
#   OUTDIR/rootfs/bin/busybox          the static busybox (Debian package busybox-static)
#   OUTDIR/rootfs/bin/sh -> busybox    so CGI scripts can say #!/bin/sh
#   OUTDIR/rootfs/app/start.sh         serves on $PORT (default 8080)
#   OUTDIR/rootfs/www/...              the site, baked for VERSION and VARIANT
#
# Every variant but crash also has /cgi-bin/slow?SECONDS (GET or POST): answers after SECONDS
# (0-30, default 5) with the version and instance, for tests of requests in flight.
#
# Variants:
#   healthy  static files: / shows the version, /healthz answers 200 (fast: no CGI at all)
#   flaky    like healthy, but about 1 request in 10 to / answers 500 (a CGI script)
#   broken   the app runs but is broken: / answers 500 and /healthz 404 (the release "lost"
#            its health endpoint; busybox httpd runs CGI only under /cgi-bin/ and for a
#            directory index, so /healthz itself cannot answer 500)
#   crash    the process exits with code 3 right after it starts (a crash loop)
set -eu

VERSION=${1:?usage: render.sh VERSION VARIANT OUTDIR}
VARIANT=${2:?usage: render.sh VERSION VARIANT OUTDIR}
OUT=${3:?usage: render.sh VERSION VARIANT OUTDIR}
BUSYBOX=${BUSYBOX:-/bin/busybox}
HERE=$(cd "$(dirname "$0")" && pwd)

case "$VERSION" in
  ''|*[!A-Za-z0-9._-]*) echo "render.sh: VERSION must be letters, digits, . _ - (got '$VERSION')" >&2; exit 2 ;;
esac
case "$VARIANT" in
  healthy|flaky|broken|crash) ;;
  *) echo "render.sh: VARIANT is one of healthy, flaky, broken, crash (got '$VARIANT')" >&2; exit 2 ;;
esac
if ! "$BUSYBOX" httpd --help >/dev/null 2>&1; then
  echo "render.sh: $BUSYBOX is not a busybox with httpd (apt-get install busybox-static)" >&2
  exit 2
fi

R="$OUT/rootfs"
mkdir -p "$R/bin" "$R/app" "$R/www/cgi-bin"
cp "$HERE/Dockerfile" "$OUT/Dockerfile"
cp "$BUSYBOX" "$R/bin/busybox"
ln -sf busybox "$R/bin/sh"

printf '%s\n' "$VERSION" > "$R/www/version"
printf '%s\n' "$VARIANT" > "$R/www/variant"
GREETING="hello from kiln demo $VERSION"

case "$VARIANT" in
  healthy)
    printf '%s (instance unknown)\n' "$GREETING" > "$R/www/index.html"
    printf 'ok\n' > "$R/www/healthz"
    ;;
  flaky)
    printf 'ok\n' > "$R/www/healthz"
    # No index.html: busybox httpd then runs /cgi-bin/index.cgi for "/".
    cat > "$R/www/cgi-bin/index.cgi" <<CGI
#!/bin/sh
if [ \$((RANDOM % 10)) -eq 0 ]; then
  printf 'Status: 500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\n'
  printf '%s (instance %s): flaky failure\n' "$GREETING" "\$HOSTNAME"
else
  printf 'Content-Type: text/html\r\n\r\n'
  printf '%s (instance %s)\n' "$GREETING" "\$HOSTNAME"
fi
CGI
    ;;
  broken)
    cat > "$R/www/cgi-bin/index.cgi" <<CGI
#!/bin/sh
printf 'Status: 500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\n'
printf '%s (instance %s): broken: cannot reach its database\n' "$GREETING" "\$HOSTNAME"
CGI
    ;;
  crash)
    printf '%s (instance unknown)\n' "$GREETING" > "$R/www/index.html"
    ;;
esac
if [ "$VARIANT" != crash ]; then
  cat > "$R/www/cgi-bin/slow" <<CGI
#!/bin/sh
# A slow request: sleep QUERY_STRING seconds (0-30), then answer (the POST body is read first).
S=\${QUERY_STRING:-5}
case "\$S" in ''|*[!0-9]*) S=5 ;; esac
[ "\$S" -gt 30 ] && S=30
[ "\${CONTENT_LENGTH:-0}" -gt 0 ] && /bin/busybox head -c "\$CONTENT_LENGTH" >/dev/null
/bin/busybox sleep "\$S"
printf 'Content-Type: text/plain\r\n\r\n'
printf '%s (instance %s): slow %s %ss\n' "$GREETING" "\$HOSTNAME" "\$REQUEST_METHOD" "\$S"
CGI
  chmod 0755 "$R/www/cgi-bin/slow"
fi
[ -f "$R/www/cgi-bin/index.cgi" ] && chmod 0755 "$R/www/cgi-bin/index.cgi"
rmdir "$R/www/cgi-bin" 2>/dev/null || true

cat > "$R/app/start.sh" <<START
#!/bin/sh
# Serves /www with busybox httpd on \$PORT (default 8080).
VERSION=$VERSION
VARIANT=$VARIANT
PORT=\${PORT:-8080}
if [ "\$VARIANT" = crash ]; then
  echo "hello \$VERSION: fatal: cannot load configuration, exiting" >&2
  exit 3
fi
if [ "\$VARIANT" = broken ]; then
  echo "hello \$VERSION: error: database unreachable, serving errors" >&2
fi
ROOT=/www
# The root filesystem is read-only under kiln; a writable /tmp (tmpfs) lets us put the instance's
# name into the static page. The tmpfs is noexec, so everything else (cgi-bin) stays a symlink
# into /www. Applets are called by full path: the image has no /bin/mkdir and friends.
if [ -f /www/index.html ] && /bin/busybox mkdir -p /tmp/www 2>/dev/null; then
  for f in /www/*; do /bin/busybox ln -sf "\$f" /tmp/www/; done
  /bin/busybox rm -f /tmp/www/index.html
  echo "hello from kiln demo \$VERSION (instance \${HOSTNAME:-unknown})" > /tmp/www/index.html
  ROOT=/tmp/www
fi
echo "hello \$VERSION (\$VARIANT) listening on \${HOST:-*}:\$PORT, serving \$ROOT"
# HOST is set by kiln under host networking (listen on loopback only); bridge: all addresses.
exec /bin/busybox httpd -f -p "\${HOST:+\$HOST:}\$PORT" -h "\$ROOT"
START
