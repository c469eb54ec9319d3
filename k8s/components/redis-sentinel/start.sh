#!/bin/sh
# The Redis pods' one script (k8s/components/redis-sentinel):
#   start.sh redis      the server: a replica of the current master, or the master
#   start.sh sentinel   the sentinel: watches the current master
#   start.sh prestop    the server's preStop: a master hands over before it stops
#                       (a sentinel failover), then follows the new one
#
# Every address is a stable name (<pod>.redis-sentinel), never a pod IP, which changes
# when a pod is recreated: servers announce their names to their master, sentinels to
# each other and to clients (resolve-hostnames, announce-hostnames; Redis >= 6.2).
#
# The master is whatever the other pods' sentinels say it is. When none answers (the
# first start of the set, or all three restarted) pod 0 is the master. When they name
# this pod (it restarted, empty, before they noticed), its server waits for them to
# promote a replica and follows it: starting as an empty master would have the replicas
# copy the emptiness and no failover happen.
set -eu

action=${1:?usage: start.sh redis|sentinel|prestop}
service=redis-sentinel
me="${HOSTNAME:?}.$service"
master_name=${REDIS_SENTINEL_MASTER:?}
log() { echo "start.sh $action on $me: $*" >&2; }

# The master the other pods' sentinels name; empty when none answers.
current_master() {
  for i in 0 1 2; do
    peer="$service-$i.$service"
    [ "$peer" = "$me" ] && continue
    addr=$(timeout 3 redis-cli -h "$peer" -p 26379 --raw \
      sentinel get-master-addr-by-name "$master_name" 2>/dev/null | head -n 1) || true
    if [ -n "$addr" ]; then
      echo "$addr"
      return
    fi
  done
}

# A peer's sentinel, to ask for a failover; empty when none answers.
a_sentinel() {
  for i in 0 1 2; do
    peer="$service-$i.$service"
    [ "$peer" = "$me" ] && continue
    if timeout 3 redis-cli -h "$peer" -p 26379 ping >/dev/null 2>&1; then
      echo "$peer"
      return
    fi
  done
}

if [ "$action" = prestop ]; then
  [ "$(redis-cli role | head -n 1)" = master ] || exit 0
  sentinel=$(a_sentinel)
  [ -n "$sentinel" ] || exit 0
  log "handing the master over (sentinel failover through $sentinel)"
  redis-cli -h "$sentinel" -p 26379 sentinel failover "$master_name" >&2 || exit 0
  for _ in $(seq 1 20); do
    new=$(current_master)
    if [ -n "$new" ] && [ "$new" != "$me" ]; then
      # Follow it at once: clients still writing here get READONLY and reconnect to the
      # new master now, not when this server stops.
      log "master now $new"
      redis-cli replicaof "$new" 6379 >&2 || true
      exit 0
    fi
    sleep 1
  done
  exit 0
fi

master=$(current_master)
if [ -z "$master" ]; then
  master="$service-0.$service"
  log "no sentinel answers: $master is the master"
elif [ "$master" = "$me" ] && [ "$action" = redis ]; then
  log "the sentinels still name this pod the master: waiting for their failover"
  waited=0
  while [ "$master" = "$me" ] && [ "$waited" -lt 60 ]; do
    sleep 2
    waited=$((waited + 2))
    master=$(current_master)
    [ -n "$master" ] || master=$me
  done
fi
log "master is $master"

if [ "$action" = redis ]; then
  set -- --port 6379 --save "" --appendonly no --protected-mode no \
    --maxmemory "${REDIS_MAXMEMORY:-384mb}" --maxmemory-policy noeviction \
    --replica-announce-ip "$me"
  if [ "$master" != "$me" ]; then
    set -- "$@" --replicaof "$master" 6379
  fi
  exec redis-server "$@"
fi

# Sentinel rewrites its configuration as it learns: a fresh file in the pod's emptyDir.
conf=/data/sentinel.conf
cat >"$conf" <<CONF
port 26379
dir /data
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip $me
sentinel monitor $master_name $master 6379 2
sentinel down-after-milliseconds $master_name ${REDIS_SENTINEL_DOWN_AFTER_MS:-5000}
sentinel failover-timeout $master_name 10000
sentinel parallel-syncs $master_name 1
CONF
exec redis-server "$conf" --sentinel
