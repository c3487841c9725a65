#!/usr/bin/env bash
# The benchmark suite behind BENCHMARKS.md: every scenario against herald on
# the embedded broker, herald on Redis and the bare floor, RUNS times,
# interleaved so that noise from other work on the machine falls on all of
# them alike. Every run gets a fresh server process on 127.0.0.1; Redis is
# flushed before each run on it. One JSON result per run goes to OUT, and
# the medians are printed at the end (herald-bench summarize OUT).
# centrifuge-redis is the open-source peer (./peer: the Centrifuge library
# on Redis, history and recovery on), driven with -protocol centrifuge.
#
#   cmd/herald-bench/suite.sh [OUT]
#
# Environment: RUNS (3), SCENARIOS ("idle fanout peruser-api
# peruser-ingress resume"), SERVERS ("herald-embedded herald-redis floor
# floor-redis centrifuge-redis"),
# IDLE_CLIENTS (15000), IDLE_SETTLE (60s: two rounds of pings), DURATION
# (30s), PERUSER_RATES ("1000": webhooks or publications per second of the
# peruser scenarios; several run each of them at every rate, to tell what a
# webhook costs at the margin from what the process costs per second at
# any load), PORT (18480), REDIS_PORT (18481), LOG_LEVEL (herald's: warn;
# at info it logs a line per webhook and publication). BASE_REV, a git revision, adds
# herald as it was there (base-embedded, base-redis) to the same runs, to
# see what a change bought.
set -euo pipefail
cd "$(dirname "$0")/../.."

OUT=${1:-$(mktemp -d /tmp/herald-bench.XXXXXX)}
RUNS=${RUNS:-3}
SCENARIOS=${SCENARIOS:-idle fanout peruser-api peruser-ingress resume}
SERVERS=${SERVERS:-herald-embedded herald-redis floor floor-redis centrifuge-redis}
IDLE_CLIENTS=${IDLE_CLIENTS:-15000}
IDLE_SETTLE=${IDLE_SETTLE:-60s}
DURATION=${DURATION:-30s}
PERUSER_RATES=${PERUSER_RATES:-1000}
PORT=${PORT:-18480}
LOG_LEVEL=${LOG_LEVEL:-warn}
REDIS_PORT=${REDIS_PORT:-18481}
mkdir -p "$OUT/bin"
go build -o "$OUT/bin/herald" ./cmd/herald
go build -o "$OUT/bin/herald-bench" ./cmd/herald-bench
go build -o "$OUT/bin/floor" ./cmd/herald-bench/floor
if [[ " $SERVERS " == *" centrifuge-redis "* ]]; then
  (cd cmd/herald-bench/peer && go build -o "$OUT/bin/peer" .)
fi
if [ -n "${BASE_REV:-}" ]; then
  base_src=$(mktemp -d)
  git archive "$BASE_REV" | tar -x -C "$base_src"
  (cd "$base_src" && go build -o "$OUT/bin/herald-base" ./cmd/herald)
  rm -rf "$base_src"
  SERVERS="$SERVERS base-embedded base-redis"
fi

export HERALD_JWT_SECRET=bench-jwt-secret-0123456789abcdef
export HERALD_API_KEY=bench-api-key
export HERALD_BENCH_PROVIDER_SECRET=bench-provider-secret
mapfile -t PROVIDER_ENV < <("$OUT/bin/herald-bench" provider-env)

server_pid=""
redis_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null || true
}
trap cleanup EXIT

wait_for() { # URL: until it answers below 500, at most 15 s
  for _ in $(seq 150); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "$1" || true)
    [ "$code" != 000 ] && [ "$code" -lt 500 ] && return 0
    sleep 0.1
  done
  echo "suite: $1 does not answer" >&2
  return 1
}

if [[ " $SERVERS " == *"-redis "* ]]; then
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --protected-mode no --loglevel warning --dir "$OUT" >>"$OUT/redis.log" 2>&1 &
  redis_pid=$!
  until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.1; done
fi

