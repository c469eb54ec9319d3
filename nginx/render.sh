#!/bin/sh
# Render this directory into a ready-to-run nginx configuration, filled from the environment.
#
#   nginx/render.sh OUT_DIR          then: nginx -p OUT_DIR -c OUT_DIR/nginx.conf -e stderr
#
# Every `*.template` file has its ${UPPER_CASE} placeholders replaced (nginx's own $variables
# are left alone); other files are copied as they are. Plain POSIX sh and awk, so the same
# script runs on a developer's machine (`make stack`) and inside an nginx container image.
#
#   variable                  default             meaning
#   NGINX_PORT                8080                port nginx listens on
#   NGINX_BIND                (all interfaces)    address to listen on, e.g. 127.0.0.1
#   CHAT_WEB_UPSTREAM         web:8000            gunicorn address(es), "host:port[,host:port…]"
#   CHAT_WS_UPSTREAM          ws:8000             daphne replicas, "host:port[,host:port…]"
#   CHAT_STATIC_ROOT          /srv/static         collectstatic's output (STATIC_ROOT)
#   NGINX_CLIENT_MAX_BODY_SIZE 1m                 largest request body
#   NGINX_WS_READ_TIMEOUT     3600s               idle time before a proxied WebSocket is cut
#   NGINX_FORWARDED_PROTO     $scheme             X-Forwarded-Proto sent on; use
#                                                 $http_x_forwarded_proto only behind a TLS
#                                                 proxy that always sets it
#   NGINX_ACCESS_LOG          /dev/stdout         JSON access log (with upstream timings)
#   NGINX_ERROR_LOG           stderr
#   NGINX_RUN_DIR             /tmp/nginx          pid file and temp files (writable)
#   NGINX_MIME_TYPES          /etc/nginx/mime.types
#   NGINX_WORKER_PROCESSES    auto
#   NGINX_WORKER_CONNECTIONS  4096
set -eu

die() {
  echo "nginx/render.sh: $*" >&2
  exit 2
}

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-}
[ -n "$out" ] || die "usage: nginx/render.sh OUT_DIR"

: "${NGINX_PORT:=8080}"
: "${NGINX_BIND:=}"
: "${CHAT_WEB_UPSTREAM:=web:8000}"
: "${CHAT_WS_UPSTREAM:=ws:8000}"
: "${CHAT_STATIC_ROOT:=/srv/static}"
: "${NGINX_CLIENT_MAX_BODY_SIZE:=1m}"
: "${NGINX_WS_READ_TIMEOUT:=3600s}"
: "${NGINX_FORWARDED_PROTO:=\$scheme}"
: "${NGINX_ACCESS_LOG:=/dev/stdout}"
: "${NGINX_ERROR_LOG:=stderr}"
: "${NGINX_RUN_DIR:=/tmp/nginx}"
: "${NGINX_MIME_TYPES:=/etc/nginx/mime.types}"
: "${NGINX_WORKER_PROCESSES:=auto}"
: "${NGINX_WORKER_CONNECTIONS:=4096}"

case $NGINX_PORT in
  '' | *[!0-9]*) die "NGINX_PORT must be a port number, not '$NGINX_PORT'." ;;
esac
[ "$NGINX_PORT" -ge 1 ] && [ "$NGINX_PORT" -le 65535 ] || die "NGINX_PORT $NGINX_PORT is out of range."
case $NGINX_BIND in
  *[!0-9A-Za-z.:_\[\]-]*) die "NGINX_BIND must be an address such as 127.0.0.1, not '$NGINX_BIND'." ;;
esac
NGINX_LISTEN=${NGINX_BIND:+$NGINX_BIND:}$NGINX_PORT
case $NGINX_WORKER_CONNECTIONS in
  '' | *[!0-9]*) die "NGINX_WORKER_CONNECTIONS must be a number." ;;
esac
case $NGINX_FORWARDED_PROTO in
  '$scheme' | '$http_x_forwarded_proto' | http | https) ;;
  *) die "NGINX_FORWARDED_PROTO must be \$scheme, \$http_x_forwarded_proto, http or https." ;;
