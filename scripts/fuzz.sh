#!/usr/bin/env bash
# Runs every fuzz target in the repository for a while (default 10s each):
#   scripts/fuzz.sh [seconds] [--keep]
# --keep copies the inputs the fuzzer found interesting into the package's
# testdata/fuzz/<Target>/, so that plain `go test` replays them from then on.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
keep=${2:-}
cache=$(go env GOCACHE)/fuzz
grep -rl --include='*_test.go' '^func Fuzz' . | grep -v node_modules | sort | while read -r file; do
  pkg=./$(dirname "${file#./}")
  for target in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$file" | cut -d' ' -f2); do
    echo "fuzz: $pkg $target (${secs}s)"
    corpus="$pkg/testdata/fuzz/$target"
    before=$(ls "$corpus" 2>/dev/null || true)
    if ! go test "$pkg" -run='^$' -fuzz="^${target}\$" -fuzztime="${secs}s" >/tmp/fuzz.$$.log 2>&1; then
      # Go 1.26's fuzzing coordinator can report its own -fuzztime
      # deadline as a failure ("context deadline exceeded", no failing
      # input written; go.dev/issue/75804, fixed in Go 1.27). A real
      # failure writes the input that caused it into $corpus.
      if [ "$(ls "$corpus" 2>/dev/null || true)" = "$before" ] &&
        ! grep -q 'Failing input written' /tmp/fuzz.$$.log &&
        grep -qx '    context deadline exceeded' /tmp/fuzz.$$.log; then
        echo "fuzz: $target: the coordinator's deadline race, no failing input found"
      else
        cat /tmp/fuzz.$$.log
        exit 1
      fi
    fi
    if [ "$keep" = --keep ]; then
      src="$cache/$(go list "$pkg")/$target"
      dst="$corpus"
      if [ -d "$src" ]; then
        mkdir -p "$dst"
        # At most 50 inputs per target: enough to replay, small to keep.
        ls "$src" | head -50 | while read -r f; do cp -n "$src/$f" "$dst/"; done
      fi
    fi
  done
done
rm -f /tmp/fuzz.$$.log
