#!/usr/bin/env bash
# The chaos convergence test on distributed S3: a 3-node Garage 2.5 cluster (replication 3),
# one node SIGKILLed and restarted during each "S3 stopped" outage while the other two keep the
# quorum. Garage is built from crates.io when missing (about 21 minutes on 2 cores) and cached
# under $LS_TEST_CACHE (default /var/cache/lightningstream-tests), so only the first run pays.
# Opt-in: not part of tests/run.sh unless LS_GARAGE=1 (see README).
#
# usage: tests/chaos-garage.sh [DURATION_SECONDS]     (default 180; env as for tests/chaos.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

cache=${LS_TEST_CACHE:-/var/cache/lightningstream-tests}
garage=${GARAGE_BIN:-$cache/garage/bin/garage}
if ! "$garage" --version >/dev/null 2>&1; then
    echo "== installing Garage 2.5.0 into $cache/garage (one-time, ~21 min on 2 cores)"
    mkdir -p "$cache"
    cargo install garage --version 2.5.0 --locked --root "$cache/garage"
    garage=$cache/garage/bin/garage
fi
echo "== $("$garage" --version 2>/dev/null | head -1)"
CHAOS_GARAGE=$garage exec tests/chaos.sh "${1:-180}"
