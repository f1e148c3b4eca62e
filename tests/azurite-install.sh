#!/usr/bin/env bash
# Installs Azurite (Microsoft's Azure Storage emulator, npm package `azurite`, pinned) into the
# test cache once, and prints the path of its blob server's main.js. Used by the cargo tests
# (tests/common/azurite.rs), tests/chaos-azurite.sh and benches/azure-vs-s3.sh. Concurrent
# callers wait on a lock; an interrupted install is redone. Needs node and npm (Debian:
# apt-get install nodejs npm); exits 3 when they are missing, so callers can tell "cannot
# install here" from a failed install.
#
# usage: tests/azurite-install.sh        env: LS_TEST_CACHE (default /var/cache/lightningstream-tests)
set -euo pipefail

# 3.35.0: the newest release that supports node < 21 (3.36 needs 21, 3.37 needs 22; Debian 12
# ships 18).
version=3.35.0
dir=${LS_TEST_CACHE:-/var/cache/lightningstream-tests}/azurite
main=$dir/node_modules/azurite/dist/src/blob/main.js

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "azurite-install: node and npm are needed (apt-get install nodejs npm)" >&2
    exit 3
fi
mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
if [ ! -f "$dir/.installed-$version" ] || [ ! -f "$main" ]; then
    echo "azurite-install: installing azurite@$version into $dir" >&2
    rm -rf "$dir/node_modules" "$dir"/.installed-*
    (cd "$dir" && npm install --silent --no-audit --no-fund --no-save "azurite@$version" >&2)
    [ -f "$main" ] || { echo "azurite-install: $main missing after npm install" >&2; exit 1; }
    touch "$dir/.installed-$version"
fi
echo "$main"
