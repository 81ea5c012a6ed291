#!/bin/bash
# redis1: Redis 7 with requirepass and a small maxmemory (noeviction, so filling it fails writes),
# bound to loopback and its bridge address, logging to the journal.
set -euo pipefail
: "${LAB_IP:?}" "${LAB_REDIS_PASSWORD:?}"

install -o redis -g redis -m 0640 /dev/null /etc/redis/lab.conf
cat > /etc/redis/lab.conf <<CONF
# Written by lab/provision/redis.sh (included last from redis.conf, so these settings win)
bind 127.0.0.1 ${LAB_IP}
protected-mode yes
requirepass ${LAB_REDIS_PASSWORD}
maxmemory 64mb
maxmemory-policy noeviction
save ""
appendonly no
logfile ""
CONF
grep -q '^include /etc/redis/lab.conf' /etc/redis/redis.conf || echo 'include /etc/redis/lab.conf' >> /etc/redis/redis.conf

systemctl enable redis-server >/dev/null 2>&1
systemctl restart redis-server
for _ in $(seq 1 40); do
  REDISCLI_AUTH="$LAB_REDIS_PASSWORD" redis-cli -h 127.0.0.1 ping 2>/dev/null | grep -q PONG && break
  sleep 0.25
done
REDISCLI_AUTH="$LAB_REDIS_PASSWORD" redis-cli -h 127.0.0.1 ping | grep -q PONG
echo "redis: ready on ${LAB_IP}:6379, maxmemory $(REDISCLI_AUTH="$LAB_REDIS_PASSWORD" redis-cli -h 127.0.0.1 config get maxmemory | tail -1)"
