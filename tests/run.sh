#!/usr/bin/env bash
# The whole test suite, runnable on a fresh machine: installs what the tests need (python3's
# py-lmdb for the Go interop vectors), then checks formatting and lints and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import lmdb' 2>/dev/null; then
    echo "== installing py-lmdb (PyPI 'lmdb') for the interop vectors"
    python3 -m pip install --quiet lmdb
fi

# Prometheus's promtool (from Debian's prometheus package, unpacked, not installed: nothing
# to start) checks the /metrics output in the tests, the shipped alert rules and the dashboard.
PROMTOOL=$(tests/fetch-promtool.sh)
export LS_PROMTOOL="$PROMTOOL" LS_REQUIRE_PROMTOOL=1

# Azurite (the Azure Storage emulator, from npm) for the azure backend's tests: node and npm
# from Debian when missing; the tests install Azurite itself into the test cache
# (tests/azurite-install.sh). In CI they must run, not skip.
if ! command -v npm >/dev/null; then
    echo "== installing nodejs and npm (Debian) for Azurite"
    apt-get install -y -qq nodejs npm >/dev/null || { apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null; }
fi
export LS_REQUIRE_AZURITE=1

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
echo "== module graph (no cycles between the crate's modules)"
python3 tests/module-graph.py

# With the shared reference material beside the project, the vector tests must run, not skip.
if [ -d ../shared/vectors ]; then
    export LS_REQUIRE_SHARED=1
fi
echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --all-targets 2>&1 | tee "$log" || status=$?

echo "== alert rules"
alerts_ok=0 alerts_failed=0
for step in "check rules lightningstream-alerts.yml" "test rules lightningstream-alerts.test.yml"; do
    # shellcheck disable=SC2086
    if (cd packaging/prometheus && "$PROMTOOL" $step); then
        alerts_ok=$((alerts_ok + 1))
    else
        alerts_failed=$((alerts_failed + 1))
        status=1
    fi
done
echo "alerts: $alerts_ok passed, $alerts_failed failed" | tee -a "$log"

# The real client: two PowerDNS Auth servers syncing through two daemons and one S3 bucket,
# 4.9 in native mode (in a Debian trixie chroot) and 4.7 in shadow mode.
if [ "$status" = 0 ]; then
    echo "== PowerDNS 4.9 end to end"
    tests/pdns49-e2e.sh 2>&1 | tee -a "$log" || status=$?
fi
if [ "$status" = 0 ]; then
    echo "== PowerDNS 4.7 end to end"
    tests/pdns47-e2e.sh 2>&1 | tee -a "$log" || status=$?
fi

# Five daemons through a fault-injecting S3 proxy, with kills and outages: nothing lost.
if [ "$status" = 0 ]; then
    echo "== chaos convergence"
    tests/chaos.sh 2>&1 | tee -a "$log" || status=$?
fi
# The same on the azure backend, on Azurite, for one minute.
if [ "$status" = 0 ]; then
    echo "== chaos convergence on Azurite (azure backend)"
    tests/chaos-azurite.sh 60 2>&1 | tee -a "$log" || status=$?
fi
# The same on a 3-node Garage cluster: opt-in (LS_GARAGE=1), since building Garage on a fresh
# machine takes about 21 minutes; cached afterwards.
if [ "$status" = 0 ] && [ "${LS_GARAGE:-0}" = 1 ]; then
    echo "== chaos convergence on a 3-node Garage cluster"
    tests/chaos-garage.sh 2>&1 | tee -a "$log" || status=$?
fi
# Every fuzz target briefly (longer runs: tests/fuzz.sh SECONDS).
if [ "$status" = 0 ]; then
    echo "== fuzzing, 10 s per target"
    tests/fuzz.sh 10 2>&1 | tee -a "$log" || status=$?
fi
# What ships: static binary, .deb/.rpm, systemd units, man pages, container root fs.
if [ "$status" = 0 ]; then
    echo "== packaging"
    tests/packaging.sh 2>&1 | tee -a "$log" || status=$?
fi
# The image built with buildah and run with podman (reuses the static binary just built).
if [ "$status" = 0 ]; then
    echo "== container image"
    tests/container.sh 2>&1 | tee -a "$log" || status=$?
fi
# The status page in headless Chromium and the Grafana dashboard against real /metrics.
if [ "$status" = 0 ]; then
    echo "== status page in a browser, dashboard"
    tests/browser.sh 2>&1 | tee -a "$log" || status=$?
fi
# The Kubernetes example manifests against the API schemas.
if [ "$status" = 0 ]; then
    echo "== kubernetes manifests"
    tests/kubernetes.sh 2>&1 | tee -a "$log" || status=$?
fi

# One summary over everything (the last test binary alone may have run no test at all).
count() { grep -E '^(test result|pdns4[79]-e2e|alerts|chaos|fuzz|packaging|container|browser|kubernetes):' "$log" | grep -oE "[0-9]+ $1" | awk '{s += $1} END {print s + 0}'; }
failed=$(count failed)
[ "$status" = 0 ] || [ "$failed" != 0 ] || failed=1
echo "tests: $(count passed) passed, $failed failed, $(count ignored) skipped"
exit "$status"
