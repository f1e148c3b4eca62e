#!/usr/bin/env bash
# Propagation of single-record changes at PowerDNS scale, with deltas on and off: two daemons
# (instances a and b) on copies of one dataset of ../shared/bench/gen.py, fs storage, 1 s LMDB
# and storage polls. CHANGES times: one record is written into a's LMDB the way PowerDNS 4.8+
# does (LS header with the write transaction's ID), and the time until b's LMDB holds it is
# measured; then a pause of 0.2-1.2 s so that changes fall at random points of the poll cycles.
# Reported per mode: p50/p99/max latency, bytes a uploaded per change (all objects a stored
# during the changes, divided by their number), and a's median time to store one object and
# b's to merge one. With ALTERNATE=1 the changes alternate between a and b (each checked on
# the other), bytes count both instances' objects, and the mean number of entries per delta
# shows the echo: a delta also carries the entries its instance merged since its last object.
# MAX_DELTAS (default 1000) sets deltas.max_deltas, to include periodic (bridged) full snapshots;
# b_download_per_change is what b merged from a, per change (adopted full snapshots cost nothing).
# With STORAGE=s3 the bucket is on the S3 test server (examples/s3_test_server.rs, s3s-fs on
# loopback, signatures checked) instead of a directory.
#
# usage: benches/delta-latency.sh [DOMAINS] [CHANGES] [MODES]
#   DOMAINS 166667 = 1M records (default), 1000000 = 6M; CHANGES default 50; MODES "on off".
# Datasets are generated once per size and kept in $WORK (default /var/tmp/ls-scale), shared
# with benches/scale.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
DOMAINS=${1:-166667}
CHANGES=${2:-50}
MODES=${3:-on off}
SHARED=${SHARED:-../shared/bench}
WORK=${WORK:-/var/tmp/ls-scale}/$DOMAINS
python3 -c 'import lmdb' 2>/dev/null || python3 -m pip install --quiet lmdb
STORAGE=${STORAGE:-fs}
cargo build --release --quiet --bin lightningstream --example s3_test_server
LS=$PWD/target/release/lightningstream
S3=$PWD/target/release/examples/s3_test_server
mkdir -p "$WORK"
if [ ! -f "$WORK/src.lmdb" ]; then
    echo "== generating $DOMAINS domains ($((DOMAINS * 7)) keys)"
    python3 "$SHARED/gen.py" "$WORK/src.lmdb.tmp" "$DOMAINS" && mv "$WORK/src.lmdb.tmp" "$WORK/src.lmdb"
fi

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

for mode in $MODES; do
    run=$WORK/delta-$mode
    rm -rf "$run" && mkdir -p "$run"
    deltas=false
    [ "$mode" = on ] && deltas=true
    pids=()
    if [ "$STORAGE" = s3 ]; then
        mkdir -p "$run/s3"
        "$S3" "$run/s3" > "$run/s3.endpoint" &
        pids+=($!)
        while [ ! -s "$run/s3.endpoint" ]; do sleep 0.1; done
        storage="{type: s3, options: {endpoint_url: \"$(cat "$run/s3.endpoint")\", bucket: bench, create_bucket: true, access_key: AKIAIOSFODNN7EXAMPLE, secret_key: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY}}"
        objects=$run/s3/bench
    else
        storage="{type: fs, options: {root_path: $run/bucket}}"
        objects=$run/bucket
    fi
    for i in a b; do
        cp "$WORK/src.lmdb" "$run/$i.lmdb"
        cat > "$run/$i.yaml" <<YAML
instance: $i
lmdbs:
  main:
    path: $run/$i.lmdb
    schema_tracks_changes: true
    options: {no_subdir: true, create: true, map_size: 16GB}
storage: $storage
log: {level: info, format: logfmt, timestamp: disable}
lmdb_poll_interval: 1s
storage_poll_interval: 1s
lmdb_log_stats_interval: 0s
deltas: {enabled: $deltas, full_snapshot_interval: 10m, max_deltas: ${MAX_DELTAS:-1000}}
YAML
    done
    echo "== deltas $mode: starting a and b on $((DOMAINS * 7)) keys"
    for i in a b; do
        "$LS" -c "$run/$i.yaml" sync 2>"$run/$i.log" &
        pids+=($!)
    done
    ALTERNATE=${ALTERNATE:-0} python3 - "$run" "$CHANGES" "$mode" "$objects" "${pids[@]}" <<'EOF'
