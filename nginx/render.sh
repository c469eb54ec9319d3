#!/bin/sh
# Render this directory into a ready-to-run nginx configuration, filled from the environment.
#
#   nginx/render.sh OUT_DIR          then: nginx -p OUT_DIR -c OUT_DIR/nginx.conf -e stderr
#
# Every `*.template` file has its ${UPPER_CASE} placeholders replaced (nginx's own $variables
# are left alone); other files are copied as they are. In a template, the lines between
# `#@if NAME` and `#@end` are kept only when NAME (one of the rendered values) is not empty.
# Plain POSIX sh and awk, so the same script runs on a developer's machine (`make stack`) and
# inside an nginx container image.
#
#   variable                  default             meaning
#   NGINX_PORT                8080                port nginx listens on
#   NGINX_BIND                (all interfaces)    address to listen on, e.g. 127.0.0.1
#   CHAT_WEB_UPSTREAM         web:8000            gunicorn address(es), "host:port[,host:port…]"
#   CHAT_WS_UPSTREAM          ws:8000             daphne replicas, "host:port[,host:port…]"
#   CHAT_STATIC_ROOT          /srv/static         collected static files, if this host has
#                                                 them; whatever is missing there is fetched
#                                                 from the web tier (see /static/ below)
#   NGINX_CLIENT_MAX_BODY_SIZE 1m                 largest request body
#   NGINX_WS_READ_TIMEOUT     3600s               idle time before a proxied WebSocket is cut
#   NGINX_FORWARDED_PROTO     $scheme             X-Forwarded-Proto sent on; use
#                                                 $http_x_forwarded_proto only behind a TLS
#                                                 proxy that always sets it
#   NGINX_REAL_IP_FROM        (empty)             comma-separated addresses or CIDRs of the
#                                                 trusted proxies in front (Ingress controller,
#                                                 load balancer): the client address is then
#                                                 taken from their X-Forwarded-For
#                                                 (real_ip_recursive). Empty: nginx is the edge
#                                                 and the peer's address is the client's
#   NGINX_RESOLVER            (empty)             "": upstream names are resolved once, when
#                                                 nginx starts. "auto": the first nameserver of
#                                                 NGINX_RESOLV_CONF (Docker's 127.0.0.11,
#                                                 kube-dns, NodeLocal DNSCache), or an address:
#                                                 an upstream given as ONE name:port is then
#                                                 looked up again at run time, so every address
#                                                 of the name gets traffic and recreated, added
#                                                 or removed containers and pods are found.
#                                                 nginx's resolver ignores search domains: in
#                                                 Kubernetes give an FQDN
#                                                 (ws-pods.NAMESPACE.svc.cluster.local:8000)
#   NGINX_RESOLVER_VALID      5s                  how long an answer is used before asking again
#   NGINX_RESOLV_CONF         /etc/resolv.conf    where "auto" looks
#   NGINX_ACCESS_LOG          /dev/stdout         JSON access log (with upstream timings)
#   NGINX_ERROR_LOG           stderr
#   NGINX_RUN_DIR             /tmp/nginx          pid file and temp files (writable)
#   NGINX_MIME_TYPES          /etc/nginx/mime.types
#   NGINX_WORKER_PROCESSES    auto
#   NGINX_CONNECTION_BUDGET   (empty)             WebSockets this nginx is sized for: sets
#                                                 worker_connections to 2 × budget + 1024 (a
#                                                 proxied socket is two connections, and one
#                                                 worker may get them all)
#   NGINX_WORKER_CONNECTIONS  4096, or from the budget   an explicit value wins over the budget
#   NGINX_WS_CONN_PER_ADDRESS (empty: off)        open WebSockets per client address (limit_conn)
#   NGINX_WS_RATE             (empty: off)        WebSocket handshakes per client address, e.g.
#                                                 10r/s (limit_req), bursts of NGINX_WS_BURST (40)
#   NGINX_AUTH_RATE           (empty: off)        login and signup POSTs per client address,
#                                                 e.g. 20r/m, bursts of NGINX_AUTH_BURST (10)
#                             Past any of these nginx answers 429: a first line in front of the
#                             app's own, precise limits (docs/operations.md, "Abuse limits").
#                             The nginx image turns them on; `make stack` leaves them off.
#
# worker_rlimit_nofile is always worker_connections + 1024 (each connection is a file
# descriptor, plus logs and listeners), so the connection count is never capped by the
# container's default open-file limit.
#
# /static/: the file under CHAT_STATIC_ROOT if it is there (`make stack`), else the web tier,
# which serves the collected files of its own release (WhiteNoise). The nginx image has no
# static files, so an app release needs no new nginx; while old and new web versions run side
# by side, a hashed name that one web peer lacks is asked of the next one.
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
: "${NGINX_REAL_IP_FROM:=}"
: "${NGINX_RESOLVER:=}"
: "${NGINX_RESOLVER_VALID:=5s}"
: "${NGINX_RESOLV_CONF:=/etc/resolv.conf}"
: "${NGINX_ACCESS_LOG:=/dev/stdout}"
: "${NGINX_ERROR_LOG:=stderr}"
: "${NGINX_RUN_DIR:=/tmp/nginx}"
: "${NGINX_MIME_TYPES:=/etc/nginx/mime.types}"
: "${NGINX_WORKER_PROCESSES:=auto}"
: "${NGINX_CONNECTION_BUDGET:=}"
: "${NGINX_WORKER_CONNECTIONS:=}"
: "${NGINX_WS_CONN_PER_ADDRESS:=}"
: "${NGINX_WS_RATE:=}"
: "${NGINX_WS_BURST:=40}"
: "${NGINX_AUTH_RATE:=}"
: "${NGINX_AUTH_BURST:=10}"

