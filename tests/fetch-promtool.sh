#!/usr/bin/env bash
# Prints the path of Prometheus's promtool, fetching it first when it is not cached: from
# Debian's prometheus package, unpacked, not installed (nothing to start), into
# /var/cache/lightningstream-tests/bin (LS_TEST_CACHE overrides the cache directory).
set -euo pipefail
PROMTOOL=${LS_TEST_CACHE:-/var/cache/lightningstream-tests}/bin/promtool
if ! "$PROMTOOL" --version >/dev/null 2>&1; then
    echo "== fetching promtool (Debian package prometheus)" >&2
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && { apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq && apt-get download prometheus; }; } \
        && dpkg-deb -x prometheus_*.deb x) >&2
    mkdir -p "$(dirname "$PROMTOOL")"
    cp "$tmp/x/usr/bin/promtool" "$PROMTOOL"
fi
echo "$PROMTOOL"
