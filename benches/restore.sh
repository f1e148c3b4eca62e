#!/usr/bin/env bash
# Point-in-time restore against a plain load, side by side, on the dataset of
# ../shared/bench/gen.py (7 keys per domain), fs storage, one instance.
#
# The retained history is simulated once per size: the real daemon (deltas and a cleaner with
# `retention: {all: 25h}`) stores a full snapshot of the dataset, then one delta per change
# transaction written the way PowerDNS writes (CHANGES records rewritten or deleted per
# transaction, DELTAS transactions); afterwards the retained objects are renamed so that their
# times spread over the last 24 hours (order, names and transaction ranges kept). Restoring the
# latest moment reads the full snapshot and every delta after it: with the default
# max_deltas (100) and full_snapshot_interval (10m), the most any restore inside the window reads.
#
#   load       `receive --only-once` of the full snapshot into an empty LMDB
#   restore    `restore --at 0s --to NEW` (the full snapshot + DELTAS deltas)
#
# usage: benches/restore.sh [DOMAINS] [RUNS] [DELTAS] [CHANGES]
#        (1000000 domains = 7M keys; defaults 1000000 3 100 500)
# Data in $WORK (default /var/tmp/ls-restore/DOMAINS), kept between runs.
set -euo pipefail
cd "$(dirname "$0")/.."
DOMAINS=${1:-1000000}
RUNS=${2:-3}
DELTAS=${3:-100}
CHANGES=${4:-500}
SHARED=${SHARED:-../shared/bench}
# From a worktree under wt/, the shared directory is one level further up.
[ -f "$SHARED/gen.py" ] || SHARED=../../shared/bench
WORK=${WORK:-/var/tmp/ls-restore}/$DOMAINS
python3 -c 'import lmdb' 2>/dev/null || python3 -m pip install --quiet lmdb
cargo build --release --quiet --bin lightningstream
LS=$PWD/target/release/lightningstream
MEASURE=$PWD/benches/measure.py
mkdir -p "$WORK"

if [ ! -f "$WORK/src.lmdb" ]; then
    echo "== generating $DOMAINS domains ($((DOMAINS * 7)) keys)"
    python3 "$SHARED/gen.py" "$WORK/src.lmdb.tmp" "$DOMAINS" --map-gb 16
    mv "$WORK/src.lmdb.tmp" "$WORK/src.lmdb"
fi

config() { # name lmdb bucket extra
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
  cleanup: {enabled: true, interval: 1s, must_keep_interval: 5s}
lmdb_poll_interval: 100ms
storage_poll_interval: 100ms
deltas: {enabled: true, full_snapshot_interval: 48h, max_deltas: 100000}
retention: {all: 25h}
log: {level: info, format: logfmt, timestamp: disable}
lmdb_log_stats_interval: 0s
$4
YAML
}

HIST=$WORK/history-$DELTAS-$CHANGES
if [ ! -f "$HIST/done" ]; then
    echo "== simulating the retained history: 1 full snapshot + $DELTAS deltas of $CHANGES changes"
    rm -rf "$HIST"
    mkdir -p "$HIST"
    cp --sparse=always "$WORK/src.lmdb" "$HIST/a.lmdb"
    config a "$HIST/a.lmdb" "$HIST/bucket" ""
    "$LS" -c "$WORK/a.yaml" sync 2> "$HIST/a.log" &
    daemon=$!
    trap 'kill $daemon 2>/dev/null || true' EXIT
    python3 - "$HIST" "$DELTAS" "$CHANGES" "$DOMAINS" <<'PY'
import os, random, re, struct, sys, time
import lmdb
hist, deltas, changes, domains = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
HDR = struct.Struct(">QQBBxxxxH")

def covered():
    best = 0
    for d in (f"{hist}/bucket", f"{hist}/bucket/_retained"):
        if not os.path.isdir(d):
            continue
        for n in os.listdir(d):
            m = re.search(r"__T(\d+)\.", n)
            if n.startswith("main__a__") and m:
                best = max(best, int(m.group(1)))
    return best

def wait(cond, what, limit=600):
    t0 = time.time()
    while not cond():
        if time.time() - t0 > limit:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(0.05)

env = lmdb.open(f"{hist}/a.lmdb", subdir=False, max_dbs=16, map_size=16 << 30)
rdb = env.open_db(b"records_v5")
with env.begin() as t:
    start = t.id()
