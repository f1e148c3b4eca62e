#!/usr/bin/env bash
# The container image, built and run for real without a Docker daemon: packaging/build-image.sh
# (buildah, vfs storage, chroot isolation) writes the OCI archive, skopeo inspects it (labels,
# user, entrypoint, size), podman loads and runs it with runc (root here lacks CAP_SYS_RESOURCE
# and crun refuses the cgroup set-up, hence the lowered ulimits and --runtime runc): `version`,
# `sync --only-once` on a mounted LMDB volume into a mounted fs bucket, and a `sync` daemon that
# answers /healthz, uploads a change made while it runs and exits 0 on `podman stop` (SIGTERM);
# always as uid 953 with a read-only root file system and no network but the host's loopback.
#
# Installs what it needs (buildah podman skopeo runc from Debian, py-lmdb from PyPI). The
# static binary is reused when cargo finds it fresh (tests/packaging.sh, which run.sh runs
# first, builds it), else built. Image and container storage live in a scratch directory,
# removed afterwards.
#
# Last line: "container: N passed, M failed"; exit status 0 only when nothing failed.
set -uo pipefail
cd "$(dirname "$0")/.."
MAX_IMAGE=$((10 * 1000 * 1000))
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
ID=953

passed=0
failed=0
t_start=$(date +%s)
ok() { echo "ok   $*"; passed=$((passed + 1)); }
bad() { echo "FAIL $*"; failed=$((failed + 1)); }
check() {
    local name=$1 out
    shift
    if out=$("$@" 2>&1); then ok "$name"; else bad "$name"; printf '%s\n' "$out" | tail -20 | sed 's/^/     /'; fi
}
finish() {
    echo "container: run time $(($(date +%s) - t_start)) s"
    echo "container: $passed passed, $failed failed"
    [ "$failed" = 0 ]
    exit
}
fatal() { bad "$*"; finish; }

[ "$(id -u)" = 0 ] || { echo "tests/container.sh: run as root"; exit 1; }

W=$(mktemp -d /tmp/lightningstream-container.XXXXXX)
chmod 755 "$W"
PODMAN=(podman --root "$W/podman" --runroot "$W/podman-run" --storage-driver vfs
    --cgroup-manager cgroupfs --events-backend file)
RUN=("${PODMAN[@]}" run --runtime runc --ulimit nofile=4096:4096 --ulimit nproc=4096:4096
    --read-only --user "$ID:$ID")
cleanup() {
    "${PODMAN[@]}" rm -f -t 0 ls-daemon >/dev/null 2>&1
    # vfs layers of a run container can hold read-only directories: make them removable.
    chmod -R u+w "$W" 2>/dev/null
    rm -rf "$W"
}
trap cleanup EXIT

# --- tools -------------------------------------------------------------------------------
need=()
for pair in buildah:buildah podman:podman skopeo:skopeo runc:runc python3:python3; do
    command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
