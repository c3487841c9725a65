#!/usr/bin/env bash
# The whole test suite, from a clean clone on a fresh Debian machine:
#   ./test.sh
# It installs what is missing (scripts/deps.sh), then checks formatting and
# vet, runs every test with the race detector — unit, integration (real
# sockets, real redis-server processes), browser (headless Chromium) and a
# chaos run — then each fuzz target briefly.
set -euo pipefail
cd "$(dirname "$0")"

scripts/deps.sh

unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:" >&2
  echo "$unformatted" >&2
  exit 1
fi
go vet ./...
# The benchmarks' open-source peer is a module of its own.
(cd cmd/herald-bench/peer && go vet ./...)
go test -race -count=1 -timeout 30m ./... "$@"
# Every fuzz target for a few seconds beyond its kept corpus (which the
# line above already replayed).
scripts/fuzz.sh "${HERALD_FUZZ_SECONDS:-5}"
