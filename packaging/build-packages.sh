#!/bin/sh
# Builds the static binary and packages it: target/debian/lightningstream_*.deb and
# target/generate-rpm/lightningstream-*.rpm. Needs cargo-deb and cargo-generate-rpm on PATH
# (tests/packaging.sh installs them) and gzip.
set -eu
cd "$(dirname "$0")/.."
TARGET=x86_64-unknown-linux-gnu
packaging/build-static.sh "$@" >/dev/null
# Man pages, gzipped reproducibly (no name, no time stamp) for both packages.
mkdir -p target/packaging
for page in lightningstream.1 lightningstream.yaml.5; do
    gzip -9nc "man/$page" > "target/packaging/$page.gz"
done
rm -f target/debian/lightningstream_*.deb target/generate-rpm/lightningstream-*.rpm
mkdir -p target/debian target/generate-rpm
cargo deb --no-build --target "$TARGET" --output target/debian/
cargo generate-rpm --target "$TARGET" --output target/generate-rpm/
ls target/debian/lightningstream_*.deb target/generate-rpm/lightningstream-*.rpm
