#!/usr/bin/env bash
# What ships, checked end to end on a Debian 12 machine as root: the static binary (size, no
# dynamic libraries, name resolution, TLS with a private CA), the man pages (groff and mandoc
# without a warning), the .deb (installed, the unit's command run as user pdns, removed, purged),
# the .rpm (metadata, files, config flags, scriptlets), the systemd units (systemd-analyze verify
# and security) and the container root file system (run with chroot as a non-root uid).
#
# Installs what it needs: Debian packages, and cargo-deb / cargo-generate-rpm into
# /var/cache/lightningstream-tests/cargo-bin (about 9 minutes the first time, kept for the next
# run). Changes the machine: installs and purges the package "lightningstream", and creates the
# system user pdns when it is missing (Debian's pdns-server creates it too).
#
# Last line: "packaging: N passed, M failed"; exit status 0 only when nothing failed.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
TARGET=x86_64-unknown-linux-gnu
BIN=$REPO/target/$TARGET/release/lightningstream
# Writes LMDB records the way PowerDNS 4.8+ does (examples/seed.rs without compiling anything).
SEED="python3 $REPO/tests/seed-lmdb.py"
CACHE=${LS_TEST_CACHE:-/var/cache/lightningstream-tests}/cargo-bin
MAX_SIZE=$((8 * 1024 * 1024))

passed=0
failed=0
t_start=$(date +%s)
ok() { echo "ok   $*"; passed=$((passed + 1)); }
bad() { echo "FAIL $*"; failed=$((failed + 1)); }
# check NAME CMD...: runs CMD, output shown only when it fails
check() {
    local name=$1 out
    shift
    if out=$("$@" 2>&1); then ok "$name"; else bad "$name"; printf '%s\n' "$out" | tail -20 | sed 's/^/     /'; fi
}
finish() {
    echo "packaging: run time $(($(date +%s) - t_start)) s"
    echo "packaging: $passed passed, $failed failed"
    [ "$failed" = 0 ]
    exit
}
fatal() { bad "$*"; finish; }

[ "$(id -u)" = 0 ] || { echo "tests/packaging.sh: run as root"; exit 1; }

W=$(mktemp -d /tmp/lightningstream-packaging.XXXXXX)
chmod 755 "$W"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    rm -rf "$W"
}
trap cleanup EXIT

# --- tools -------------------------------------------------------------------------------
need=()
for pair in dpkg-deb:dpkg-dev rpm:rpm mandoc:mandoc groff:groff-base systemd-analyze:systemd \
    adduser:adduser setpriv:util-linux python3:python3 openssl:openssl readelf:binutils \
    file:file gzip:gzip cpio:cpio strace:strace; do
    command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
