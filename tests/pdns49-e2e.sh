#!/usr/bin/env bash
# End to end with the main use case: two PowerDNS Authoritative 4.9 servers (Debian trixie, native
# Lightning Stream headers) next to two `lightningstream sync` daemons in native mode, one bucket
# on a real S3 server (examples/s3_test_server.rs), all on loopback. Auth 4.9 does not install on
# this Debian release, so it runs in a debootstrap chroot, built once and cached as a tarball
# ($LS_TEST_CACHE, default /var/cache/lightningstream-tests). Every step is checked through DNS,
# pdnsutil or the HTTP API of the other server, never by reading the LMDB, and timed.
#
# usage: tests/pdns49-e2e.sh            (needs root: debootstrap, chroot, mounts)
#   BIG_API_RECORDS=100000 tests/pdns49-e2e.sh   also times N records created over the API
set -euo pipefail
cd "$(dirname "$0")/.."

E2E_NAME=pdns49-e2e
source tests/e2e-common.sh
CACHE=${LS_TEST_CACHE:-/var/cache/lightningstream-tests}
TARBALL=$CACHE/trixie-pdns49.tar.zst
ROOT=$W/root
RUN="chroot $ROOT"
e2e_cleanup_extra() {
    for m in "$ROOT$W" "$ROOT/dev" "$ROOT/proc"; do mountpoint -q "$m" && umount -l "$m"; done
}

# The chroot: restored from the cache, or built (about half a minute here) and cached.
need_pkgs=()
command -v zstd >/dev/null || need_pkgs+=(zstd)
command -v dig >/dev/null || need_pkgs+=(dnsutils)
command -v curl >/dev/null || need_pkgs+=(curl)
[ -f "$TARBALL" ] || command -v debootstrap >/dev/null || need_pkgs+=(debootstrap)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
mkdir -p "$ROOT"
if [ -f "$TARBALL" ]; then
    tar -C "$ROOT" --zstd -xf "$TARBALL"
else
    echo "== building the Debian trixie chroot with PowerDNS Auth 4.9 (cached in $TARBALL)"
    t0=$(date +%s)
    debootstrap --variant=minbase trixie "$ROOT" http://deb.debian.org/debian >"$W/debootstrap.log" 2>&1 \
        || fail "debootstrap"
    printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d"
    chmod +x "$ROOT/usr/sbin/policy-rc.d"
    cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
    mount -t proc proc "$ROOT/proc"
    chroot "$ROOT" apt-get update -q >"$W/apt.log" 2>&1
    DEBIAN_FRONTEND=noninteractive chroot "$ROOT" apt-get install -y -q --no-install-recommends \
        pdns-server pdns-backend-lmdb >>"$W/apt.log" 2>&1 || fail "apt-get install in the chroot"
    chroot "$ROOT" apt-get clean
    umount "$ROOT/proc"
    mkdir -p "$CACHE"
    tar -C "$ROOT" --zstd -cf "$TARBALL.tmp" . && mv "$TARBALL.tmp" "$TARBALL"
    echo "chroot built in $(( $(date +%s) - t0 )) s"
fi
mount -t proc proc "$ROOT/proc"
mount --bind /dev "$ROOT/dev"
# The same path inside and outside, so Auth and the daemons name the LMDB files alike.
mkdir -p "$ROOT$W"
mount --bind "$W" "$ROOT$W"
AUTH_VERSION=$(chroot "$ROOT" dpkg-query -W -f '${Version}' pdns-server 2>/dev/null || true)
case "$AUTH_VERSION" in 4.9.*) echo "PowerDNS Auth $AUTH_VERSION (trixie chroot)" ;; *) fail "no Auth 4.9 in the chroot ($AUTH_VERSION)" ;; esac

start_s3
AUTH49="lmdb-lightning-stream=yes
lmdb-flag-deleted=yes"
start_auth 1 "$AUTH49"
start_auth 2 "$AUTH49"
# Let Auth finish creating and upgrading its LMDB files before the daemons open them.
for n in 1 2; do
    for _ in $(seq 100); do [ -e "$W/auth$n/pdns.lmdb-0" ] && break; sleep 0.05; done
done
sleep 0.5
NATIVE="    schema_tracks_changes: true"
# Retention for the zone undo at the end: both daemons archive what they see, every second.
STORAGE_EXTRA="  cleanup: {enabled: true, interval: 1s, must_keep_interval: 5s}"
SYNC_EXTRA="retention: {all: 24h}"
start_sync 1 "$NATIVE"
start_sync 2 "$NATIVE"

record_steps

# Both sides change the same RRset at once: last writer wins, the same everywhere.
P 1 replace-rrset example.org race A 300 198.51.100.1 >/dev/null &
r1=$!
P 2 replace-rrset example.org race A 300 198.51.100.2 >/dev/null &
r2=$!
wait "$r1" "$r2"
until_ok "concurrent edits of one RRset end identical" same_answers race.example.org A

