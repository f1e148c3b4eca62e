#!/usr/bin/env bash
# The status page in a real browser (Debian's headless Chromium): two daemons, a and b, sync
# one LMDB each through the in-repo S3 test server (b with deltas on). Chromium opens a's `/`
# and the test reads the DOM it built: the verdict ("in sync"), the last local change, the
# last snapshot stored and its size, b's newest snapshot, lag and delta chain, no problem
# listed; then a corrupt object of b makes a's page say that b is behind and why. Every time
# the page must hold no <script>, give the same verdict with JavaScript disabled, and show none
# of the configuration's values (S3 keys, endpoint, paths). Screenshots of both states go to
# the output folder, ${LS_TEST_OUT:-target/test-output}/browser/ (status-in-sync.png,
# status-behind.png, and the DOMs as .html), kept after the run. Last, the Grafana dashboard
# (packaging/grafana/) is checked against the /metrics of these daemons and a third one whose
# bucket disappears (tests/check-dashboard.py: promtool on every expression, every metric real);
# the scrapes stay in the output folder too.
#
# Installs what it needs (Debian's chromium, py-lmdb from PyPI, promtool via
# tests/fetch-promtool.sh unless LS_PROMTOOL is set); builds the debug daemon and
# the S3 test server (already built by `cargo test --all-targets` in run.sh).
#
# Last line: "browser: N passed, M failed"; exit status 0 only when nothing failed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${LS_TEST_OUT:-$PWD/target/test-output}/browser
AK=AKIAIOSFODNN7EXAMPLE
SK=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY

passed=0
failed=0
t_start=$(date +%s)
ok() { echo "ok   $*"; passed=$((passed + 1)); }
bad() { echo "FAIL $*"; failed=$((failed + 1)); }
finish() {
    echo "browser: run time $(($(date +%s) - t_start)) s"
    echo "browser: $passed passed, $failed failed"
    [ "$failed" = 0 ]
    exit
}
fatal() {
    bad "$*"
    for f in "$W"/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -15 "$f"; }; done
    finish
}

W=$(mktemp -d /tmp/lightningstream-browser.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$W"
}
trap cleanup EXIT

# --- tools -------------------------------------------------------------------------------
if ! command -v chromium >/dev/null; then
    echo "== apt-get install chromium"
    t=$(date +%s)
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null ||
        fatal "apt-get install chromium"
    echo "     installed in $(($(date +%s) - t)) s"
fi
if ! python3 -c "import lmdb" 2>/dev/null; then
    echo "== pip install lmdb"
    python3 -m pip install --quiet lmdb || fatal "pip install lmdb"