wait(lambda: covered() >= start, "the first full snapshot")
rnd = random.Random(7)
for i in range(deltas):
    with env.begin(write=True, db=rdb) as txn:
        tid = txn.id()
        cur = txn.cursor()
        for c in range(changes):
            if not cur.set_range(struct.pack(">I", rnd.randint(1, domains))):
                continue
            key, val = cur.key(), cur.value()
            ts = time.time_ns()
            if c % 10 == 9:
                txn.put(key, HDR.pack(ts, tid, 0, 1, 0))
            else:
                txn.put(key, HDR.pack(ts, tid, 0, 0, 0) + val[24:] + b"x")
    wait(lambda: covered() >= tid, f"delta {i}")
PY
    # Everything retained by the cleaner, then the daemon stops.
    n_objects=$((DELTAS + 1))
    for _ in $(seq 600); do
        have=$(ls "$HIST/bucket/_retained" 2>/dev/null | grep -c '^main__a__' || true)
        [ "$have" -ge "$n_objects" ] && break
        sleep 0.1
    done
    kill "$daemon"; wait "$daemon" 2>/dev/null || true
    trap - EXIT
    [ "$have" -ge "$n_objects" ] || { echo "only $have of $n_objects objects retained"; exit 1; }
    # Spread the retained objects' times over the last 24 hours, in order.
    python3 - "$HIST/bucket/_retained" <<'PY'
import os, sys, time, datetime
d = sys.argv[1]
names = sorted(n for n in os.listdir(d) if n.startswith("main__a__"))
now = time.time_ns()
span = 24 * 3600 * 10**9
step = span // (len(names) + 1)
for i, n in enumerate(names):
    parts = n.split("__")
    ns = now - span + i * step
    t = datetime.datetime.fromtimestamp(ns // 10**9, datetime.timezone.utc)
    parts[2] = t.strftime("%Y%m%d-%H%M%S") + f"-{ns % 10**9:09d}"
    os.rename(os.path.join(d, n), os.path.join(d, "__".join(parts)))
PY
    # The plain load reads the same full snapshot from a bucket of its own.
    mkdir -p "$HIST/bucket-load"
    full=$(ls "$HIST/bucket/_retained" | grep -v '\.delta\.' | head -1)
    ln -f "$HIST/bucket/_retained/$full" "$HIST/bucket-load/main__src__20200101-000000-000000000__GX.pb.gz"
    rm -f "$HIST/bucket"/main__* "$HIST/a.lmdb" "$HIST/a.lmdb-lock"
    touch "$HIST/done"
fi
config load "$WORK/dst.lmdb" "$HIST/bucket-load" ""
config restore "$WORK/live.lmdb" "$HIST/bucket" ""
du -sh "$HIST/bucket/_retained" | sed 's/^/retained: /'
echo "retained objects: $(ls "$HIST/bucket/_retained" | wc -l) ($(ls "$HIST/bucket/_retained" | grep -c delta) deltas)"

results=$(mktemp)
for i in $(seq "$RUNS"); do
    rm -f "$WORK/dst.lmdb" "$WORK/dst.lmdb-lock"
    line=$(MEASURE_LOG=$WORK/load.log python3 "$MEASURE" "$LS" -c "$WORK/load.yaml" receive --only-once)
    echo "load $line" | tee -a "$results"
    rm -f "$WORK/restored.lmdb" "$WORK/restored.lmdb-lock"
    line=$(MEASURE_LOG=$WORK/restore.log python3 "$MEASURE" "$LS" -c "$WORK/restore.yaml" restore --at 0s --to "$WORK/restored.lmdb")
    echo "restore $line" | tee -a "$results"
    case $line in rc=0*) ;; *) tail -20 "$WORK/restore.log"; exit 1 ;; esac
done

echo
echo "== medians over $RUNS runs, $((DOMAINS * 7)) keys, restore = 1 full snapshot + $DELTAS deltas"
python3 - "$results" <<'EOF'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, rest = line.split(" ", 1)
    rows.setdefault(name, []).append(dict(re.findall(r"(\w+)=(\S+)", rest)))
print(f"{'':8} {'wall s':>7} {'cpu s':>7} {'RssAnon MiB':>12} {'RssFile MiB':>12}")
med = {}
for name in ["load", "restore"]:
    r = rows[name]
    m = lambda k: statistics.median(float(x[k]) for x in r)
    med[name] = m("wall_s")
    print(f"{name:8} {m('wall_s'):7.2f} {m('cpu_s'):7.2f} {max(int(x['peak_anon_MiB']) for x in r):12} "
          f"{max(int(x['peak_file_MiB']) for x in r):12}")
print(f"restore / load wall time: {med['restore'] / med['load']:.2f}x (target <= 2x)")
EOF
rm -f "$results"
