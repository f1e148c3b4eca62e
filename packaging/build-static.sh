#!/bin/sh
# Builds the binary that ships: statically linked against glibc (never musl: a musl-built LMDB
# and PowerDNS's glibc liblmdb deadlock on the shared write mutex), with the release profile of
# Cargo.toml (LTO, one codegen unit, panic=abort, stripped).
#
#   packaging/build-static.sh            -> target/x86_64-unknown-linux-gnu/release/lightningstream
#
# Extra arguments go to cargo build (e.g. --locked). The path of the binary is printed last.
set -eu
cd "$(dirname "$0")/.."
TARGET=x86_64-unknown-linux-gnu
RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static" \
    cargo build --release --target "$TARGET" --bin lightningstream "$@"
BIN=target/$TARGET/release/lightningstream
# Refuse to hand out a binary that would need a shared library at run time.
if readelf -d "$BIN" 2>/dev/null | grep -q '(NEEDED)'; then
    echo "build-static.sh: $BIN is dynamically linked" >&2
    exit 1
fi
echo "$BIN"
