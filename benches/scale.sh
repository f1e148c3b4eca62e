#!/usr/bin/env bash
# Performance at PowerDNS scale on the dataset of ../shared/bench/gen.py (6 records per domain):
# for each workload, RUNS runs (median reported), each printing wall time, CPU time, peak
# RssAnon/RssFile (benches/measure.py), the longest write transaction and the snapshot size.
#
#   snapshot   `sync --only-once` on a filled LMDB, empty bucket
#   load       `receive --only-once` into an empty LMDB
#   reload     the same snapshot again into the LMDB that already holds it
#   changed    a snapshot in which 1% of the records are newer, into that LMDB
#
# usage: benches/scale.sh [DOMAINS] [RUNS]   (166667 domains = 1M records, 1000000 = 6M)
# Datasets are generated once per size and kept in $WORK (default /var/tmp/ls-scale).
set -euo pipefail
cd "$(dirname "$0")/.."
DOMAINS=${1:-166667}
RUNS=${2:-3}
SHARED=${SHARED:-../shared/bench}
WORK=${WORK:-/var/tmp/ls-scale}/$DOMAINS
python3 -c 'import lmdb' 2>/dev/null || python3 -m pip install --quiet lmdb
cargo build --release --quiet --bin lightningstream
LS=$PWD/target/release/lightningstream
MEASURE=$PWD/benches/measure.py
mkdir -p "$WORK"

if [ ! -f "$WORK/src.lmdb" ]; then
    echo "== generating $DOMAINS domains ($((DOMAINS * 7)) keys)"
    python3 "$SHARED/gen.py" "$WORK/src.lmdb.tmp" "$DOMAINS" && mv "$WORK/src.lmdb.tmp" "$WORK/src.lmdb"
fi
if [ ! -f "$WORK/touched.lmdb" ]; then
    echo "== generating the same dataset with 1% of the records newer"
    python3 "$SHARED/gen.py" "$WORK/touched.lmdb.tmp" "$DOMAINS" --touch 0.01 && mv "$WORK/touched.lmdb.tmp" "$WORK/touched.lmdb"
fi

config() { # instance lmdb bucket
    cat > "$WORK/$1.yaml" <<YAML
instance: $1
lmdbs:
  main:
    path: $2
    schema_tracks_changes: true
    options: {no_subdir: true, create: true, map_size: 16GB}
storage:
  type: fs
  options: {root_path: $3}
log: {level: info, format: logfmt, timestamp: disable}
lmdb_log_stats_interval: 0s
YAML
}
config src "$WORK/src.lmdb" "$WORK/bucket-src"
config touched "$WORK/touched.lmdb" "$WORK/bucket-touched"
config dst "$WORK/dst.lmdb" "$WORK/bucket-src"
config dst2 "$WORK/dst.lmdb" "$WORK/bucket-touched"

field() { # log message key
    { grep -h "msg=\"$2\"" "$1" | grep -oE "(^| )$3=[^ ]+" | tail -1 | cut -d= -f2; } || true
}
results=$(mktemp)
run() { # workload log-message size-key args...
    local name=$1 msg=$2 sizekey=$3
    shift 3
    local log="$WORK/$name.log"
    local line
    line=$(MEASURE_LOG=$log python3 "$MEASURE" "$@") || true
    local lock size
    lock=$(field "$log" "$msg" time_write_lock)
    size=$(field "$log" "$msg" "$sizekey")
    echo "$name $line write_lock=${lock:--} size=${size:--}" | tee -a "$results"
    case $line in rc=0*) ;; *) echo "run failed, log:"; tail -20 "$log"; exit 1 ;; esac
}

for i in $(seq "$RUNS"); do
    rm -rf "$WORK/bucket-src" "$WORK/bucket-touched"
    run snapshot "Stored snapshot" snapshot_size "$LS" -c "$WORK/src.yaml" sync --only-once
    rm -f "$WORK/dst.lmdb" "$WORK/dst.lmdb-lock"
    run load "Loaded remote update" compressed_size_bytes "$LS" -c "$WORK/dst.yaml" receive --only-once
    run reload "Loaded remote update" compressed_size_bytes "$LS" -c "$WORK/dst.yaml" receive --only-once
    cp "$WORK/dst.lmdb" "$WORK/dst-before-change.lmdb"
    "$LS" -c "$WORK/touched.yaml" sync --only-once 2>/dev/null
    run changed "Loaded remote update" compressed_size_bytes "$LS" -c "$WORK/dst2.yaml" receive --only-once
    mv "$WORK/dst-before-change.lmdb" "$WORK/dst.lmdb"
done

echo
echo "== medians over $RUNS runs, $((DOMAINS * 7)) keys ($DOMAINS domains)"
python3 - "$results" <<'EOF'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, rest = line.split(" ", 1)
    kv = dict(re.findall(r"(\w+)=(\S+)", rest))
    rows.setdefault(name, []).append(kv)
def secs(v):
    m = re.fullmatch(r"([\d.]+)(ns|µs|us|ms|s)", v or "")
    if not m:
        return None
    return float(m.group(1)) * {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1}[m.group(2)]
print(f"{'workload':10} {'wall s':>7} {'cpu s':>7} {'RssAnon MiB':>12} {'RssFile MiB':>12} {'longest write txn':>18} {'size MB':>8}")
for name in ["snapshot", "load", "reload", "changed"]:
    r = rows.get(name, [])
    if not r:
        continue
    med = lambda k: statistics.median(float(x[k]) for x in r)
    locks = [secs(x.get("write_lock")) for x in r]
    locks = [l for l in locks if l is not None]
    lock = f"{statistics.median(locks)*1000:.1f} ms" if locks else "none"
    sizes = [int(x["size"]) for x in r if x.get("size", "-").isdigit()]
    size = f"{statistics.median(sizes)/1e6:.1f}" if sizes else "-"
    print(f"{name:10} {med('wall_s'):7.2f} {med('cpu_s'):7.2f} {max(int(x['peak_anon_MiB']) for x in r):12} "
          f"{max(int(x['peak_file_MiB']) for x in r):12} {lock:>18} {size:>8}")
EOF
rm -f "$results"
