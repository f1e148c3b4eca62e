#!/usr/bin/env bash
# The cost of encryption at rest (`encryption:`, age) at PowerDNS scale, on the dataset of
# ../shared/bench/gen.py (7 keys per domain): for each of RUNS rounds, with encryption off and
# on one after the other (same machine state), `sync --only-once` of a filled LMDB into an empty
# fs bucket (snapshot: LMDB walk, gzip, and with encryption the age stream over the gzip output)
# and `receive --only-once` of that object into an empty LMDB (load: decryption into the
# temporary file, validation, merge). Prints wall time, CPU time and peak RssAnon per step
# (benches/measure.py samples /proc every 10 ms), medians side by side with the ratio.
#
# usage: benches/encryption.sh [DOMAINS] [RUNS]   (857143 domains = 6M keys, 1000000 = 7M)
# The dataset is reused from benches/scale.sh's cache when present, else generated once into
# $WORK (default /var/tmp/ls-encryption).
set -euo pipefail
cd "$(dirname "$0")/.."
DOMAINS=${1:-857143}
RUNS=${2:-3}
SHARED=${SHARED:-../shared/bench}
WORK=${WORK:-/var/tmp/ls-encryption}/$DOMAINS
python3 -c 'import lmdb' 2>/dev/null || python3 -m pip install --quiet lmdb
cargo build --release --quiet --bin lightningstream
LS=$PWD/target/release/lightningstream
MEASURE=$PWD/benches/measure.py
mkdir -p "$WORK"

SRC=/var/tmp/ls-scale/$DOMAINS/src.lmdb
if [ ! -f "$SRC" ]; then
    SRC=$WORK/src.lmdb
    if [ ! -f "$SRC" ]; then
        echo "== generating $DOMAINS domains ($((DOMAINS * 7)) keys)"
        python3 "$SHARED/gen.py" "$SRC.tmp" "$DOMAINS" && mv "$SRC.tmp" "$SRC"
    fi
fi

# A key pair for the run, made with the stock age-keygen (Debian package age).
if [ ! -f "$WORK/key.txt" ]; then
    if command -v age-keygen >/dev/null; then
        age-keygen -o "$WORK/key.txt" 2>/dev/null
    else
        apt-get install -y -qq age >/dev/null && age-keygen -o "$WORK/key.txt" 2>/dev/null
    fi
    chmod 600 "$WORK/key.txt"
fi
RECIPIENT=$(grep -o 'age1[0-9a-z]*' "$WORK/key.txt" | head -1)

config() { # name lmdb bucket encryption(on|off)
    {
        cat <<YAML
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
        if [ "$4" = on ]; then
            printf 'encryption:\n  recipients: [%s]\n  identity_files: [%s]\n' "$RECIPIENT" "$WORK/key.txt"
        fi
    } > "$WORK/$1.yaml"
}
for mode in off on; do
    config "src-$mode" "$SRC" "$WORK/bucket-$mode" "$mode"
    config "dst-$mode" "$WORK/dst-$mode.lmdb" "$WORK/bucket-$mode" "$mode"
done

results=$(mktemp)
trap 'rm -f "$results"' EXIT
run() { # step mode args...
    local step=$1 mode=$2
    shift 2
    local log="$WORK/$step-$mode.log" line
    line=$(MEASURE_LOG=$log python3 "$MEASURE" "$@") || true
    echo "$step $mode $line" | tee -a "$results"
    case $line in rc=0*) ;; *) echo "run failed, log:"; tail -20 "$log"; exit 1 ;; esac
}

for i in $(seq "$RUNS"); do
    for mode in off on; do
        rm -rf "$WORK/bucket-$mode" "$WORK/dst-$mode.lmdb" "$WORK/dst-$mode.lmdb-lock"
        run snapshot "$mode" "$LS" -c "$WORK/src-$mode.yaml" sync --only-once
        run load "$mode" "$LS" -c "$WORK/dst-$mode.yaml" receive --only-once
    done
done
ls -l "$WORK"/bucket-off "$WORK"/bucket-on | grep main__ || true
for mode in off on; do
    rm -rf "$WORK/bucket-$mode" "$WORK/dst-$mode.lmdb" "$WORK/dst-$mode.lmdb-lock"
done

echo
echo "== medians over $RUNS runs, $((DOMAINS * 7)) keys ($DOMAINS domains), encryption off / on"
python3 - "$results" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    step, mode, rest = line.split(" ", 2)
    rows.setdefault((step, mode), []).append(dict(re.findall(r"(\w+)=(\S+)", rest)))
print(f"{'step':9} {'wall s off':>10} {'wall s on':>10} {'ratio':>6} {'cpu s off':>10} {'cpu s on':>9} "
      f"{'RssAnon MiB off':>16} {'RssAnon MiB on':>15}")
for step in ["snapshot", "load"]:
    off, on = rows.get((step, "off"), []), rows.get((step, "on"), [])
    if not off or not on:
        continue
    med = lambda r, k: statistics.median(float(x[k]) for x in r)
    peak = lambda r: max(int(x["peak_anon_MiB"]) for x in r)
    print(f"{step:9} {med(off, 'wall_s'):10.2f} {med(on, 'wall_s'):10.2f} "
          f"{med(on, 'wall_s') / med(off, 'wall_s'):6.2f} {med(off, 'cpu_s'):10.2f} {med(on, 'cpu_s'):9.2f} "
          f"{peak(off):16} {peak(on):15}")
PY