case $NGINX_PORT in
  '' | *[!0-9]*) die "NGINX_PORT must be a port number, not '$NGINX_PORT'." ;;
esac
[ "$NGINX_PORT" -ge 1 ] && [ "$NGINX_PORT" -le 65535 ] || die "NGINX_PORT $NGINX_PORT is out of range."
case $NGINX_BIND in
  *[!0-9A-Za-z.:_\[\]-]*) die "NGINX_BIND must be an address such as 127.0.0.1, not '$NGINX_BIND'." ;;
esac
NGINX_LISTEN=${NGINX_BIND:+$NGINX_BIND:}$NGINX_PORT
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

# --- connections ---------------------------------------------------------------------------
# (Length checks first: the arithmetic then stays far below the shell's integer range.)
case $NGINX_CONNECTION_BUDGET in
  *[!0-9]*) die "NGINX_CONNECTION_BUDGET must be a number of WebSockets, not '$NGINX_CONNECTION_BUDGET'." ;;
esac
if [ -n "$NGINX_CONNECTION_BUDGET" ]; then
  [ ${#NGINX_CONNECTION_BUDGET} -le 7 ] && [ "$NGINX_CONNECTION_BUDGET" -ge 1 ] \
    || die "NGINX_CONNECTION_BUDGET $NGINX_CONNECTION_BUDGET is out of range (1 to 9999999)."
fi
case $NGINX_WORKER_CONNECTIONS in
  *[!0-9]*) die "NGINX_WORKER_CONNECTIONS must be a number, not '$NGINX_WORKER_CONNECTIONS'." ;;
  '')
    if [ -n "$NGINX_CONNECTION_BUDGET" ]; then
      NGINX_WORKER_CONNECTIONS=$((2 * NGINX_CONNECTION_BUDGET + 1024))
    else
      NGINX_WORKER_CONNECTIONS=4096
    fi
    ;;
