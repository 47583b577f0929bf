#!/usr/bin/env bash
# Start the local Redis used by tests and the demo if it is not answering (see shared TOOLING notes).
set -euo pipefail
if redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
  exit 0
fi
if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-server missing: installing it with apt-get" >&2
  apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
fi
mkdir -p /var/lib/redis /var/log/redis
redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
  --dir /var/lib/redis --logfile /var/log/redis/ci.log
for _ in $(seq 1 50); do
  redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG && exit 0
  sleep 0.2
done
echo "Redis did not start; see /var/log/redis/ci.log" >&2
exit 1
