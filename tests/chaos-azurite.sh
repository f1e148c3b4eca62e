#!/usr/bin/env bash
# The chaos convergence test on the azure backend: the five daemons store into Azurite (the
# Azure Storage emulator, Shared Key signatures checked) through the fault-injecting proxies;
# the "S3 stopped" outages stop Azurite and start it again on its data. Azurite is installed
# from npm into the test cache when missing (tests/azurite-install.sh, ~30 s once). When it
# cannot be installed (no node/npm) the step is skipped, unless LS_REQUIRE_AZURITE=1 (CI),
# where that fails.
#
# usage: tests/chaos-azurite.sh [DURATION_SECONDS]     (default 60; env as for tests/chaos.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

status=0
main_js=$(tests/azurite-install.sh) || status=$?
if [ "$status" = 3 ] && [ "${LS_REQUIRE_AZURITE:-0}" != 1 ]; then
    echo "chaos: 0 passed, 0 failed (skipped: Azurite cannot be installed here)"
    exit 0
fi
[ "$status" = 0 ] || { echo "chaos: 0 passed, 1 failed (installing Azurite)"; exit 1; }
CHAOS_AZURITE=$main_js exec tests/chaos.sh "${1:-60}"
