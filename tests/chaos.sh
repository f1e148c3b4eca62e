#!/usr/bin/env bash
# Chaos convergence test: five `lightningstream sync` daemons with PowerDNS-style writers on one
# S3 bucket (the S3 test server, SigV4 checked) through a fault-injecting proxy, while daemons
# are SIGKILLed and restarted, S3 goes away, and requests fail, reset, stall or get truncated.
# At the end every LMDB must be identical and hold, for every key, the winning write among all
# writes made: nothing lost, nothing resurrected. Last line: `chaos: N passed, M failed`.
#
# usage: tests/chaos.sh [DURATION_SECONDS]      (default 180)
# env:   CHAOS_PROFILE=release (default: debug, the build `cargo test` already made)
#        CHAOS_SEED=N  CHAOS_DIR=DIR (work files kept there)  KEEP=1 (keep the temp work dir)
#        CHAOS_DELTAS=1: the daemons store deltas between full snapshots
#        CHAOS_GARAGE=PATH: the bucket on a 3-node Garage cluster run from this garage binary
#        instead of the S3 test server (tests/chaos-garage.sh installs Garage and sets it)
#        CHAOS_AZURITE=PATH: the daemons on the azure backend, on Azurite run from this main.js
#        (tests/chaos-azurite.sh installs Azurite and sets it)
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${1:-180}
profile=${CHAOS_PROFILE:-debug}
flags=()
[ "$profile" = release ] && flags+=(--release)

echo "== building the daemon and the chaos helpers ($profile)"
cargo build --quiet "${flags[@]}" --bin lightningstream --example s3_test_server --example chaos

args=(--bin "target/$profile/lightningstream" --duration "$duration")
if [ -n "${CHAOS_GARAGE:-}" ]; then
    args+=(--garage "$CHAOS_GARAGE")
elif [ -n "${CHAOS_AZURITE:-}" ]; then
    args+=(--azurite "$CHAOS_AZURITE")
else
    args+=(--s3-server "target/$profile/examples/s3_test_server")
fi
[ -n "${CHAOS_SEED:-}" ] && args+=(--seed "$CHAOS_SEED")
[ -n "${CHAOS_DIR:-}" ] && args+=(--dir "$CHAOS_DIR")
[ -n "${KEEP:-}" ] && args+=(--keep)
[ -n "${CHAOS_DELTAS:-}" ] && args+=(--deltas)
exec "target/$profile/examples/chaos" "${args[@]}"
