#!/usr/bin/env bash
# End to end with the real client: two PowerDNS Authoritative 4.7 servers (Debian bookworm's
# pdns-server + pdns-backend-lmdb: plain values, so lightningstream runs in shadow mode with
# dupsort_hack), each with its own LMDB and its own `lightningstream sync` daemon, one bucket on a
# real S3 server (the in-process s3s-fs test server, examples/s3_test_server.rs). Every step is
# checked through DNS (dig) on the other server, and its propagation time is printed.
#
# usage: tests/pdns47-e2e.sh            (installs the Debian packages when missing; needs root)
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }
if ! need pdns_server || ! need pdnsutil || ! need dig || [ ! -e /usr/lib/x86_64-linux-gnu/pdns/liblmdbbackend.so ]; then
    echo "== installing pdns-server pdns-backend-lmdb dnsutils"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pdns-server pdns-backend-lmdb dnsutils curl >/dev/null
fi
# Debian starts a packaged server on port 53 where it can; ours use their own ports.
cargo build --quiet --bin lightningstream --example s3_test_server
LS=$PWD/target/debug/lightningstream

W=$(mktemp -d /tmp/pdns47-e2e.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ "${KEEP:-}" = "" ]; then rm -rf "$W"; else echo "work files kept in $W"; fi
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*"
    for f in "$W"/*.log; do echo "--- $f"; tail -20 "$f"; done
    exit 1
}

# S3
target/debug/examples/s3_test_server "$W/s3" > "$W/s3.url" 2> "$W/s3.log" &
pids+=($!)
for _ in $(seq 100); do [ -s "$W/s3.url" ] && break; sleep 0.05; done
S3=$(head -1 "$W/s3.url")
[ -n "$S3" ] || fail "S3 test server did not start"

start_auth() { # N DNSPORT WEBPORT
    local d=$W/auth$1
    mkdir -p "$d"
    cat > "$d/pdns.conf" <<CONF
launch=lmdb
lmdb-filename=$d/pdns.lmdb
lmdb-shards=1
lmdb-random-ids=yes
lmdb-sync-mode=nosync
local-address=127.0.0.1:$2
socket-dir=$d
api=yes
api-key=secret
webserver=yes
webserver-address=127.0.0.1
webserver-port=$3
webserver-allow-from=127.0.0.0/8
zone-cache-refresh-interval=0
cache-ttl=0
negquery-cache-ttl=0
query-cache-ttl=0
dnssec-key-cache-ttl=0
zone-metadata-cache-ttl=0
consistent-backends=yes
security-poll-suffix=
CONF
    pdns_server --config-dir="$d" --daemon=no --guardian=no --disable-syslog --write-pid=no > "$W/auth$1.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 200); do
        dig +short +time=1 +tries=1 @127.0.0.1 -p "$2" version.bind CH TXT >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    fail "auth$1 did not start"
}

start_sync() { # N
    local d=$W/auth$1
    cat > "$d/ls.yaml" <<YAML
instance: auth$1
lmdbs:
  main:
    path: $d/pdns.lmdb
    schema_tracks_changes: false
    dupsort_hack: true
    options: {no_subdir: true, create: true, file_mask: 0600}
  shard:
    path: $d/pdns.lmdb-0
    schema_tracks_changes: false
    dupsort_hack: true
    options: {no_subdir: true, create: true, file_mask: 0600}
storage:
  type: s3
  options:
    endpoint_url: $S3
    bucket: pdns
    create_bucket: true
    access_key: AKIAIOSFODNN7EXAMPLE
    secret_key: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY
lmdb_poll_interval: 200ms
storage_poll_interval: 200ms
log: {level: info, format: logfmt}
YAML
    "$LS" -c "$d/ls.yaml" sync > "$W/sync$1.log" 2>&1 &
    pids+=($!)
}

P1="pdnsutil --config-dir=$W/auth1"
P2="pdnsutil --config-dir=$W/auth2"
start_auth 1 5301 8101
start_auth 2 5302 8102
# Auth 4.7 upgrades its LMDB on first start: start the daemons once it is ready. It creates the
# shard file only on first use, hence `create: true` (with Auth's 0600 mode) for both LMDBs.
$P1 list-all-zones >/dev/null
$P2 list-all-zones >/dev/null
start_sync 1
start_sync 2

now_ms() { date +%s%3N; }
passed=0
# step NAME PORT QNAME TYPE GREP-PATTERN [absent]: wait until dig's answer matches (or stops matching)
step() {
    local name=$1 port=$2 q=$3 t=$4 pat=$5 absent=${6:-} t0
    t0=$(now_ms)
    while true; do
        local ans
        ans=$(dig +dnssec +time=1 +tries=1 @127.0.0.1 -p "$port" "$q" "$t" 2>/dev/null | sed -n '/ANSWER SECTION/,/^$/p')
        if [ -z "$absent" ] && grep -Eq "$pat" <<<"$ans"; then break; fi
        if [ -n "$absent" ] && ! grep -Eq "$pat" <<<"$ans"; then break; fi
        [ $(( $(now_ms) - t0 )) -lt 30000 ] || fail "$name: no match for '$pat' in $q $t on port $port"
        sleep 0.05
    done
    printf 'ok   %-52s %6d ms\n' "$name" $(( $(now_ms) - t0 ))
    passed=$((passed + 1))
}

$P1 create-zone example.org ns1.example.org >/dev/null
$P1 add-record example.org www A 300 192.0.2.1 >/dev/null
step "zone + record created on 1, served by 2" 5302 www.example.org A "192\.0\.2\.1"

$P2 add-record example.org mail A 300 192.0.2.25 >/dev/null
step "record added on 2, served by 1" 5301 mail.example.org A "192\.0\.2\.25"

$P1 replace-rrset example.org www A 300 192.0.2.2 >/dev/null
step "record changed on 1, served by 2" 5302 www.example.org A "192\.0\.2\.2$"

$P2 delete-rrset example.org mail A >/dev/null
step "record deleted on 2, gone on 1" 5301 mail.example.org A "192\.0\.2\.25" absent

$P1 secure-zone example.org >/dev/null 2>&1
step "secure-zone on 1, signed answers from 2" 5302 www.example.org A "RRSIG"
step "DNSKEY from 1 served by 2" 5302 example.org DNSKEY "DNSKEY"

curl -sf -X POST -H "X-API-Key: secret" http://127.0.0.1:8102/api/v1/servers/localhost/zones \
    -d '{"name":"api.test.","kind":"Native","nameservers":["ns1.api.test."]}' >/dev/null
curl -sf -X PATCH -H "X-API-Key: secret" http://127.0.0.1:8102/api/v1/servers/localhost/zones/api.test. \
    -d '{"rrsets":[{"name":"a.api.test.","type":"A","ttl":60,"changetype":"REPLACE","records":[{"content":"192.0.2.9","disabled":false}]}]}' >/dev/null
step "zone created over the HTTP API on 2, served by 1" 5301 a.api.test A "192\.0\.2\.9"

$P1 delete-zone example.org >/dev/null
step "zone deleted on 1, gone on 2" 5302 www.example.org A "192\.0\.2\.2" absent

# A bigger zone, for the shadow overhead figures.
N=${BIG_ZONE_RECORDS:-10000}
{
    echo '$ORIGIN big.test.'
    echo '@ 3600 IN SOA ns1.big.test. hostmaster.big.test. 1 3600 600 604800 300'
    echo '@ 3600 IN NS ns1.big.test.'
    for i in $(seq 1 "$N"); do echo "h$i 300 IN A 10.$((i / 65536 % 256)).$((i / 256 % 256)).$((i % 256))"; done
} > "$W/big.zone"
$P1 load-zone big.test "$W/big.zone" >/dev/null 2>&1
step "zone of $N records loaded on 1, last one served by 2" 5302 "h$N.big.test" A "10\\."

# Shadow overhead: pages of the _sync_shadow_* DBIs against the DBIs they shadow.
"$LS" -c "$W/auth2/ls.yaml" stats 2>/dev/null | awk '
    / dbi / { size = $NF; unit = $(NF); gsub(/[()]/, "", $0) }
    / dbi / { match($0, /PSize:[0-9]+/); ps = substr($0, RSTART + 6, RLENGTH - 6)
              match($0, /BranchPages:[0-9]+/); b = substr($0, RSTART + 12, RLENGTH - 12)
              match($0, /LeafPages:[0-9]+/); l = substr($0, RSTART + 10, RLENGTH - 10)
              match($0, /OverflowPages:[0-9]+/); o = substr($0, RSTART + 14, RLENGTH - 14)
              bytes = ps * (b + l + o)
              if ($3 ~ /^_sync_shadow_/) shadow += bytes; else user += bytes }
    END { printf "shadow overhead on auth2: user DBIs %d KiB, shadow DBIs %d KiB (%.0f%%)\n", user / 1024, shadow / 1024, user ? 100 * shadow / user : 0 }'
grep -q "Stored snapshot" "$W/sync1.log" || fail "daemon 1 stored no snapshot"
passed=$((passed + 1))
echo "pdns47-e2e: $passed passed, 0 failed"