[ -r /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
python3 -c "import lmdb" 2>/dev/null || need+=(python3-lmdb)
if [ ${#need[@]} -gt 0 ]; then
    echo "== apt-get install ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null ||
        fatal "apt-get install ${need[*]}"
fi
export PATH=$CACHE/bin:$PATH
install_tool() { # BINARY CRATE VERSION
    if ! "$1" --version >/dev/null 2>&1; then
        echo "== cargo install $2 $3 (once, into $CACHE)"
        # --debug: a third of the build time; the tools run for seconds either way.
        cargo install --quiet --debug --locked --root "$CACHE" --version "$3" "$2" || fatal "cargo install $2"
    fi
}
install_tool cargo-deb cargo-deb '~3.8'
install_tool cargo-generate-rpm cargo-generate-rpm '~0.21'
echo "tools: $(cargo-deb --version), $(cargo-generate-rpm --version), rpm $(rpm --version | awk '{print $3}'), $(systemd-analyze --version | head -1)"

# --- the static binary and the packages ---------------------------------------------------
echo "== building the static binary and the packages"
packaging/build-packages.sh --locked > "$W/build.log" 2>&1 || { tail -30 "$W/build.log"; fatal "packaging/build-packages.sh"; }
ok "packaging/build-packages.sh"
DEB=$(ls target/debian/lightningstream_*_amd64.deb)
RPM=$(ls target/generate-rpm/lightningstream-*.x86_64.rpm)
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

size=$(stat -c %s "$BIN")
echo "     binary: $size bytes; deb: $(stat -c %s "$DEB") bytes; rpm: $(stat -c %s "$RPM") bytes"
check "binary is at most 8 MiB ($size bytes)" test "$size" -le "$MAX_SIZE"
static_binary() {
    file "$BIN" | grep -Eq 'static(-pie)? linked|statically linked' &&
        ! readelf -d "$BIN" | grep -q NEEDED &&
        ldd "$BIN" 2>&1 | grep -Eq 'not a dynamic executable|statically linked'
}
check "binary is static ($(file -b "$BIN" | grep -o "static[-a-z]* linked"))" static_binary
check "binary runs: --version" sh -c "'$BIN' --version | grep -qx 'lightningstream version $VERSION'"

# Name resolution (glibc's files + dns, built into the static binary) and TLS with a private
# CA, against a small HTTPS server that answers every request with S3's 403 AccessDenied: an
# HTTP error after the handshake means the connection worked.
cat > "$W/s3stub.py" <<'PY'
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def answer(self, body=True):
        data = b'<?xml version="1.0"?><Error><Code>AccessDenied</Code><Message>stub</Message></Error>'
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)
    def do_GET(self): self.answer()
    def do_HEAD(self): self.answer(False)
    def do_PUT(self): self.answer()
    def log_message(self, *a): pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
if len(sys.argv) > 2:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[1], sys.argv[2])
    s.socket = ctx.wrap_socket(s.socket, server_side=True)
open(sys.argv[-1] if len(sys.argv) in (2, 4) else "/dev/null", "w").write(str(s.server_address[1]))
s.serve_forever()
PY
(
    cd "$W" || exit 1
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj "/CN=ls test CA" &&
        openssl req -newkey rsa:2048 -nodes -keyout srv.key -out srv.csr -subj "/CN=localhost" &&
        printf 'subjectAltName=DNS:localhost\n' > srv.ext &&
        openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem -days 2 -extfile srv.ext
) > "$W/openssl.log" 2>&1 || { cat "$W/openssl.log"; fatal "openssl: test CA"; }
python3 "$W/s3stub.py" "$W/http.port" &
pids+=($!)
python3 "$W/s3stub.py" "$W/srv.pem" "$W/srv.key" "$W/https.port" &
pids+=($!)
for _ in $(seq 50); do [ -s "$W/http.port" ] && [ -s "$W/https.port" ] && break; sleep 0.1; done
s3conf() { # ENDPOINT [TLS-OPTIONS]
    printf 'lmdbs: {main: {path: %s/unused}}\nstorage:\n  type: s3\n  options: {endpoint_url: "%s", bucket: b, access_key: a, secret_key: s%s}\n' \
        "$W" "$1" "${2:+, tls: {$2\}}"
}
s3list() { # NAME EXPECTED-ERROR ENDPOINT [TLS-OPTIONS]
    s3conf "$3" "${4:-}" > "$W/s3.yaml"
    local out
    out=$(timeout 60 "$BIN" -c "$W/s3.yaml" snapshots list 2>&1)
    if printf '%s' "$out" | grep -q "$2"; then ok "$1"; else bad "$1"; printf '%s\n' "$out" | tail -3 | sed 's/^/     /'; fi
}
s3list "s3 over http://localhost:PORT: name resolved, request answered (HTTP 403)" \
    "HTTP 403" "http://localhost:$(cat "$W/http.port")"
s3list "s3 over https with tls.ca_file: TLS handshake done (HTTP 403)" \
    "HTTP 403" "https://localhost:$(cat "$W/https.port")" "ca_file: $W/ca.pem"
s3list "s3 over https without the private CA: certificate refused" \
    "UnknownIssuer" "https://localhost:$(cat "$W/https.port")"
SSL_CERT_FILE=$W/ca.pem s3list "s3 over https, CA from SSL_CERT_FILE: TLS handshake done (HTTP 403)" \
    "HTTP 403" "https://localhost:$(cat "$W/https.port")"
s3list "s3 with an unknown host name: resolver error" \
    "failed to lookup address" "http://lightningstream-test.invalid:80"

# No systemd runs here, so the unit's system call filter cannot be tried for real: trace the
# binary doing what the daemon does (a sync pass over fs storage, an S3 request over TLS) and
# check each system call against the unit's SystemCallFilter= lines.
trace_dir=$W/strace
mkdir -p "$trace_dir/bucket"
$SEED "$trace_dir/db" k=v >/dev/null || fatal "seeding the LMDB"
printf 'instance: t\nlmdbs: {main: {path: %s/db, schema_tracks_changes: true, options: {no_subdir: true}}}\nstorage: {type: fs, options: {root_path: %s/bucket}}\n' \
    "$trace_dir" "$trace_dir" > "$trace_dir/fs.yaml"
s3conf "https://localhost:$(cat "$W/https.port")" "ca_file: $W/ca.pem" > "$trace_dir/s3.yaml"
strace -f -qq -o "$trace_dir/fs.trace" "$BIN" -c "$trace_dir/fs.yaml" sync --only-once > /dev/null 2>&1
strace -f -qq -o "$trace_dir/s3.trace" "$BIN" -c "$trace_dir/s3.yaml" snapshots list > /dev/null 2>&1
syscalls_allowed() {
    python3 - "$REPO/packaging/systemd/lightningstream.service" "$trace_dir"/*.trace <<'PY'
import re, subprocess, sys
def expand(name, seen):
    if not name.startswith("@"):
        return {name}
    out = set()
    text = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True, text=True, check=True).stdout
    for line in text.splitlines()[1:]:
        line = line.strip()
        if line and not line.startswith("#") and line not in seen:
            seen.add(line)
            out |= expand(line, seen)
    return out
allow, deny = set(), set()
for line in open(sys.argv[1]):
    if line.startswith("SystemCallFilter="):
        v = line.split("=", 1)[1].strip()
        target = deny if v.startswith("~") else allow
        for g in v.lstrip("~").split():
            target |= expand(g, set())
used = set()
for trace in sys.argv[2:]:
    for line in open(trace):
        m = re.match(r"\d+\s+([a-z0-9_]+)\(", line)
        if m:
            used.add(m.group(1))
bad = sorted((used - allow) | (used & deny))
print(f"{len(used)} system calls used")
if bad or len(used) < 20:
    print("refused by the unit's filter:", bad)
    sys.exit(1)
PY
}
check "every system call of a sync pass and an S3 TLS request passes the unit's SystemCallFilter" syscalls_allowed

# --- man pages ------------------------------------------------------------------------------
for page in man/lightningstream.1 man/lightningstream.yaml.5; do
    check "groff -man -ww -z $page: no warning" sh -c "out=\$(groff -man -ww -z $page 2>&1); [ -z \"\$out\" ] || { echo \"\$out\"; false; }"
    check "mandoc -Tlint $page: no warning" sh -c "out=\$(mandoc -Tlint $page 2>&1); [ -z \"\$out\" ] || { echo \"\$out\"; false; }"
done

# --- rpm --------------------------------------------------------------------------------------
echo "== rpm -qip"
rpm -qip "$RPM" 2>/dev/null | sed 's/^/     /'
echo "== rpm -qlp"
rpm -qlp "$RPM" 2>/dev/null | sed 's/^/     /'
echo "== rpm -qp --scripts"
rpm -qp --scripts "$RPM" 2>/dev/null | sed 's/^/     /'
rpm_files=$(rpm -qlp "$RPM" 2>/dev/null)
rpm_has_files() {
    for f in /usr/bin/lightningstream /usr/lib/systemd/system/lightningstream.service \
        /usr/lib/systemd/system/lightningstream@.service /etc/lightningstream/lightningstream.yaml \
        /usr/share/man/man1/lightningstream.1.gz /usr/share/man/man5/lightningstream.yaml.5.gz \
        /usr/share/doc/lightningstream/copyright /usr/share/doc/lightningstream/README.md \
        /usr/share/lightningstream/grafana/lightningstream.json; do
        grep -qx "$f" <<< "$rpm_files" || { echo "missing $f"; return 1; }
    done
}
check "rpm: binary, units, conffile, man pages, README, copyright and dashboard listed" rpm_has_files
check "rpm: version $VERSION" sh -c "rpm -qp --qf '%{VERSION}' '$RPM' | grep -qx '$VERSION'"
check "rpm: the conffile is the only config file" sh -c "[ \"\$(rpm -qp --configfiles '$RPM')\" = /etc/lightningstream/lightningstream.yaml ]"
check "rpm: the conffile is %config(noreplace)" sh -c "rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' '$RPM' | grep -Eqx 'c[a-z]*n[a-z]* /etc/lightningstream/lightningstream.yaml'"
check "rpm: the binary is the static one" sh -c "rpm2cpio '$RPM' | (cd '$W' && mkdir -p rpmroot && cd rpmroot && cpio -idm --quiet ./usr/bin/lightningstream) && cmp '$W/rpmroot/usr/bin/lightningstream' '$BIN'"
check "rpm: requires only /bin/sh and rpmlib" sh -c "! rpm -qpR '$RPM' | grep -Ev '^(/bin/sh|rpmlib\\(|config\\(lightningstream\\))'"
check "rpm: no % macro left in the scriptlets" sh -c "! rpm -qp --scripts '$RPM' | grep -n '%'"
rpm_scripts_parse() {
    for tag in POSTIN PREUN POSTUN; do
        rpm -qp --qf "%{$tag}" "$RPM" > "$W/$tag.sh"
        [ -s "$W/$tag.sh" ] || { echo "no $tag scriptlet"; return 1; }
        sh -n "$W/$tag.sh" || return 1
    done
}
check "rpm: %post, %preun and %postun present and valid POSIX shell" rpm_scripts_parse

# --- deb: install, run as pdns, remove, purge ----------------------------------------------------
echo "== dpkg-deb --info"
dpkg-deb --info "$DEB" | sed 's/^/     /'
check "deb: depends on nothing" sh -c "[ -z \"\$(dpkg-deb -f '$DEB' Depends)\" ]"
check "deb: conffiles lists the configuration" sh -c "dpkg-deb --ctrl-tarfile '$DEB' | tar -xO ./conffiles | grep -qx /etc/lightningstream/lightningstream.yaml"
check "deb: maintainer scripts are valid POSIX shell" sh -c "mkdir -p '$W/ctrl' && dpkg-deb -e '$DEB' '$W/ctrl' && for s in postinst prerm postrm; do sh -n '$W/ctrl/'\$s || exit 1; done"

if dpkg-query -W lightningstream >/dev/null 2>&1; then
    dpkg --purge lightningstream >/dev/null 2>&1
fi
if ! id pdns >/dev/null 2>&1; then
    adduser --system --group --home /var/lib/powerdns --no-create-home --quiet pdns || fatal "adduser pdns"
    echo "     created the system user pdns (pdns-server is not installed)"
fi
check "dpkg -i $(basename "$DEB")" dpkg -i "$DEB"
installed_files() {
    for f in /usr/bin/lightningstream /usr/lib/systemd/system/lightningstream.service \
        /usr/lib/systemd/system/lightningstream@.service /etc/lightningstream/lightningstream.yaml \
        /usr/share/man/man1/lightningstream.1.gz /usr/share/man/man5/lightningstream.yaml.5.gz \
        /usr/share/doc/lightningstream/copyright /usr/share/doc/lightningstream/README.md \
        /usr/share/lightningstream/grafana/lightningstream.json; do
        [ -f "$f" ] || { echo "missing $f"; return 1; }
    done
    cmp /usr/bin/lightningstream "$BIN" &&
        zcat /usr/share/man/man1/lightningstream.1.gz | cmp - man/lightningstream.1 &&
        dpkg-query -W -f '${Conffiles}\n' lightningstream | grep -q /etc/lightningstream/lightningstream.yaml
}
check "deb: binary, units, conffile, man pages (gzipped), README, copyright and dashboard installed" installed_files
check "deb: /usr/bin/lightningstream version" sh -c "[ \"\$(/usr/bin/lightningstream version)\" = '$VERSION' ]"
check "deb: the unit is neither enabled nor started" sh -c "! ls /etc/systemd/system/*.wants/lightningstream* 2>/dev/null"

# systemd-analyze: both units (the template as an instance with its configuration present).
cp /etc/lightningstream/lightningstream.yaml /etc/lightningstream/test.yaml
check "systemd-analyze verify lightningstream.service" systemd-analyze verify --man=no lightningstream.service
check "systemd-analyze verify lightningstream@test.service" systemd-analyze verify --man=no lightningstream@test.service
for unit in lightningstream.service lightningstream@test.service; do
    if out=$(systemd-analyze security --offline=true --no-pager "/usr/lib/systemd/system/${unit/@test/@}" 2>&1) ||
        out=$(systemd-analyze security --no-pager "$unit" 2>&1); then
        level=$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\) \([A-Z]*\).*/\1 \2/p')
        echo "     systemd-analyze security $unit: exposure $level"
        check "systemd-analyze security $unit: exposure at most 2.0 ($level)" awk -v l="${level%% *}" 'BEGIN { exit !(l != "" && l <= 2.0) }'
    else
        bad "systemd-analyze security $unit"
        printf '%s\n' "$out" | tail -5 | sed 's/^/     /'
    fi
done
rm -f /etc/lightningstream/test.yaml

# The unit's own command line, as user pdns with the unit's umask, on the packaged example
# configuration uncommented (its fs storage instead of S3, paths moved into a scratch dir),
# once with --only-once and once as a daemon stopped by SIGTERM.
mkdir -p "$W/powerdns" "$W/state"
$SEED "$W/powerdns/pdns.lmdb" example.org=192.0.2.1 www.example.org=192.0.2.80 >/dev/null || fatal "seeding the LMDB"
chown -R pdns:pdns "$W/powerdns" "$W/state"
# Uncomment: "#key" and "#  key" lines are configuration, "# text" is prose, "##" the fs storage.
# Only the storage marked "##" is kept (the others are alternatives), and the opt-in sections
# that need files of their own (encryption keys) or a cleaner (retention) are left out.
sed -e 's/^##\(storage:\)$/FS\1/' -e 's/^##//' -e 's/^#\([^ #]\)/\1/' -e 's/^#\(  \)/\1/' \
    /etc/lightningstream/lightningstream.yaml |
    awk '/^FSstorage:$/ { skip = 0; print "storage:"; next }
         /^(storage|encryption|retention):$/ { skip = 1; next }
         skip && /^ / { next } { skip = 0; print }' |
    sed -e "s|/var/lib/powerdns|$W/powerdns|g" -e "s|/var/lib/lightningstream|$W/state|g" > "$W/ls.yaml"
echo "== the packaged example, uncommented, with fs storage"
grep -v '^ *#' "$W/ls.yaml" | grep . | sed 's/^/     /'
exec_start=$(sed -n 's/^ExecStart=//p' /usr/lib/systemd/system/lightningstream.service)
umask_unit=$(sed -n 's/^UMask=//p' /usr/lib/systemd/system/lightningstream.service)
read -r -a cmd <<< "${exec_start//\/etc\/lightningstream\/lightningstream.yaml/$W/ls.yaml}"
as_pdns() { (umask "$umask_unit" && exec setpriv --reuid pdns --regid pdns --init-groups -- "$@"); }
if as_pdns "${cmd[@]}" --only-once > "$W/once.log" 2>&1; then
    ok "ExecStart as pdns: ${cmd[*]} --only-once"
else
    bad "ExecStart as pdns: ${cmd[*]} --only-once"
    tail -20 "$W/once.log" | sed 's/^/     /'
fi
synced() {
    # An LMDB with no transaction yet (the shard, created by the daemon) has nothing to upload.
    local main
    main=$(ls "$W/state/bucket"/main__auth1__*.pb.gz) || return 1
    [ "$(stat -c %U "$main")" = pdns ] || { echo "the snapshot is not owned by pdns"; return 1; }
    [ "$(stat -c %U:%a "$W/powerdns/pdns.lmdb-0")" = pdns:640 ] || { stat "$W/powerdns/pdns.lmdb-0"; return 1; }
    as_pdns /usr/bin/lightningstream -c "$W/ls.yaml" snapshots dump "$(basename "$main")" 2>/dev/null |
        grep -q '^www.example.org  =  192.0.2.80'
}
check "  snapshot of main written by pdns with the records, shard LMDB created pdns 0640" synced
# A subshell that execs: $! is the daemon itself.
(umask "$umask_unit" && exec setpriv --reuid pdns --regid pdns --init-groups -- "${cmd[@]}") > "$W/daemon.log" 2>&1 &
daemon=$!
pids+=($daemon)
sleep 2
kill -TERM "$daemon"
wait "$daemon"
status=$?
if [ "$status" = 0 ] && grep -q 'msg=Stopped' "$W/daemon.log"; then
    ok "ExecStart as pdns as a daemon: SIGTERM stops it with status 0"
else
    bad "ExecStart as pdns as a daemon: SIGTERM gave status $status"
    tail -5 "$W/daemon.log" | sed 's/^/     /'
fi

check "dpkg -r lightningstream" dpkg -r lightningstream
removed() {
    for f in /usr/bin/lightningstream /usr/lib/systemd/system/lightningstream.service \
        /usr/lib/systemd/system/lightningstream@.service /usr/share/man/man1/lightningstream.1.gz \
        /usr/share/man/man5/lightningstream.yaml.5.gz /usr/share/lightningstream/grafana/lightningstream.json; do
        [ ! -e "$f" ] || { echo "still there: $f"; return 1; }
    done
    [ -f /etc/lightningstream/lightningstream.yaml ] || { echo "the conffile is gone"; return 1; }
    dpkg-query -W -f '${Status}\n' lightningstream | grep -q 'config-files'
}
check "  removed: binary, units and man pages gone, conffile kept" removed
check "dpkg --purge lightningstream" dpkg --purge lightningstream
purged() {
    [ ! -e /etc/lightningstream ] || { ls -la /etc/lightningstream; return 1; }
    ! ls -d /usr/share/man/*/lightningstream* /usr/share/doc/lightningstream 2>/dev/null || return 1
    ! dpkg-query -W lightningstream 2>/dev/null
}
check "  purged: /etc/lightningstream, man pages and docs gone" purged

# --- container ------------------------------------------------------------------------------
check "container-rootfs.sh --check: version and sync --only-once in a chroot as uid 953" \
    packaging/container-rootfs.sh --check "$W/rootfs"
containerfile_sources() {
    packaging/container-rootfs.sh >/dev/null || return 1
    local src
    for src in $(sed -n 's/^COPY \(--[^ ]* \)*//p' packaging/Containerfile | awk '{ $NF = ""; print }'); do
        [ -e "$src" ] || { echo "Containerfile copies $src, which container-rootfs.sh did not make"; return 1; }
    done
    grep -q '^FROM scratch$' packaging/Containerfile && grep -q '^USER 953:953$' packaging/Containerfile
}
check "Containerfile: FROM scratch, USER 953, every COPY source assembled" containerfile_sources

finish