P 1 secure-zone example.org >/dev/null 2>&1
P 1 set-meta example.org X-LS-TEST hello >/dev/null
P 1 generate-tsig-key ls-test-key hmac-sha256 >/dev/null
until_ok "secure-zone on 1, signed answers from 2" has 2 www.example.org A "RRSIG"
meta_on_2() { P 2 get-meta example.org X-LS-TEST | grep -q hello; }
tsig_on_2() { P 2 list-tsig-keys | grep -q ls-test-key; }
until_ok "metadata set on 1, listed by 2" meta_on_2
until_ok "TSIG key generated on 1, listed by 2" tsig_on_2

api 2 POST /zones '{"name":"api.test.","kind":"Native","nameservers":["ns1.api.test."]}' >/dev/null
api 2 PATCH /zones/api.test. '{"rrsets":[{"name":"a.api.test.","type":"A","ttl":60,"changetype":"REPLACE","records":[{"content":"192.0.2.9","disabled":false}]}]}' >/dev/null
until_ok "zone created over the HTTP API on 2, served by 1" has 1 a.api.test A "192\.0\.2\.9"

# Daemon 1 dies without warning; both sides keep changing; it comes back.
kill -9 "${SYNC_PID[1]}"
wait "${SYNC_PID[1]}" 2>/dev/null || true
P 2 add-record example.org while-down-2 A 300 203.0.113.2 >/dev/null
P 1 add-record example.org while-down-1 A 300 203.0.113.1 >/dev/null
sleep 0.5
start_sync 1 "$NATIVE"
until_ok "daemon 1 killed and restarted: 2's change reaches 1" has 1 while-down-2.example.org A "203\.0\.113\.2"
until_ok "daemon 1 killed and restarted: 1's change reaches 2" has 2 while-down-1.example.org A "203\.0\.113\.1"

# A large zone lands on 2 while Auth 2 keeps answering and taking writes.
N=${BIG_ZONE_RECORDS:-20000}
big_zone_file big.test "$N" > "$W/big.zone"
P 2 create-zone busy.test ns1.busy.test >/dev/null
P 1 load-zone big.test "$W/big.zone" >/dev/null 2>&1
t0=$(now_ms); worst=0; writes=0
until has 2 "h$N.big.test" A "10\."; do
    s=$(now_ms)
    dig +time=2 +tries=1 @127.0.0.1 -p 5312 www.example.org A | grep -q "192.0.2.2" || fail "Auth 2 did not answer during the merge"
    P 2 add-record busy.test "w$writes" A 300 192.0.2.77 >/dev/null 2>&1 || fail "Auth 2 refused a write during the merge"
    writes=$((writes + 1))
    e=$(( $(now_ms) - s )); [ "$e" -gt "$worst" ] && worst=$e
    [ $(( $(now_ms) - t0 )) -lt 60000 ] || fail "$N-record zone never reached 2"
done
ok "$N-record zone loaded on 1, served by 2 ($writes writes on 2 meanwhile, slowest query+write ${worst} ms)" $(( $(now_ms) - t0 ))
grep -q "Loaded remote update" "$W/sync2.log" || fail "daemon 2 merged nothing"
until_ok "writes made on 2 during the merge reach 1" has 1 "w$((writes - 1)).busy.test" A "192\.0\.2\.77"

if [ -n "${BIG_API_RECORDS:-}" ]; then
    M=$BIG_API_RECORDS
    api 1 POST /zones '{"name":"api-big.test.","kind":"Native","nameservers":["ns1.api-big.test."]}' >/dev/null
    python3 - "$M" > "$W/rrsets.json" <<'PY'