fi
echo "tools: $(chromium --version 2>/dev/null)"
cargo build --quiet --bin lightningstream --example s3_test_server || fatal "cargo build"
LS=$PWD/target/debug/lightningstream
mkdir -p "$OUT"
rm -f "$OUT"/*.png "$OUT"/*.html "$OUT"/*.txt

# --- two daemons ----------------------------------------------------------------------------
target/debug/examples/s3_test_server "$W/s3" > "$W/s3.url" 2> "$W/s3.log" &
pids+=($!)
for _ in $(seq 100); do [ -s "$W/s3.url" ] && break; sleep 0.05; done
S3=$(head -1 "$W/s3.url")
[ -n "$S3" ] || fatal "S3 test server did not start"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
declare -A PORT
start() { # INSTANCE EXTRA-YAML
    local d=$W/$1
    mkdir -p "$d"
    PORT[$1]=$(port)
    python3 tests/seed-lmdb.py "$d/pdns.lmdb" "$1.example.org=192.0.2.1" > /dev/null || fatal "seeding $1"
    cat > "$d/ls.yaml" <<YAML
instance: $1
lmdbs:
  main:
    path: $d/pdns.lmdb
    schema_tracks_changes: true
    options: {no_subdir: true, create: true}
storage:
  type: s3
  options:
    endpoint_url: $S3
    bucket: ${BUCKET:-lightningstream}
    create_bucket: true
    access_key: $AK
    secret_key: $SK
http:
  address: 127.0.0.1:${PORT[$1]}
lmdb_poll_interval: 200ms
storage_poll_interval: 200ms
log: {level: info, format: logfmt}
$2
YAML
    "$LS" -c "$d/ls.yaml" sync > "$W/$1.log" 2>&1 &
    pids+=($!)
}
start a ""
start b "deltas: {enabled: true}"
healthy() { # INSTANCE
    for _ in $(seq 150); do
        python3 -c "import urllib.request,sys; sys.exit(urllib.request.urlopen(sys.argv[1], timeout=2).status != 200)" \
            "http://127.0.0.1:${PORT[$1]}/healthz" 2>/dev/null && return 0
        sleep 0.2
    done
    return 1
}
healthy a || fatal "daemon a: /healthz not 200 within 30 s"
healthy b || fatal "daemon b: /healthz not 200 within 30 s"
ok "daemons a and b started, /healthz 200"
# A change in b after its first full snapshot: stored as a delta, merged by a; and one in a.
python3 tests/seed-lmdb.py "$W/b/pdns.lmdb" www.b.example.org=192.0.2.2 > /dev/null || fatal "seeding b"
python3 tests/seed-lmdb.py "$W/a/pdns.lmdb" www.a.example.org=192.0.2.3 > /dev/null || fatal "seeding a"
for _ in $(seq 100); do
    grep -q 'msg="Loaded remote update".*snapshot_instance=b.*kind=delta' "$W/a.log" && break
    sleep 0.2
done

# --- the page in Chromium -------------------------------------------------------------------
# The flags keep Chromium off the network (this machine has none but loopback) and give each
# run a fresh profile.
chrome() { # OUTPUT-OPTION URL [EXTRA...]
    local profile
    profile=$(mktemp -d "$W/chromium.XXXXXX")
    timeout 60 chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
        --disable-component-update --disable-sync --no-first-run --user-data-dir="$profile" \
        --window-size=1280,1100 "${@:3}" "$1" "$2" 2>> "$W/chromium.log"
}
# check_dom NAME FILE PYTHON-ASSERTIONS: the DOM parsed into `page` (text, tags, attributes).
check_dom() {
    local name=$1 file=$2 out
    if out=$(python3 - "$file" "$AK" "$SK" "$S3" "$W" "$3" <<'PY' 2>&1
import html.parser, re, sys
path, ak, sk, s3, work, code = sys.argv[1:]
dom = open(path).read()

class Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.text, self.stack, self.by_id = [], [], [], {}
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        node = {"tag": tag, "attrs": a, "text": []}
        self.tags.append(node)
        if tag not in ("br", "meta", "link", "img", "input", "hr"):
            self.stack.append(node)
        if "id" in a:
            self.by_id[a["id"]] = node
    def handle_endtag(self, tag):
        while self.stack:
            if self.stack.pop()["tag"] == tag:
                break
    def handle_data(self, data):
        self.text.append(data)
        for n in self.stack:
            n["text"].append(data)

p = Page()
p.feed(dom)
text = lambda n: re.sub(r"\s+", " ", "".join(n["text"])).strip()
def rows(attr, value):
    return [n for n in p.tags if n["tag"] == "tr" and n["attrs"].get(attr) == value]
def field(name):
    f = [n for n in p.tags if n["attrs"].get("data-field") == name]
    assert len(f) == 1, f"one data-field={name}: {len(f)}"
    return text(f[0])
verdict = p.by_id["verdict"]
# Never, whatever the state: scripts, configuration values.
assert not any(n["tag"] == "script" for n in p.tags), "the page has a <script>"
for secret in (ak, sk, s3, work):
    assert secret not in dom, f"configuration value on the page: {secret[:4]}..."
exec(code)
PY
    ); then
        ok "$name"
    else
        bad "$name"
        printf '%s\n' "$out" | tail -8 | sed 's/^/     /'
    fi
}
# A screenshot must be a PNG of the window's size with something drawn (> 10 kB).
png() {
    if python3 - "$1" <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
assert struct.unpack(">II", data[16:24]) == (1280, 1100)
PY
    then ok "screenshot $1"; else bad "screenshot $1"; fi
}
URL="http://127.0.0.1:${PORT[a]}/"
# Up to 15 s for a to show b's delta merged and nothing catching up.
for _ in $(seq 30); do
    chrome --dump-dom "$URL" > "$OUT/status-in-sync.html"
    grep -q 'data-instance="b" data-state="in-sync"' "$OUT/status-in-sync.html" &&
        grep -q 'full snapshot + deltas' "$OUT/status-in-sync.html" && break
    sleep 0.5
done
check_dom "in sync: verdict, a's last change and snapshot with size, b's snapshot, lag 0, delta chain, no problem" \
    "$OUT/status-in-sync.html" '
assert verdict["attrs"]["data-state"] == "in-sync", text(verdict)
assert text(verdict).startswith("In sync: the newest snapshot of every other instance (b) is merged here"), text(verdict)
assert text(p.by_id["instance"]) == "a"
assert re.match(r"txn \d+, seen \d{4}-\d\d-\d\dT[\d:.]+Z \(\d+s ago\)$", field("last-local-change")), field("last-local-change")
assert re.search(r"main__a__\d{8}-\d{6}-\d{9}__GX\.pb\.gz", field("last-stored")), field("last-stored")
assert re.match(r"\d+ B \(\d+ bytes\)$|[\d.]+ KB \(\d+ bytes\)$", field("last-stored-size")), field("last-stored-size")
assert int(re.search(r"\((\d+) bytes\)", field("last-stored-size")).group(1)) > 0
(b,) = rows("data-instance", "b")
row = text(b)
assert re.search(r"main__b__", dom), "b snapshot name"
assert "in sync" in row and "full snapshot + deltas, up to txn" in row, row
# Its newest snapshot: time and age, and the same time as merged here.
times = re.findall(r"\d{4}-\d\d-\d\dT[\d:.]+Z", row)
assert len(times) == 2 and times[0] == times[1] and re.search(r"Z \(\d+s ago\)", row), row
assert [n for n in p.tags if n["attrs"].get("data-lag-seconds") == "0"], "lag 0"
(none,) = [n for n in p.tags if n["attrs"].get("data-kind") == "none"]
assert text(none) == "none"
'
chrome --screenshot="$OUT/status-in-sync.png" "$URL" > /dev/null
png "$OUT/status-in-sync.png"
# Usable without JavaScript: the HTML as served (what a browser with scripts off renders;
# Chromium's --dump-dom itself needs scripts) holds the same verdict and rows, and nothing on
# the page runs a script (no <script>, no on* handler, no javascript: link).
python3 -c "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())" \
    "$URL" > "$W/served.html" || fatal "GET $URL"
check_dom "without JavaScript: the served HTML has the same verdict and rows, and no script at all" "$W/served.html" '
assert verdict["attrs"]["data-state"] == "in-sync", text(verdict)
assert rows("data-instance", "b")[0]["attrs"]["data-state"] == "in-sync"
handlers = [(n["tag"], k) for n in p.tags for k in n["attrs"] if k.startswith("on")]
assert not handlers, handlers
assert "javascript:" not in dom.lower()
'

# --- b behind: a corrupt object of b, newer than anything it stored ------------------------
name="main__b__$(date -u +%Y%m%d-%H%M%S)-000000000__GX.pb.gz"
python3 - "$S3" "$name" "$AK" "$SK" <<'PY' || fatal "uploading the corrupt object"
# A signed S3 PUT (SigV4) of garbage, as a broken writer would leave it.
import datetime, hashlib, hmac, sys, urllib.request
endpoint, name, ak, sk = sys.argv[1:]
body = b"not a gzipped snapshot"
host = endpoint.split("://", 1)[1]
now = datetime.datetime.now(datetime.timezone.utc)
amz, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
payload = hashlib.sha256(body).hexdigest()
path = f"/lightningstream/{name}"
headers = f"host:{host}\nx-amz-content-sha256:{payload}\nx-amz-date:{amz}\n"
signed = "host;x-amz-content-sha256;x-amz-date"
creq = f"PUT\n{path}\n\n{headers}\n{signed}\n{payload}"
scope = f"{day}/us-east-1/s3/aws4_request"
sts = f"AWS4-HMAC-SHA256\n{amz}\n{scope}\n{hashlib.sha256(creq.encode()).hexdigest()}"
key = ("AWS4" + sk).encode()
for part in (day, "us-east-1", "s3", "aws4_request"):
    key = hmac.new(key, part.encode(), hashlib.sha256).digest()
sig = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
req = urllib.request.Request(endpoint + path, data=body, method="PUT", headers={
    "x-amz-date": amz, "x-amz-content-sha256": payload,
    "Authorization": f"AWS4-HMAC-SHA256 Credential={ak}/{scope}, SignedHeaders={signed}, Signature={sig}"})
urllib.request.urlopen(req, timeout=10).read()
PY
for _ in $(seq 30); do
    chrome --dump-dom "$URL" > "$OUT/status-behind.html"
    grep -q 'data-instance="b" data-state="behind"' "$OUT/status-behind.html" && break
    sleep 0.5
done
check_dom "b behind: the verdict names b, its lag and why (corrupt object), listed under problems" \
    "$OUT/status-behind.html" "
assert verdict['attrs']['data-state'] == 'behind', text(verdict)
assert re.match(r'Not in sync: b \(LMDB main, \d+s behind: load error: $name is corrupt and skipped', text(verdict)), text(verdict)
(b,) = rows('data-instance', 'b')
assert b['attrs']['data-state'] == 'behind'
assert '$name' in dom
errors = [text(n) for n in p.tags if n['attrs'].get('data-kind') == 'error']
assert any('load b' in e and 'corrupt' in e for e in errors), errors
"
chrome --screenshot="$OUT/status-behind.png" "$URL" > /dev/null
png "$OUT/status-behind.png"

# --- the Grafana dashboard against these daemons' /metrics ----------------------------------
# A third daemon on a bucket of its own, removed under it once it runs: the S3 error and
# failed-listing series exist only once something failed.
PROMTOOL=${LS_PROMTOOL:-$(tests/fetch-promtool.sh)} || fatal "fetching promtool"
BUCKET=gone start c ""
healthy c || fatal "daemon c: /healthz not 200 within 30 s"
rm -rf "$W/s3/gone"
scrape() { python3 -c "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())" "http://127.0.0.1:${PORT[$1]}/metrics"; }
for _ in $(seq 100); do
    scrape c 2>/dev/null | grep -q '^lightningstream_syncer_snapshots_list_failed_total' && break
    sleep 0.2
done
for i in a b c; do scrape "$i" > "$OUT/metrics-$i.txt" || fatal "GET /metrics of $i"; done
if python3 tests/check-dashboard.py packaging/grafana/lightningstream.json "$PROMTOOL" "$OUT"/metrics-*.txt > "$W/dashboard.out" 2>&1; then
    ok "Grafana dashboard: $(tail -1 "$W/dashboard.out" | sed "s/^dashboard: //") checks (every expression through promtool, every metric in /metrics)"
else
    grep -v '^ok' "$W/dashboard.out" | sed 's/^/     /'
    bad "dashboard: packaging/grafana/lightningstream.json"
fi

finish
