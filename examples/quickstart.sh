#!/usr/bin/env bash
# Quick start on a fresh machine, no S3 server needed: two instances ("alpha" and "beta") sync
# their LMDBs through a local directory. Seeds alpha, syncs both once, and shows beta's copy.
set -euo pipefail
cd "$(dirname "$0")/.."
export LS_DATA=${LS_DATA:-$(mktemp -d /tmp/lightningstream-quickstart.XXXXXX)}
cargo build --release --quiet --bin lightningstream --example seed
ls=target/release/lightningstream
mkdir -p "$LS_DATA/alpha" "$LS_DATA/beta"
target/release/examples/seed "$LS_DATA/alpha/db.lmdb" example.org=192.0.2.1 www.example.org=192.0.2.80
LS_INSTANCE=alpha $ls -c examples/quickstart.yaml sync --only-once
LS_INSTANCE=beta $ls -c examples/quickstart.yaml sync --only-once
echo "== objects in the bucket ($LS_DATA/bucket)"
LS_INSTANCE=beta $ls -c examples/quickstart.yaml snapshots list -l
echo "== beta's LMDB now holds alpha's records"
LS_INSTANCE=beta $ls -c examples/quickstart.yaml dump 2>/dev/null
