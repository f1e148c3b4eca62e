#!/usr/bin/env bash
# Figures for `sync --only-once` on the PowerDNS-like dataset of ../shared/bench/gen.py:
# snapshot creation from a filled LMDB, then loading that snapshot into an empty LMDB.
# Prints wall time and peak RssAnon/RssFile (../shared/bench/peakmem.py) for each, plus sizes.
#
# usage: benches/sync-once.sh [DOMAINS]     (6 records per domain; 166667 = 1M records)
set -euo pipefail
cd "$(dirname "$0")/.."
DOMAINS=${1:-166667}
SHARED=${SHARED:-../shared/bench}
WORK=${WORK:-$(mktemp -d /tmp/ls-bench.XXXXXX)}
python3 -c 'import lmdb' 2>/dev/null || python3 -m pip install --quiet lmdb
cargo build --release --quiet --bin lightningstream
LS=$PWD/target/release/lightningstream

mkdir -p "$WORK/a" "$WORK/b" "$WORK/bucket"
if [ ! -f "$WORK/a/db.lmdb" ]; then
    echo "== generating $DOMAINS domains into $WORK/a/db.lmdb"
    python3 "$SHARED/gen.py" "$WORK/a/db.lmdb" "$DOMAINS"
fi
for inst in a b; do
    cat > "$WORK/$inst.yaml" <<YAML
instance: $inst
lmdbs:
  main:
    path: $WORK/$inst/db.lmdb
    schema_tracks_changes: true
    options: {no_subdir: true, create: true, map_size: 8GB}
storage:
  type: fs
  options: {root_path: $WORK/bucket}
log: {level: info, format: logfmt}
YAML
done
rm -f "$WORK"/bucket/* "$WORK"/b/db.lmdb*

echo "== snapshot creation (instance a, filled LMDB, empty bucket)"
python3 "$SHARED/peakmem.py" "$LS" -c "$WORK/a.yaml" sync --only-once
grep -o 'msg="Stored snapshot".*' /tmp/peakmem.stderr | tr ' ' '\n' | grep -E '^(time_total|uncompressed_size|snapshot_size|entries)=' | paste -sd' '
echo "== load into an empty LMDB (instance b)"
python3 "$SHARED/peakmem.py" "$LS" -c "$WORK/b.yaml" sync --only-once
grep -o 'msg="Loaded remote update".*' /tmp/peakmem.stderr | tr ' ' '\n' | grep -E '^(time_total|time_write_lock|entries|written)=' | paste -sd' '
ls -l "$WORK/bucket"
echo "work directory: $WORK"
