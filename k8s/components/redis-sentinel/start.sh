#!/bin/sh
# Start one container of a redis-sentinel pod: `start.sh redis` or `start.sh sentinel`.
# Every address is a stable name (<pod>.redis-sentinel), never a pod IP, which changes
# when a pod is recreated: servers announce their names to their master, sentinels to
# each other and to clients (resolve-hostnames, announce-hostnames; Redis >= 6.2).
#
# The master is whatever the sentinels of the other pods say it is; when none answers
# (the first start of the set, or all three restarted), pod 0 is the master and the others
# replicate it. So a restarted pod rejoins as a replica of the current master.
set -eu

role=${1:?usage: start.sh redis|sentinel}
service=redis-sentinel
me="${HOSTNAME:?}.$service"
master_name=${REDIS_SENTINEL_MASTER:?}

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
  echo "$service-0.$service"
}

master=$(current_master)
echo "start.sh $role on $me: master is $master" >&2

if [ "$role" = redis ]; then
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
sentinel failover-timeout $master_name 30000
sentinel parallel-syncs $master_name 1
CONF
exec redis-server "$conf" --sentinel
