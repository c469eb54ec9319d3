#!/bin/sh
# Upgrade the app containers of the compose stack one at a time, with no outage: the new
# release's migrations first, then each web and ws container replaced by one of the image
# and settings the compose file now names.
#
#   compose/rolling-upgrade.sh [SERVICE…]
#   compose/rolling-upgrade.sh COMPOSE COMMAND… -- [SERVICE…]
#
#   e.g. docker compose -f compose/compose.yaml build   (or pull), then
#        compose/rolling-upgrade.sh
#        compose/rolling-upgrade.sh docker-compose -f compose/compose.yaml -- ws
#
# SERVICE: `migrate` (run once, must exit 0) or a long-running service; default
# "migrate web ws". The compose command defaults to `docker compose -f compose/compose.yaml`
# (`docker-compose` where the plugin is missing); give your own with its -f, --env-file and
# --project-name options when the stack was started with them. Works with Docker Compose v2
# and docker-compose 1.29.
#
# For each running container of a service, oldest first:
#   1. `up -d --no-deps --no-recreate --scale SERVICE=N+1`: one more container, of the new
#      image, beside the N running ones (the old ones are left as they are);
#   2. wait until Docker calls it healthy (its /readyz), ROLLING_TIMEOUT seconds at most;
#      if it is not, remove it and stop: the old containers still serve;
#   3. `docker stop` one old container: SIGTERM, so daphne closes its WebSockets with 1012
#      (clients reconnect through nginx to another replica and resume where they were) and
#      gunicorn finishes its requests; ROLLING_STOP_TIMEOUT seconds before SIGKILL;
#   4. remove it, and go on with the next.
# nginx finds the new containers and stops using the old ones by itself (it asks Docker's DNS
# again every few seconds: NGINX_RESOLVER=auto), so it is not restarted. A plain `up -d`
# afterwards has nothing to change. nginx's own image or settings changed? Recreate it last,
# `… up -d --no-deps nginx`, which closes every WebSocket once (clients resume).
#
#   ROLLING_TIMEOUT        180   seconds for a new container to become healthy
#   ROLLING_STOP_TIMEOUT   35    seconds an old container gets to drain (stop_grace_period)
set -eu

say() { echo "rolling-upgrade: $*" >&2; }
die() {
  say "$*"
  exit 1
}

timeout=${ROLLING_TIMEOUT:-180}
stop_timeout=${ROLLING_STOP_TIMEOUT:-35}
case $timeout$stop_timeout in
  *[!0-9]*) die "ROLLING_TIMEOUT and ROLLING_STOP_TIMEOUT must be numbers of seconds." ;;
esac

# Split the arguments at `--`: the compose command before it, services after it.
services=""
split=""
for arg do
  shift
  if [ -n "$split" ]; then
    services="$services $arg"
  elif [ "$arg" = -- ]; then
    split=1
  else
    set -- "$@" "$arg"
  fi
done
if [ -z "$split" ]; then
  services="$*"
  here=$(cd "$(dirname "$0")" && pwd)
  if docker compose version >/dev/null 2>&1; then
    set -- docker compose -f "$here/compose.yaml"
  else
    set -- docker-compose -f "$here/compose.yaml"
  fi
fi
[ $# -gt 0 ] || die "no compose command before --"
: "${services:=migrate web ws}"

# The compose command, quoted once, so that functions can run it.
DC=""
for arg do
  DC="$DC '$(printf '%s' "$arg" | sed "s/'/'\\\\''/g")'"
done
dc() { eval "$DC \"\$@\""; }

# Running containers of a service (compose 1.29's `ps` also lists stopped ones).
running() {
  for id in $(dc ps -q "$1"); do
    if [ "$(docker inspect --format '{{.State.Running}}' "$id" 2>/dev/null)" = true ]; then
      echo "$id"
    fi
  done
}

# healthy, or running for a service without a health check; anything else as it is.
state() {
  docker inspect --format \
    '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$1" 2>/dev/null \
    || echo gone
}

wait_healthy() {
  deadline=$(($(date +%s) + timeout))
  while :; do
    case $(state "$1") in
      healthy | running) return 0 ;;
      unhealthy | exited | dead | gone) return 1 ;;
    esac
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 2
  done
}

short() { printf '%.12s' "$1"; }

roll() {
  svc=$1
  old=$(running "$svc")
  if [ -z "$old" ]; then
    say "$svc: no running container; starting it"
    dc up -d --no-deps "$svc"
    return 0
  fi
  count=$(echo "$old" | wc -l | tr -d ' ')
  # Oldest first: the order their containers were created in.
  # shellcheck disable=SC2086 # ids, one word each
  old=$(docker inspect --format '{{.Created}} {{.Id}}' $old | sort | cut -d' ' -f2)
  say "$svc: replacing $count container(s), one at a time"
  for id in $old; do
    before=$(dc ps -q "$svc")
    dc up -d --no-deps --no-recreate --scale "$svc=$((count + 1))" "$svc"
    new=""
    for cid in $(running "$svc"); do
      case " $(echo "$before" | tr '\n' ' ') " in
        *" $cid "*) ;;
        *) new="$new $cid" ;;
      esac
    done
    # shellcheck disable=SC2086 # ids, one word each
    set -- $new
    [ $# -eq 1 ] || die "$svc: expected one new container, found $# ($new)"
    new=$1
    say "$svc: $(short "$new") started, waiting until it is healthy"
    if ! wait_healthy "$new"; then
      say "$svc: $(short "$new") is $(state "$new") after ${timeout}s; removing it (the old containers keep serving)"
      docker stop --time "$stop_timeout" "$new" >/dev/null 2>&1 || true
      docker rm "$new" >/dev/null 2>&1 || true
      exit 1
    fi
    say "$svc: $(short "$new") healthy; stopping $(short "$id") (SIGTERM, it drains)"
    docker stop --time "$stop_timeout" "$id" >/dev/null
    docker rm "$id" >/dev/null
  done
  say "$svc: done"
}

for svc in $services; do
  if [ "$svc" = migrate ]; then
    say "migrate: running the migrations of the new release"
    dc run --rm -T --no-deps migrate || die "migrate failed: nothing was replaced"
  else
    roll "$svc"
  fi
done