import json, sys
n = int(sys.argv[1])
print(json.dumps({"rrsets": [{"name": f"r{i}.api-big.test.", "type": "A", "ttl": 60, "changetype": "REPLACE",
    "records": [{"content": f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", "disabled": False}]} for i in range(n)]}))
PY
    t0=$(now_ms)
    curl -sf -X PATCH -H "X-API-Key: secret" "http://127.0.0.1:8111/api/v1/servers/localhost/zones/api-big.test." \
        --data-binary "@$W/rrsets.json" >/dev/null || fail "API PATCH of $M records"
    t1=$(now_ms)
    until has 2 "r$((M - 1)).api-big.test" A "10\."; do
        [ $(( $(now_ms) - t0 )) -lt 600000 ] || fail "$M API records never reached 2"
        sleep 0.1
    done
    ok "$M records created over the API on 1 (API took $((t1 - t0)) ms), all served by 2" $(( $(now_ms) - t0 ))
fi

P 2 delete-zone example.org >/dev/null
until_ok "zone deleted on 2, gone on 1" lacks 1 www.example.org A "192\.0\.2\.2"

# Undo a mistake: a signed zone with records and metadata, deleted with pdnsutil on 1, brought
# back from the retained history by `pdns restore-zone` on 2; both serve it again, signed with
# the original keys.
P 1 create-zone undo.test ns1.undo.test >/dev/null
P 1 add-record undo.test www A 300 192.0.2.80 >/dev/null
P 1 add-record undo.test @ TXT 300 '"keep me"' >/dev/null
P 1 secure-zone undo.test >/dev/null 2>&1
P 1 set-meta undo.test X-UNDO before >/dev/null
until_ok "signed zone created on 1, signed answers from 2" has 2 www.undo.test A "RRSIG"
undo_meta_on_2() { P 2 get-meta undo.test X-UNDO | grep -q before; }
until_ok "zone metadata set on 1, listed by 2" undo_meta_on_2
dnskeys() { dig +short +time=1 +tries=1 @127.0.0.1 -p "${DNS[$1]}" undo.test DNSKEY | sort; }
KEYS_BEFORE=$(dnskeys 2)
[ -n "$KEYS_BEFORE" ] || fail "no DNSKEY for undo.test on 2"
sleep 0.2
NS=$(date +%s%N)
AT=$(date -u -d "@${NS:0:10}" +%Y-%m-%dT%H:%M:%S).${NS:10}Z
AT_NAME=$(date -u -d "@${NS:0:10}" +%Y%m%d-%H%M%S)-${NS:10}
# The state at $AT is retained once a cleaner has archived the objects stored before it.
undo_retained() {
    "$LS" -c "$W/auth2/ls.yaml" pdns restore-zone undo.test --at "$AT" --dry-run > "$W/undo-wait.txt" 2>"$W/undo-wait.log"
    grep -q "nothing to do" "$W/undo-wait.txt"
}
until_ok "state of $AT retained (restore-zone dry run: nothing to do)" undo_retained
P 1 delete-zone undo.test >/dev/null
until_ok "zone deleted on 1, gone on 2" lacks 2 www.undo.test A "192\.0\.2\.80"
# The cleaners (Go rules) remove the history from before $AT from the bucket, down to at most
# each instance's newest snapshot of each db; the restore reads the retained copies.
before_at_cleaned() {
    ! ls "$W/s3/pdns" | awk -F__ -v t="$AT_NAME" 'NF >= 4 && $3 < t {print $1 "__" $2}' | sort | uniq -d | grep -q .
}
until_ok "history from before $AT cleaned from the bucket" before_at_cleaned
"$LS" -c "$W/auth2/ls.yaml" pdns restore-zone undo.test --at "$AT" --dry-run > "$W/undo-dry.txt" 2>>"$W/undo.log" \
    || fail "restore-zone --dry-run"
grep -q "www A" "$W/undo-dry.txt" && grep -q "dry run" "$W/undo-dry.txt" || fail "dry run did not list the records: $(cat "$W/undo-dry.txt")"
# A zone that never existed, and a time before anything was retained, are refused.
"$LS" -c "$W/auth2/ls.yaml" pdns restore-zone nothere.test --at "$AT" 2>"$W/undo-err.txt" && fail "restored a zone that never existed"
grep -q "did not exist" "$W/undo-err.txt" || fail "unclear refusal: $(cat "$W/undo-err.txt")"
"$LS" -c "$W/auth2/ls.yaml" pdns restore-zone undo.test --at 2h 2>"$W/undo-err.txt" && fail "restored before the retained window"
grep -q "retain" "$W/undo-err.txt" || fail "unclear refusal: $(cat "$W/undo-err.txt")"
t0=$(now_ms)
"$LS" -c "$W/auth2/ls.yaml" pdns restore-zone undo.test --at "$AT" > "$W/undo.txt" 2>>"$W/undo.log" || fail "restore-zone"
ok "pdns restore-zone on 2 ($(grep -c '^restore' "$W/undo.txt") keys written back)" $(( $(now_ms) - t0 ))
until_ok "restored zone served by 2, signed" has 2 www.undo.test A "RRSIG"
until_ok "restored zone reaches 1, signed" has 1 www.undo.test A "RRSIG"
until_ok "restored TXT record served by 1" has 1 undo.test TXT "keep me"
undo_meta_on_1() { P 1 get-meta undo.test X-UNDO | grep -q before; }
until_ok "restored metadata listed by 1" undo_meta_on_1
same_keys() { [ "$(dnskeys 1)" = "$KEYS_BEFORE" ] && [ "$(dnskeys 2)" = "$KEYS_BEFORE" ]; }
until_ok "both serve the original DNSKEYs" same_keys
# The signatures validate against the original key, on both servers.
KSK=$(echo "$KEYS_BEFORE" | awk '$1 == 257 {print; exit}')
[ -n "$KSK" ] || fail "no KSK among the original keys"
printf 'trust-anchors {\n  undo.test. static-key %s %s %s "%s";\n};\n' \
    $(echo "$KSK" | awk '{print $1, $2, $3}') "$(echo "$KSK" | cut -d' ' -f4- | tr -d ' ')" > "$W/anchor.conf"
validated() { delv -a "$W/anchor.conf" +root=undo.test @127.0.0.1 -p "${DNS[$1]}" www.undo.test A 2>&1 | grep -q "; fully validated"; }
until_ok "RRSIGs on 1 validate with the original key" validated 1
until_ok "RRSIGs on 2 validate with the original key" validated 2

grep -E 'level=(error|fatal)' "$W"/sync*.log && fail "errors in the daemon logs"
echo "pdns49-e2e: $passed passed, 0 failed"