[ -r /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
if [ ${#need[@]} -gt 0 ]; then
    echo "== apt-get install ${need[*]}"
    t=$(date +%s)
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null ||
        fatal "apt-get install ${need[*]}"
    echo "     installed in $(($(date +%s) - t)) s"
fi
# tests/seed-lmdb.py needs py-lmdb in whichever python3 comes first (run.sh does the same).
if ! python3 -c "import lmdb" 2>/dev/null; then
    echo "== pip install lmdb"
    python3 -m pip install --quiet lmdb || fatal "pip install lmdb"
fi
echo "tools: $(buildah --version), $(podman --version), $(skopeo --version), $(runc --version | head -1)"

# --- build -----------------------------------------------------------------------------------
# The static binary: nothing to do when tests/packaging.sh has just built it (cargo sees it is
# fresh), a full release build otherwise.
echo "== packaging/build-static.sh"
t=$(date +%s)
packaging/build-static.sh --locked > "$W/static.log" 2>&1 || { tail -30 "$W/static.log"; fatal "packaging/build-static.sh"; }
echo "     static binary ready in $(($(date +%s) - t)) s"
echo "== packaging/build-image.sh"
t=$(date +%s)
ARCHIVE=$W/lightningstream-oci.tar
if BUILDAH_ROOT=$W/buildah BUILDAH_RUNROOT=$W/buildah-run packaging/build-image.sh --no-build "$ARCHIVE" > "$W/build.log" 2>&1; then
    ok "packaging/build-image.sh: OCI archive written ($(stat -c %s "$ARCHIVE") bytes, $(($(date +%s) - t)) s)"
else
    tail -30 "$W/build.log"
    fatal "packaging/build-image.sh"
fi

# --- inspect -------------------------------------------------------------------------------
skopeo inspect "oci-archive:$ARCHIVE" > "$W/inspect.json" 2>&1 || { cat "$W/inspect.json"; fatal "skopeo inspect"; }
skopeo inspect --config "oci-archive:$ARCHIVE" > "$W/config.json" 2>&1 || { cat "$W/config.json"; fatal "skopeo inspect --config"; }
json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }
label() { json "$W/inspect.json" "d['Labels'].get('org.opencontainers.image.$1', '')"; }
echo "     labels: version=$(label version) source=$(label source) licenses=$(label licenses)"
check "label org.opencontainers.image.version is $VERSION" test "$(label version)" = "$VERSION"
check "labels org.opencontainers.image.source and .licenses set" sh -c "[ -n '$(label source)' ] && [ -n '$(label licenses)' ]"
check "config: user $ID:$ID" test "$(json "$W/config.json" "d['config']['User']")" = "$ID:$ID"
check "config: entrypoint /usr/bin/lightningstream, default command sync" test \
    "$(json "$W/config.json" "' '.join(d['config']['Entrypoint'] + d['config']['Cmd'])")" = \
    "/usr/bin/lightningstream --config /etc/lightningstream/lightningstream.yaml sync"
check "one layer" test "$(json "$W/inspect.json" "len(d['Layers'])")" = 1
# COPY of a directory copies its content, not the directory: modes and owners of the
# directories themselves are easy to get wrong (a /tmp that uid 953 cannot write to).
layer_files() {
    python3 - "$ARCHIVE" "$ID" <<'PY'
import io, json, sys, tarfile
archive, uid = tarfile.open(sys.argv[1]), int(sys.argv[2])
index = json.load(archive.extractfile("index.json"))
blob = lambda d: archive.extractfile("blobs/" + d.replace(":", "/")).read()
manifest = json.loads(blob(index["manifests"][0]["digest"]))
want = {
    "tmp": (0o1777, 0), "var/lib/lightningstream": (0o755, uid), "var/lib/powerdns": (0o755, uid),
    "usr/bin/lightningstream": (0o755, 0), "etc/passwd": (0o644, 0), "etc/group": (0o644, 0),
    "etc/ssl/certs/ca-certificates.crt": (0o644, 0),
}
seen, bad = {}, []
for layer in manifest["layers"]:
    for m in tarfile.open(fileobj=io.BytesIO(blob(layer["digest"]))):
        name = m.name.rstrip("/").removeprefix("./")
        seen[name] = (m.mode & 0o7777, m.uid)
        if name not in want and (m.uid != 0 or m.mode & 0o022):
            bad.append(f"{name}: mode {m.mode:o} uid {m.uid}")
for name, (mode, owner) in want.items():
    if seen.get(name) != (mode, owner):
        bad.append(f"{name}: {seen.get(name)} instead of ({mode:o}, {owner})")
print(f"{len(seen)} entries")
if bad:
    sys.exit("\n".join(bad))
PY
}
check "layer: /tmp 1777, /var/lib/{lightningstream,powerdns} owned by $ID, the rest root's and not writable by others" layer_files

"${PODMAN[@]}" load -q -i "$ARCHIVE" > "$W/load.log" 2>&1 || { cat "$W/load.log"; fatal "podman load"; }
IMAGE=localhost/lightningstream:$VERSION
size=$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$IMAGE")
echo "     image: $size bytes unpacked, $(stat -c %s "$ARCHIVE") bytes as OCI archive (compressed)"
check "image at most 10 MB unpacked ($size bytes)" test "$size" -le "$MAX_IMAGE"

# --- run --------------------------------------------------------------------------------------
out=$("${RUN[@]}" --rm --network none "$IMAGE" version 2>&1)
check "podman run IMAGE version: $out" test "$out" = "$VERSION"

mkdir -p "$W/lmdb" "$W/bucket" "$W/etc"
python3 tests/seed-lmdb.py "$W/lmdb/pdns.lmdb" example.org=192.0.2.1 >/dev/null || fatal "seeding the LMDB"
chown -R "$ID:$ID" "$W/lmdb" "$W/bucket"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$W/etc/lightningstream.yaml" <<YAML
instance: container1
lmdbs:
  main:
    path: /var/lib/powerdns/pdns.lmdb
    schema_tracks_changes: true
    options: {no_subdir: true, create: true, file_mask: 0640}
storage:
  type: fs
  options: {root_path: /var/lib/lightningstream/bucket}
http:
  address: 127.0.0.1:$PORT
log: {format: logfmt, timestamp: disable}
YAML
chmod 644 "$W/etc/lightningstream.yaml"
VOLUMES=(-v "$W/lmdb:/var/lib/powerdns" -v "$W/bucket:/var/lib/lightningstream/bucket"
    -v "$W/etc/lightningstream.yaml:/etc/lightningstream/lightningstream.yaml:ro")

if "${RUN[@]}" --rm --network none "${VOLUMES[@]}" "$IMAGE" \
    --config /etc/lightningstream/lightningstream.yaml sync --only-once > "$W/once.log" 2>&1; then
    ok "podman run IMAGE sync --only-once (read-only root, uid $ID, volumes)"
else
    bad "podman run IMAGE sync --only-once"
    tail -20 "$W/once.log" | sed 's/^/     /'
fi
snapshot_written() {
    local snap
    snap=$(cd "$W/bucket" && ls main__container1__*.pb.gz | tail -1) || return 1
    [ "$(stat -c %u "$W/bucket/$snap")" = "$ID" ] || { echo "$snap owned by uid $(stat -c %u "$W/bucket/$snap")"; return 1; }
    "${RUN[@]}" --rm --network none "${VOLUMES[@]}" "$IMAGE" \
        --config /etc/lightningstream/lightningstream.yaml snapshots dump "$snap" 2>/dev/null |
        grep -q "^$1  =  $2"
}
check "  snapshot in the bucket volume, owned by uid $ID, holds the seeded record" snapshot_written example.org 192.0.2.1

# The daemon, with the default command line of the image (the configuration mounted).
"${RUN[@]}" -d --name ls-daemon --network host "${VOLUMES[@]}" "$IMAGE" > "$W/daemon.id" 2>&1 ||
    { cat "$W/daemon.id"; fatal "podman run -d IMAGE (the daemon)"; }
healthz() {
    python3 - "http://127.0.0.1:$PORT/healthz" <<'PY'
import json, sys, time, urllib.request
deadline = time.time() + 30
while True:
    try:
        with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
            body = json.load(r)
            if r.status == 200 and body.get("ok"):
                print(body["status"])
                sys.exit(0)
    except Exception as e:
        err = e
    if time.time() > deadline:
        sys.exit(f"no healthy /healthz within 30 s: {err}")
    time.sleep(0.3)
PY
}
check "daemon in the container: /healthz answers 200 (the Kubernetes probe)" healthz
before=$(ls "$W/bucket" | grep -c '^main__container1__')
python3 tests/seed-lmdb.py "$W/lmdb/pdns.lmdb" www.example.org=192.0.2.80 >/dev/null || fatal "seeding the LMDB"
change_uploaded() {
    for _ in $(seq 100); do
        [ "$(ls "$W/bucket" | grep -c '^main__container1__')" -gt "$before" ] && snapshot_written www.example.org 192.0.2.80 && return 0
        sleep 0.2
    done
    echo "no new snapshot with www.example.org within 20 s"
    return 1
}
check "  a change made while it runs is uploaded" change_uploaded
# Its memory, against the request of the example Kubernetes manifest: anonymous memory (heap
# and stacks; the LMDB map is page cache) of the idle daemon after a few syncs.
request=$(awk '/- name: lightningstream$/ { c = 1 } c && /memory:/ { print $2; exit }' packaging/kubernetes/statefulset.yaml)
pid=$("${PODMAN[@]}" inspect --format '{{.State.Pid}}' ls-daemon)
rss_anon=$(awk '/^RssAnon:/ { print $2 * 1024 }' "/proc/$pid/status")
hwm=$(awk '/^VmHWM:/ { print $2 * 1024 }' "/proc/$pid/status")
echo "     daemon memory: RssAnon $((rss_anon / 1024)) KiB, peak RSS (VmHWM, with LMDB pages) $((hwm / 1024)) KiB; manifest request $request"
check "  daemon's RssAnon ($((rss_anon / 1024)) KiB) below the manifest's memory request ($request)" \
    test "$rss_anon" -lt "$(( ${request%Mi} * 1024 * 1024 ))"
t=$(date +%s%N)
"${PODMAN[@]}" stop -t 20 ls-daemon > /dev/null 2>&1
stop_ms=$((($(date +%s%N) - t) / 1000000))
code=$("${PODMAN[@]}" inspect --format '{{.State.ExitCode}}' ls-daemon 2>&1)
"${PODMAN[@]}" logs ls-daemon > "$W/daemon.log" 2>&1
if [ "$code" = 0 ] && grep -q 'msg=Stopped' "$W/daemon.log"; then
    ok "podman stop (SIGTERM): exit status 0 after $stop_ms ms"
else
    bad "podman stop (SIGTERM): exit status $code after $stop_ms ms"
    tail -10 "$W/daemon.log" | sed 's/^/     /'
fi

finish
