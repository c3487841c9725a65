#!/usr/bin/env bash
# The soak run behind RELIABILITY.md: herald on Redis (AOF, appendfsync
# always, as in docker-compose.yml) for DURATION, CLIENTS per-user clients,
# RATE provider webhooks per second through the ingress, and a reconnect
# storm every STORM_EVERY that drops STORM_FRACTION of the clients at once;
# they reconnect and resume with since. The server's RSS, heap and
# goroutines are sampled every SAMPLE_EVERY; the JSON result (soak.json
# in OUT) has the timeline, the memory trend after WARMUP, and the
# delivery accounting (nothing lost, duplicated or skipped).
#
#   cmd/herald-bench/soak.sh [OUT]
#
# Environment: DURATION (30m), CLIENTS (5000), RATE (200), STORM_EVERY
# (2m), STORM_FRACTION (0.25), SAMPLE_EVERY (30s), WARMUP (5m), PORT
# (18490), REDIS_PORT (18491).
set -euo pipefail
cd "$(dirname "$0")/../.."

OUT=${1:-$(mktemp -d /tmp/herald-soak.XXXXXX)}
DURATION=${DURATION:-30m}
CLIENTS=${CLIENTS:-5000}
RATE=${RATE:-200}
STORM_EVERY=${STORM_EVERY:-2m}
STORM_FRACTION=${STORM_FRACTION:-0.25}
SAMPLE_EVERY=${SAMPLE_EVERY:-30s}
WARMUP=${WARMUP:-5m}
PORT=${PORT:-18490}
REDIS_PORT=${REDIS_PORT:-18491}
mkdir -p "$OUT/bin" "$OUT/redis"
go build -o "$OUT/bin/herald" ./cmd/herald
go build -o "$OUT/bin/herald-bench" ./cmd/herald-bench

export HERALD_JWT_SECRET=soak-jwt-secret-0123456789abcdef
export HERALD_API_KEY=soak-api-key
export HERALD_BENCH_PROVIDER_SECRET=soak-provider-secret
mapfile -t PROVIDER_ENV < <("$OUT/bin/herald-bench" provider-env)

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly yes --appendfsync always \
  --protected-mode no --loglevel warning --dir "$OUT/redis" >"$OUT/redis.log" 2>&1 &
redis_pid=$!
pids+=("$redis_pid")
until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.1; done

env "${PROVIDER_ENV[@]}" HERALD_ADDR="127.0.0.1:$PORT" HERALD_REDIS_URL="redis://127.0.0.1:$REDIS_PORT" \
  HERALD_LOG_LEVEL=warn "$OUT/bin/herald" >"$OUT/herald.log" 2>&1 &
server_pid=$!
pids+=("$server_pid")
until curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null; do sleep 0.1; done

echo "soak: $CLIENTS clients, $RATE webhooks/s for $DURATION, results in $OUT" >&2
"$OUT/bin/herald-bench" -url "http://127.0.0.1:$PORT" -pid "$server_pid" -redis-pid "$redis_pid" \
  -label herald-redis -testdata testdata -scenario soak -clients "$CLIENTS" -per-source 500 \
  -rate "$RATE" -duration "$DURATION" -storm-every "$STORM_EVERY" -storm-fraction "$STORM_FRACTION" \
  -sample-every "$SAMPLE_EVERY" -warmup "$WARMUP" -drain 30s \
  >"$OUT/soak.json" 2> >(tee "$OUT/soak.err" >&2)
echo "soak: deliveries and memory after the warmup:" >&2
sed -n '/"deliveries"/,/}/p; /"memory"/,/}/p' "$OUT/soak.json"
