# Shared pieces of the PowerDNS end-to-end scripts (sourced, not run): a work directory cleaned
# up on exit, the in-process S3 test server, Auth and lightningstream configs, and timed steps
# that retry a check until it holds. The sourcing script sets RUN (a command prefix such as
# `chroot $ROOT`, or empty) before calling start_auth/pdnsutil_on.

W=$(mktemp -d "/tmp/${E2E_NAME:-e2e}.XXXXXX")
pids=()
e2e_cleanup_extra() { :; }
e2e_cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    e2e_cleanup_extra
    if [ "${KEEP:-}" = "" ]; then rm -rf "$W"; else echo "work files kept in $W"; fi
}
trap e2e_cleanup EXIT

fail() {
    echo "FAIL: $*"
    for f in "$W"/*.log; do echo "--- $f"; tail -20 "$f"; done
    exit 1
}

# Builds the daemon and the S3 test server, starts the latter; sets LS and S3.
start_s3() {
    cargo build --quiet --bin lightningstream --example s3_test_server
    LS=$PWD/target/debug/lightningstream
    target/debug/examples/s3_test_server "$W/s3" > "$W/s3.url" 2> "$W/s3.log" &
    pids+=($!)
    for _ in $(seq 100); do [ -s "$W/s3.url" ] && break; sleep 0.05; done
    S3=$(head -1 "$W/s3.url")
    [ -n "$S3" ] || fail "S3 test server did not start"
}

DNS=(0 5311 5312)
WEB=(0 8111 8112)

# start_auth N EXTRA-CONFIG-LINES: an Auth server with its own LMDB under $W/authN, on loopback,
# with every cache that would hide another process's changes turned off.
start_auth() {
    local d=$W/auth$1
    mkdir -p "$d"
    cat > "$d/pdns.conf" <<CONF
launch=lmdb
lmdb-filename=$d/pdns.lmdb
lmdb-shards=1
lmdb-random-ids=yes
lmdb-sync-mode=nosync
local-address=127.0.0.1:${DNS[$1]}
socket-dir=$d
api=yes
api-key=secret
webserver=yes
webserver-address=127.0.0.1
webserver-port=${WEB[$1]}
webserver-allow-from=127.0.0.0/8
webserver-max-bodysize=256
zone-cache-refresh-interval=0
cache-ttl=0
negquery-cache-ttl=0
query-cache-ttl=0
dnssec-key-cache-ttl=0
zone-metadata-cache-ttl=0
consistent-backends=yes
security-poll-suffix=
${2:-}
CONF
    $RUN /usr/sbin/pdns_server --config-dir="$d" --daemon=no --guardian=no --disable-syslog \
        --write-pid=no > "$W/auth$1.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 200); do
        dig +short +time=1 +tries=1 @127.0.0.1 -p "${DNS[$1]}" version.bind CH TXT >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    fail "auth$1 did not start"
}

declare -A SYNC_PID
# start_sync N LMDB-MODE-LINES: a daemon for authN's two LMDB files (main and shard);
# $STORAGE_EXTRA (YAML lines indented by two) goes into its storage section, $SYNC_EXTRA (YAML
# lines) at the end of its config.
start_sync() {
    local d=$W/auth$1
    cat > "$d/ls.yaml" <<YAML
instance: auth$1
lmdbs:
  main:
    path: $d/pdns.lmdb
${2:-}
    options: {no_subdir: true, create: true, file_mask: 0600}
  shard:
    path: $d/pdns.lmdb-0
${2:-}
    options: {no_subdir: true, create: true, file_mask: 0600}
storage:
  type: s3
  options:
    endpoint_url: $S3
    bucket: pdns
    create_bucket: true
    access_key: AKIAIOSFODNN7EXAMPLE
    secret_key: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY
${STORAGE_EXTRA:-}
lmdb_poll_interval: 200ms
storage_poll_interval: 200ms
log: {level: info, format: logfmt}
${SYNC_EXTRA:-}
YAML
    "$LS" -c "$d/ls.yaml" sync >> "$W/sync$1.log" 2>&1 &
    SYNC_PID[$1]=$!
    pids+=($!)
}

P() { local n=$1; shift; $RUN pdnsutil --config-dir="$W/auth$n" "$@"; }
api() { # N METHOD PATH [DATA]
    curl -sf -X "$2" -H "X-API-Key: secret" "http://127.0.0.1:${WEB[$1]}/api/v1/servers/localhost$3" ${4:+-d "$4"}
}

now_ms() { date +%s%3N; }
passed=0
ok() { printf 'ok   %-60s %6d ms\n' "$1" "$2"; passed=$((passed + 1)); }
# until_ok NAME CMD...: retries CMD until it succeeds (30 s at most), then reports the time
until_ok() {
    local name=$1 t0
    shift
    t0=$(now_ms)
    until "$@" >/dev/null 2>&1; do
        [ $(( $(now_ms) - t0 )) -lt 30000 ] || fail "$name"
        sleep 0.05
    done
    ok "$name" $(( $(now_ms) - t0 ))
}
answer() { dig +dnssec +time=1 +tries=1 @127.0.0.1 -p "${DNS[$1]}" "$2" "$3" | sed -n '/ANSWER SECTION/,/^$/p'; }
has() { answer "$1" "$2" "$3" | grep -Eq "$4"; }
lacks() { ! has "$@"; }
same_answers() { [ "$(answer 1 "$1" "$2" | sort)" = "$(answer 2 "$1" "$2" | sort)" ] && [ -n "$(answer 1 "$1" "$2")" ]; }

# The first steps both scenarios share: a zone and records created, changed and deleted on
# either side, each checked over DNS on the other server.
record_steps() {
    P 1 create-zone example.org ns1.example.org >/dev/null
    P 1 add-record example.org www A 300 192.0.2.1 >/dev/null
    until_ok "zone + record created on 1, served by 2" has 2 www.example.org A "192\.0\.2\.1"

    P 2 add-record example.org mail A 300 192.0.2.25 >/dev/null
    until_ok "record added on 2, served by 1" has 1 mail.example.org A "192\.0\.2\.25"

    P 1 replace-rrset example.org www A 300 192.0.2.2 >/dev/null
    until_ok "record changed on 1, served by 2" has 2 www.example.org A "192\.0\.2\.2$"

    P 2 delete-rrset example.org mail A >/dev/null
    until_ok "record deleted on 2, gone on 1" lacks 1 mail.example.org A "192\.0\.2\.25"
}

# big_zone_file NAME N: a zone file with N A records h1..hN.
big_zone_file() {
    echo "\$ORIGIN $1."
    echo "@ 3600 IN SOA ns1.$1. hostmaster.$1. 1 3600 600 604800 300"
    echo "@ 3600 IN NS ns1.$1."
    for i in $(seq 1 "$2"); do echo "h$i 300 IN A 10.$((i / 65536 % 256)).$((i / 256 % 256)).$((i % 256))"; done
}