start_server() { # NAME
  case $1 in
  floor | floor-redis)
    local redis_args=()
    if [ "$1" = floor-redis ]; then
      redis-cli -p "$REDIS_PORT" flushall >/dev/null
      redis_args=(-redis "127.0.0.1:$REDIS_PORT")
    fi
    "$OUT/bin/floor" -addr "127.0.0.1:$PORT" "${redis_args[@]}" >>"$OUT/floor.log" 2>&1 &
    server_pid=$!
    wait_for "http://127.0.0.1:$PORT/v1/publish"
    ;;
  centrifuge-redis)
    redis-cli -p "$REDIS_PORT" flushall >/dev/null
    PEER_JWT_SECRET=$HERALD_JWT_SECRET PEER_API_KEY=$HERALD_API_KEY \
      "$OUT/bin/peer" -addr "127.0.0.1:$PORT" -redis "127.0.0.1:$REDIS_PORT" >>"$OUT/peer.log" 2>&1 &
    server_pid=$!
    wait_for "http://127.0.0.1:$PORT/healthz"
    ;;
  herald-* | base-*)
    local redis_url="" bin="$OUT/bin/herald"
    if [[ $1 == *-redis ]]; then
      redis-cli -p "$REDIS_PORT" flushall >/dev/null
      redis_url="redis://127.0.0.1:$REDIS_PORT"
    fi
    [[ $1 == base-* ]] && bin="$OUT/bin/herald-base"
    env "${PROVIDER_ENV[@]}" HERALD_ADDR="127.0.0.1:$PORT" HERALD_REDIS_URL="$redis_url" \
      HERALD_LOG_LEVEL="$LOG_LEVEL" "$bin" >>"$OUT/herald.log" 2>&1 &
    server_pid=$!
    wait_for "http://127.0.0.1:$PORT/readyz"
    ;;
  esac
}

stop_server() {
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}

args_for() { # SCENARIO RATE
  case $1 in
  idle) echo -scenario idle -clients "$IDLE_CLIENTS" -settle "$IDLE_SETTLE" ;;
  fanout) echo -scenario fanout -clients 2000 -rate 20 -duration "$DURATION" ;;
  peruser-api) echo -scenario peruser -via api -clients 1000 -rate "$2" -duration "$DURATION" ;;
  peruser-ingress) echo -scenario peruser -via ingress -clients 1000 -rate "$2" -duration "$DURATION" ;;
  resume) echo -scenario resume -missed 1000 -repeat 20 ;;
  esac
}

supports() { # SERVER SCENARIO: the floors have no ingress and no history, the peer no ingress
  case $1 in
  floor) [ "$2" = idle ] || [ "$2" = fanout ] || [ "$2" = peruser-api ] ;;
  floor-redis) [ "$2" = fanout ] || [ "$2" = peruser-api ] ;;
  centrifuge-redis) [ "$2" != peruser-ingress ] ;;
  *) true ;;
  esac
}

for run in $(seq "$RUNS"); do
  servers=$SERVERS
  # Alternate the order, so that neither server always runs first.
  [ $((run % 2)) -eq 0 ] && servers=$(echo "$SERVERS" | tr ' ' '\n' | tac | tr '\n' ' ')
  for scenario in $SCENARIOS; do
    rates=-
    [[ $scenario == peruser-* ]] && rates=$PERUSER_RATES
    for rate in $rates; do
      for server in $servers; do
        supports "$server" "$scenario" || continue
        name="$scenario-$server-$run"
        [ "$rate" != - ] && [ "$PERUSER_RATES" != 1000 ] && name="$scenario-$rate-$server-$run"
        echo "suite: $name" >&2
        start_server "$server"
        redis_args=()
        [[ $server == *-redis ]] && redis_args=(-redis-pid "$redis_pid")
        [ "$server" = centrifuge-redis ] && redis_args+=(-protocol centrifuge)
        # shellcheck disable=SC2046
        "$OUT/bin/herald-bench" -url "http://127.0.0.1:$PORT" -pid "$server_pid" "${redis_args[@]}" \
          -label "$server" -testdata testdata $(args_for "$scenario" "$rate") \
          >"$OUT/$name.json" 2>"$OUT/$name.err" || echo "suite: $name failed (see $OUT/$name.err)" >&2
        stop_server
      done
    done
  done
done

"$OUT/bin/herald-bench" summarize "$OUT"
echo "suite: results in $OUT" >&2