esac
case $NGINX_CLIENT_MAX_BODY_SIZE in
  *[!0-9kKmMgG]* | '') die "NGINX_CLIENT_MAX_BODY_SIZE must look like 1m or 512k." ;;
esac
case $NGINX_WS_READ_TIMEOUT in
  *[!0-9smhd]* | '') die "NGINX_WS_READ_TIMEOUT must look like 3600s or 1h." ;;
esac
case $CHAT_STATIC_ROOT in
  /*) ;;
  *) die "CHAT_STATIC_ROOT must be an absolute path, not '$CHAT_STATIC_ROOT'." ;;
esac

# "a:1, b:2" -> one `server a:1 …;` line per address, for an upstream block.
servers() {
  name=$1
  list=$2
  lines=""
  for addr in $(printf '%s' "$list" | tr ',' ' '); do
    case $addr in
      *[!A-Za-z0-9.:_\[\]-]* | :* | *:) die "$name: '$addr' is not a host:port address." ;;
      *:*) ;;
      *) die "$name: '$addr' has no port (host:port)." ;;
    esac
    lines="${lines}    server $addr max_fails=1 fail_timeout=5s;
"
  done
  [ -n "$lines" ] || die "$name is empty: give at least one host:port."
  printf '%s' "$lines"
}

CHAT_WEB_SERVERS=$(servers CHAT_WEB_UPSTREAM "$CHAT_WEB_UPSTREAM")
CHAT_WS_SERVERS=$(servers CHAT_WS_UPSTREAM "$CHAT_WS_UPSTREAM")
CHAT_STATIC_ROOT=${CHAT_STATIC_ROOT%/}
export NGINX_LISTEN CHAT_WEB_SERVERS CHAT_WS_SERVERS CHAT_STATIC_ROOT NGINX_CLIENT_MAX_BODY_SIZE \
  NGINX_WS_READ_TIMEOUT NGINX_FORWARDED_PROTO NGINX_ACCESS_LOG NGINX_ERROR_LOG NGINX_RUN_DIR \
  NGINX_MIME_TYPES NGINX_WORKER_PROCESSES NGINX_WORKER_CONNECTIONS
VARS="NGINX_LISTEN CHAT_WEB_SERVERS CHAT_WS_SERVERS CHAT_STATIC_ROOT NGINX_CLIENT_MAX_BODY_SIZE \
NGINX_WS_READ_TIMEOUT NGINX_FORWARDED_PROTO NGINX_ACCESS_LOG NGINX_ERROR_LOG NGINX_RUN_DIR \
NGINX_MIME_TYPES NGINX_WORKER_PROCESSES NGINX_WORKER_CONNECTIONS"

# Literal replacement of ${NAME} for the names above; anything else ${UPPER} is an error.
render() {
  awk -v vars="$VARS" '
    BEGIN { n = split(vars, names, " ") }
    {
      line = $0
      for (i = 1; i <= n; i++) {
        if (names[i] == "") continue
        key = "${" names[i] "}"
        done = ""
        while ((pos = index(line, key)) > 0) {
          done = done substr(line, 1, pos - 1) ENVIRON[names[i]]
          line = substr(line, pos + length(key))
        }
        line = done line
      }
      if (match(line, /\$\{[A-Z][A-Z0-9_]*\}/)) {
        printf "%s:%d: unknown placeholder %s\n", FILENAME, FNR, substr(line, RSTART, RLENGTH) > "/dev/stderr"
        bad = 1
      }
      print line
    }
    END { exit bad }
  ' "$1" >"$2" || die "could not render $1"
}

mkdir -p "$out/conf.d" "$out/snippets" "$NGINX_RUN_DIR" 2>/dev/null \
  || mkdir -p "$out/conf.d" "$out/snippets"
cd "$here"
for src in nginx.conf.template conf.d/*.conf* snippets/*.conf*; do
  [ -e "$src" ] || continue
  case $src in
    *.template) render "$src" "$out/${src%.template}" ;;
    *) cp "$src" "$out/$src" ;;
  esac
done
