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
E2E_NAME=pdns47-e2e
source tests/e2e-common.sh
RUN=

if ! command -v pdns_server >/dev/null || ! command -v dig >/dev/null || ! command -v curl >/dev/null \
    || [ ! -e /usr/lib/x86_64-linux-gnu/pdns/liblmdbbackend.so ]; then
    echo "== installing pdns-server pdns-backend-lmdb dnsutils"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pdns-server pdns-backend-lmdb dnsutils curl >/dev/null
fi
start_s3
start_auth 1
start_auth 2
# Auth 4.7 upgrades its LMDB on first start: start the daemons once it is ready. It creates the
# shard file only on first use, hence `create: true` (with Auth's 0600 mode) for both LMDBs.
P 1 list-all-zones >/dev/null
P 2 list-all-zones >/dev/null
SHADOW="    schema_tracks_changes: false
    dupsort_hack: true"
start_sync 1 "$SHADOW"
start_sync 2 "$SHADOW"

record_steps

P 1 secure-zone example.org >/dev/null 2>&1
until_ok "secure-zone on 1, signed answers from 2" has 2 www.example.org A "RRSIG"
until_ok "DNSKEY from 1 served by 2" has 2 example.org DNSKEY "DNSKEY"

api 2 POST /zones '{"name":"api.test.","kind":"Native","nameservers":["ns1.api.test."]}' >/dev/null
api 2 PATCH /zones/api.test. '{"rrsets":[{"name":"a.api.test.","type":"A","ttl":60,"changetype":"REPLACE","records":[{"content":"192.0.2.9","disabled":false}]}]}' >/dev/null
until_ok "zone created over the HTTP API on 2, served by 1" has 1 a.api.test A "192\.0\.2\.9"

P 1 delete-zone example.org >/dev/null
until_ok "zone deleted on 1, gone on 2" lacks 2 www.example.org A "192\.0\.2\.2"

# A bigger zone, for the shadow overhead figures.
N=${BIG_ZONE_RECORDS:-10000}
big_zone_file big.test "$N" > "$W/big.zone"
P 1 load-zone big.test "$W/big.zone" >/dev/null 2>&1
until_ok "zone of $N records loaded on 1, last one served by 2" has 2 "h$N.big.test" A "10\."

# Shadow overhead: pages of the _sync_shadow_* DBIs against the DBIs they shadow.
"$LS" -c "$W/auth2/ls.yaml" stats 2>/dev/null | awk '
    / dbi / { match($0, /PSize:[0-9]+/); ps = substr($0, RSTART + 6, RLENGTH - 6)
              match($0, /BranchPages:[0-9]+/); b = substr($0, RSTART + 12, RLENGTH - 12)
              match($0, /LeafPages:[0-9]+/); l = substr($0, RSTART + 10, RLENGTH - 10)
              match($0, /OverflowPages:[0-9]+/); o = substr($0, RSTART + 14, RLENGTH - 14)
              bytes = ps * (b + l + o)
              if ($3 ~ /^_sync_shadow_/) shadow += bytes; else user += bytes }
    END { printf "shadow overhead on auth2: user DBIs %d KiB, shadow DBIs %d KiB (%.0f%%)\n", user / 1024, shadow / 1024, user ? 100 * shadow / user : 0 }'
grep -q "Stored snapshot" "$W/sync1.log" || fail "daemon 1 stored no snapshot"
grep -E 'level=(error|fatal)' "$W"/sync*.log && fail "errors in the daemon logs"
echo "pdns47-e2e: $passed passed, 0 failed"