esac
[ ${#NGINX_WORKER_CONNECTIONS} -le 8 ] && [ "$NGINX_WORKER_CONNECTIONS" -ge 64 ] \
  || die "NGINX_WORKER_CONNECTIONS $NGINX_WORKER_CONNECTIONS is out of range (64 to 99999999)."
NGINX_WORKER_RLIMIT_NOFILE=$((NGINX_WORKER_CONNECTIONS + 1024))

# --- per-address limits (first line; the app counts precisely) -------------------------------
number() {  # NAME VALUE: a positive count of at most 7 digits, or die
  case $2 in
    '' | *[!0-9]* | 0) die "$1 must be a positive number, not '$2'." ;;
  esac
  [ ${#2} -le 7 ] || die "$1 $2 is out of range (1 to 9999999)."
}
rate() {  # NAME VALUE: empty, or nginx's rate form (10r/s, 20r/m), or die
  [ -n "$2" ] || return 0
  count=${2%r/[sm]}
  case $count in
    "$2" | '' | *[!0-9]* | 0) die "$1 must look like 10r/s or 20r/m, not '$2'." ;;
  esac
}
[ -z "$NGINX_WS_CONN_PER_ADDRESS" ] || number NGINX_WS_CONN_PER_ADDRESS "$NGINX_WS_CONN_PER_ADDRESS"
rate NGINX_WS_RATE "$NGINX_WS_RATE"
rate NGINX_AUTH_RATE "$NGINX_AUTH_RATE"
number NGINX_WS_BURST "$NGINX_WS_BURST"
number NGINX_AUTH_BURST "$NGINX_AUTH_BURST"

# --- trusted proxies in front ------------------------------------------------------------
NGINX_REAL_IP_LINES=""
for cidr in $(printf '%s' "$NGINX_REAL_IP_FROM" | tr ',' ' '); do
  case $cidr in
    *[!0-9A-Fa-f.:/]* | */*/* | /* | */ | */*[!0-9]*) ;;
    *[0-9]*) NGINX_REAL_IP_LINES="${NGINX_REAL_IP_LINES}    set_real_ip_from $cidr;
"
      continue ;;
  esac
  die "NGINX_REAL_IP_FROM: '$cidr' is not an address or CIDR such as 10.0.0.0/8."
done
NGINX_REAL_IP_LINES=$(printf '%s' "$NGINX_REAL_IP_LINES")  # no trailing newline
[ -z "$NGINX_REAL_IP_FROM" ] || [ -n "$NGINX_REAL_IP_LINES" ] \
  || die "NGINX_REAL_IP_FROM has no address: give CIDRs such as 10.0.0.0/8, or leave it empty."

# --- name resolution -------------------------------------------------------------------------
case ${NGINX_RESOLVER_VALID%[smh]} in
  '' | *[!0-9]*) die "NGINX_RESOLVER_VALID must look like 5s or 1m, not '$NGINX_RESOLVER_VALID'." ;;
esac
case $NGINX_RESOLVER in
  '') NGINX_RESOLVER_ADDRESS="" ;;
  auto)
    NGINX_RESOLVER_ADDRESS=$(awk '$1 == "nameserver" { print $2; exit }' "$NGINX_RESOLV_CONF" 2>/dev/null || true)
    [ -n "$NGINX_RESOLVER_ADDRESS" ] \
      || die "NGINX_RESOLVER=auto found no nameserver in $NGINX_RESOLV_CONF: give the DNS server's address."
    ;;
  *) NGINX_RESOLVER_ADDRESS=$NGINX_RESOLVER ;;
esac
case $NGINX_RESOLVER_ADDRESS in
  *[!0-9A-Za-z.:_\[\]-]*) die "NGINX_RESOLVER must be auto or one DNS server address, not '$NGINX_RESOLVER_ADDRESS'." ;;
  \[*) ;;
  *:*:*) NGINX_RESOLVER_ADDRESS="[$NGINX_RESOLVER_ADDRESS]" ;;  # nginx wants IPv6 in brackets
esac

# --- upstreams -------------------------------------------------------------------------------
# "a:1, b:2" -> one `server a:1 <params>;` line per address, for an upstream block.
servers() {
  name=$1
  list=$2
  params=$3
  lines=""
  for addr in $(printf '%s' "$list" | tr ',' ' '); do
    case $addr in
      *[!A-Za-z0-9.:_\[\]-]* | :* | *:) die "$name: '$addr' is not a host:port address." ;;
      *:*) ;;
      *) die "$name: '$addr' has no port (host:port)." ;;
    esac
    lines="${lines}    server $addr $params;
"
  done
  [ -n "$lines" ] || die "$name is empty: give at least one host:port."
  printf '%s' "$lines"
}

# With a resolver, one name:port (not an address) is looked up at run time: prints it. Else
# nothing (the tier gets an upstream block, its names resolved once at start).
run_time_name() {
  [ -n "$NGINX_RESOLVER_ADDRESS" ] || return 0
  list=$(printf '%s' "$1" | tr -d ' ')
  case $list in
    *,* | \[*) return 0 ;;                   # several addresses, or IPv6
  esac
  case ${list%:*} in
    *[!0-9.]*) printf '%s' "$list" ;;       # a name (an IPv4 address has only digits and dots)
  esac
}

CHAT_WEB_SERVERS=$(servers CHAT_WEB_UPSTREAM "$CHAT_WEB_UPSTREAM" "max_fails=1 fail_timeout=5s")
# No passive health check on the ws tier: a replica that refuses (draining, not started
# yet, or at its admission limit: a 503 before the upgrade) is skipped at no cost by
# proxy_next_upstream, while marking it down would outlast its recovery — in a drain or join storm every replica can be
# marked at once, and nginx then answers "no live upstreams" while they are all healthy.
CHAT_WS_SERVERS=$(servers CHAT_WS_UPSTREAM "$CHAT_WS_UPSTREAM" "max_fails=0")
# $chat_web_peer / $chat_ws_peer (conf.d/chat.conf): the upstream block, or the name.
CHAT_WEB_PEER=$(run_time_name "$CHAT_WEB_UPSTREAM")
CHAT_WS_PEER=$(run_time_name "$CHAT_WS_UPSTREAM")
[ -z "$CHAT_WEB_PEER" ] || CHAT_WEB_SERVERS=""
[ -z "$CHAT_WS_PEER" ] || CHAT_WS_SERVERS=""
: "${CHAT_WEB_PEER:=chat_web}"
: "${CHAT_WS_PEER:=chat_ws}"
CHAT_STATIC_ROOT=${CHAT_STATIC_ROOT%/}

VARS="NGINX_LISTEN CHAT_WEB_SERVERS CHAT_WS_SERVERS CHAT_WEB_PEER CHAT_WS_PEER CHAT_STATIC_ROOT \
NGINX_CLIENT_MAX_BODY_SIZE NGINX_WS_READ_TIMEOUT NGINX_FORWARDED_PROTO NGINX_REAL_IP_LINES \
NGINX_RESOLVER_ADDRESS NGINX_RESOLVER_VALID NGINX_ACCESS_LOG NGINX_ERROR_LOG NGINX_RUN_DIR \
NGINX_MIME_TYPES NGINX_WORKER_PROCESSES NGINX_WORKER_CONNECTIONS NGINX_WORKER_RLIMIT_NOFILE \
NGINX_WS_CONN_PER_ADDRESS NGINX_WS_RATE NGINX_WS_BURST NGINX_AUTH_RATE NGINX_AUTH_BURST"
# shellcheck disable=SC2086 # the names, one word each
export $VARS

# Literal replacement of ${NAME} for the names above; anything else ${UPPER} is an error.
# `#@if NAME` … `#@end` keeps its lines only when NAME is not empty (no nesting).
render() {
  awk -v vars="$VARS" '
    BEGIN {
      n = split(vars, names, " ")
      for (i = 1; i <= n; i++) known[names[i]] = 1
    }
    function fail(what) {
      printf "%s:%d: %s\n", FILENAME, FNR, what > "/dev/stderr"
      bad = 1
    }
    $1 == "#@if" {
      if (!($2 in known)) fail("unknown #@if " $2)
      if (inside) fail("#@if inside #@if")
      inside = 1
      skip = (ENVIRON[$2] == "")
      next
    }
    $1 == "#@end" {
      if (!inside) fail("#@end without #@if")
      inside = 0
      skip = 0
      next
    }
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
      if (match(line, /\$\{[A-Z][A-Z0-9_]*\}/)) fail("unknown placeholder " substr(line, RSTART, RLENGTH))
      if (!skip) print line
    }
    END {
      if (inside) fail("#@if without #@end")
      exit bad
    }
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