import os, random, re, statistics, struct, sys, time
import lmdb

run, changes, mode, bucket = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
pids = [int(p) for p in sys.argv[5:]]
HDR = struct.Struct(">QQBBxxxxH")

def log(i):
    with open(f"{run}/{i}.log", errors="replace") as f:
        return f.read()

def alive():
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                dead = f.read().split(") ")[1].startswith("Z")
        except OSError:
            dead = True
        if dead:
            sys.exit(f"daemon {p} ended; logs in {run}")

def wait(what, cond, timeout=1800):
    t0 = time.monotonic()
    while not cond():
        alive()
        if time.monotonic() - t0 > timeout:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(0.2)

# Start-up: each stores its snapshot and merges the other's.
wait("start-up", lambda: all(
    'msg="Stored snapshot"' in log(i) and "Loaded remote update" in log(i) for i in "ab"))
time.sleep(3)

alternate = os.environ.get("ALTERNATE") == "1"
writers = ("main__a__", "main__b__") if alternate else ("main__a__",)

def a_bytes():
    return sum(e.stat().st_size for e in os.scandir(bucket) if e.name.startswith(writers))

def a_objects():
    return sum(1 for e in os.scandir(bucket) if e.name.startswith(writers))

envs = [lmdb.open(f"{run}/{i}.lmdb", subdir=False, max_dbs=16, map_size=16 << 30) for i in "ab"]
dbis = [e.open_db(b"records_v5") for e in envs]
def b_loaded():
    return sum(int(m.group(1)) for line in log("b").splitlines()
               if '"Loaded remote update"' in line and "snapshot_instance=a" in line
               for m in [re.search(r"\bcompressed_size_bytes=(\d+)", line)] if m)

bytes0, objects0, loaded0 = a_bytes(), a_objects(), b_loaded()
lat = []
for n in range(changes):
    key = b"bench-change-%06d" % n
    src = n % 2 if alternate else 0
    (w, wdb), (r, rdb) = (envs[src], dbis[src]), (envs[1 - src], dbis[1 - src])
    with w.begin(write=True) as t:
        t.put(key, HDR.pack(time.time_ns(), t.id(), 0, 0, 0) + b"192.0.2.1 3600", db=wdb)
    t0 = time.monotonic()
    while True:
        with r.begin() as t:
            if t.get(key, db=rdb) is not None:
                break
        if time.monotonic() - t0 > 600:
            sys.exit(f"change {n} not visible on b after 600 s")
        time.sleep(0.005)
    lat.append(time.monotonic() - t0)
    alive()
    time.sleep(random.uniform(0.2, 1.2))
time.sleep(1.5)  # the last store may still be writing
per_change = (a_bytes() - bytes0) / changes
download_per_change = (b_loaded() - loaded0) / changes
objects = a_objects() - objects0

def durations(text, msg, key, kind):
    out = []
    for line in text.splitlines():
        if f'msg="{msg}"' in line and kind in line:
            m = re.search(rf"\b{key}=([\d.]+)(ns|µs|us|ms|s)\b", line)
            if m:
                out.append(float(m.group(1)) * {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1}[m.group(2)])
    return out

kind_store = "snapshot_kind=delta" if mode == "on" else "snapshot_kind=snapshot"
kind_load = "kind=delta" if mode == "on" else "kind=snapshot"
store = durations(log("a"), "Stored snapshot", "time_total", kind_store)
load = durations(log("b"), "Loaded remote update", "time_total", kind_load)
entries = [int(m.group(1)) for i in "ab" for line in log(i).splitlines()
           if "snapshot_kind=delta" in line for m in [re.search(r"\bentries=(\d+)", line)] if m]
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(round(p * (len(lat) - 1))))]
med = lambda v: f"{statistics.median(v[-changes:]):.3f}" if v else "-"
print(f"deltas={mode} changes={changes} p50_s={q(0.5):.3f} p99_s={q(0.99):.3f} max_s={lat[-1]:.3f} "
      f"objects_stored_by_a={objects} bytes_per_change={per_change:.0f} "
      f"b_download_per_change={download_per_change:.0f} "
      f"a_store_median_s={med(store)} b_merge_median_s={med(load)} "
      f"entries_per_delta={statistics.mean(entries) if entries else 0:.2f}")
EOF
    cleanup
    pids=()
done
