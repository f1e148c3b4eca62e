#!/usr/bin/env bash
# Storing and loading the 1M-record snapshot (../shared/bench/gen.py) through the azure backend
# on Azurite, side by side with the s3 backend on the S3 test server (examples/s3_test_server,
# s3s-fs), both on loopback with their stores on the same disk: `sync --only-once` of a filled
# LMDB (snapshot, compress, upload), then of an empty one (download, load), each run REPEAT
# times, printing wall time and peak memory (../shared/bench/peakmem.py) per run. Release build.
#
# usage: benches/azure-vs-s3.sh [DOMAINS] [REPEAT]     (6 records per domain; 166667 = 1M records)
set -euo pipefail
cd "$(dirname "$0")/.."
DOMAINS=${1:-166667}
REPEAT=${2:-3}
SHARED=${SHARED:-../shared/bench}
WORK=${WORK:-$(mktemp -d /tmp/ls-azbench.XXXXXX)}
python3 -c 'import lmdb' 2>/dev/null || python3 -m pip install --quiet lmdb
cargo build --release --quiet --bin lightningstream --example s3_test_server
LS=$PWD/target/release/lightningstream
MAIN_JS=$(tests/azurite-install.sh)
KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='

mkdir -p "$WORK/a"
if [ ! -f "$WORK/a/db.lmdb" ]; then
    echo "== generating $DOMAINS domains into $WORK/a/db.lmdb"
    python3 "$SHARED/gen.py" "$WORK/a/db.lmdb" "$DOMAINS"
fi

pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
mkdir -p "$WORK/s3" "$WORK/azurite"
target/release/examples/s3_test_server "$WORK/s3" > "$WORK/s3.endpoint" 2>"$WORK/s3.log" &
pids+=($!)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
node "$MAIN_JS" --blobHost 127.0.0.1 --blobPort "$port" --location "$WORK/azurite" \
    --disableTelemetry >"$WORK/azurite.log" 2>&1 &
pids+=($!)
for _ in $(seq 200); do
    [ -s "$WORK/s3.endpoint" ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done

storage_s3="storage:
  type: s3
  options: {endpoint_url: $(cat "$WORK/s3.endpoint"), bucket: benchRUN, create_bucket: true,
            access_key: AKIAIOSFODNN7EXAMPLE, secret_key: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY'}"
storage_azure="storage:
  type: azure
  options: {endpoint_url: 'http://127.0.0.1:$port/devstoreaccount1', container: benchRUN,
            create_container: true, account_name: devstoreaccount1, use_shared_key: true,
            account_key: '$KEY'}"

config() { # NAME DB STORAGE
    cat > "$WORK/$1.yaml" <<YAML
instance: $1
lmdbs:
  main:
    path: $2
    schema_tracks_changes: true
    options: {no_subdir: true, create: true, map_size: 8GB}
$3
log: {level: info, format: logfmt}
YAML
}

for backend in s3 azure; do
    var=storage_$backend
    for i in $(seq "$REPEAT"); do
        # A bucket/container per run: the store uploads one whole snapshot, the load reads it.
        config store "$WORK/a/db.lmdb" "${!var//RUN/$i}"
        config load "$WORK/load.lmdb" "${!var//RUN/$i}"
        rm -f "$WORK"/load.lmdb*
        echo "== $backend: store (snapshot + upload), run $i"
        python3 "$SHARED/peakmem.py" "$LS" -c "$WORK/store.yaml" sync --only-once
        grep -o 'msg="Stored snapshot".*' /tmp/peakmem.stderr | tr ' ' '\n' | grep -E '^(time_total|snapshot_size)=' | paste -sd' '
        echo "== $backend: load into an empty LMDB (download + load), run $i"
        python3 "$SHARED/peakmem.py" "$LS" -c "$WORK/load.yaml" sync --only-once
        grep -o 'msg="Loaded remote update".*' /tmp/peakmem.stderr | tr ' ' '\n' | grep -E '^(time_total|entries)=' | paste -sd' '
    done
done
rm -f "$WORK"/load.lmdb*
echo "work directory: $WORK"
