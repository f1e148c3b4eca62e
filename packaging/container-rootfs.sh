#!/bin/sh
# Assembles the root file system of packaging/Containerfile in DIR (default
# target/container-rootfs): the static binary, the CA bundle, /etc/passwd and /etc/group with
# the non-root user pdns (uid/gid 953, as in PowerDNS's own pdns-auth images, so that both
# containers can share the LMDB files), and /tmp. There is no container engine here, so
#
#   packaging/container-rootfs.sh --check [DIR]
#
# (as root) also proves the image works: it runs the binary inside DIR with chroot as uid 953,
# `version` and a `sync --only-once` of a seeded LMDB into fs storage inside DIR, then decodes
# the snapshot written. The static binary must have been built (packaging/build-static.sh);
# the check writes the LMDB with tests/seed-lmdb.py (python3-lmdb).
set -eu
cd "$(dirname "$0")/.."
TARGET=x86_64-unknown-linux-gnu
BIN=target/$TARGET/release/lightningstream
CA=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
ID=953
check=
if [ "${1:-}" = --check ]; then
    check=1
    shift
fi
ROOT=${1:-}
if [ -z "$ROOT" ]; then
    # The check leaves test data behind: never in the directory the Containerfile copies.
    if [ -n "$check" ]; then ROOT=$(mktemp -d /tmp/lightningstream-rootfs.XXXXXX); else ROOT=target/container-rootfs; fi
fi

[ -x "$BIN" ] || { echo "container-rootfs.sh: build $BIN first (packaging/build-static.sh)" >&2; exit 1; }
[ -r "$CA" ] || { echo "container-rootfs.sh: no CA bundle at $CA (apt-get install ca-certificates)" >&2; exit 1; }

rm -rf "$ROOT"
mkdir -p "$ROOT/usr/bin" "$ROOT/etc/ssl/certs" "$ROOT/etc/lightningstream" "$ROOT/tmp" \
    "$ROOT/var/lib/lightningstream" "$ROOT/var/lib/powerdns"
chmod 1777 "$ROOT/tmp"
install -m 755 "$BIN" "$ROOT/usr/bin/lightningstream"
install -m 644 "$CA" "$ROOT/etc/ssl/certs/ca-certificates.crt"
cat > "$ROOT/etc/passwd" <<PASSWD
root:x:0:0:root:/root:/nonexistent
pdns:x:$ID:$ID:PowerDNS:/var/lib/powerdns:/nonexistent
PASSWD
cat > "$ROOT/etc/group" <<GROUP
root:x:0:
pdns:x:$ID:
GROUP
chmod 644 "$ROOT/etc/passwd" "$ROOT/etc/group"
echo "rootfs assembled in $ROOT"
[ -n "$check" ] || exit 0

# --- the check: only as root, since chroot needs it ---
[ "$(id -u)" = 0 ] || { echo "container-rootfs.sh --check: run as root" >&2; exit 1; }
python3 tests/seed-lmdb.py "$ROOT/var/lib/powerdns/pdns.lmdb" example.org=192.0.2.1 >/dev/null ||
    { echo "container-rootfs.sh --check: seeding failed (apt-get install python3-lmdb)" >&2; exit 1; }
cat > "$ROOT/etc/lightningstream/lightningstream.yaml" <<YAML
instance: container1
lmdbs:
  main:
    path: /var/lib/powerdns/pdns.lmdb
    schema_tracks_changes: true
    options: {no_subdir: true, create: true, file_mask: 0640}
storage:
  type: fs
  options: {root_path: /var/lib/lightningstream/bucket}
log: {format: logfmt, timestamp: disable}
YAML
chown -R "$ID:$ID" "$ROOT/var/lib/powerdns" "$ROOT/var/lib/lightningstream"
run() { chroot --userspec="$ID:$ID" "$ROOT" /usr/bin/lightningstream "$@"; }

out=$(run version)
[ "$out" = "$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)" ] || { echo "version printed: $out" >&2; exit 1; }
echo "ok   version inside the rootfs as uid $ID: $out"
run --config /etc/lightningstream/lightningstream.yaml sync --only-once 2> "$ROOT/tmp/sync.log" ||
    { cat "$ROOT/tmp/sync.log" >&2; echo "sync --only-once failed inside the rootfs" >&2; exit 1; }
snap=$(cd "$ROOT/var/lib/lightningstream/bucket" && ls main__container1__*.pb.gz)
owner=$(stat -c %u "$ROOT/var/lib/lightningstream/bucket/$snap")
[ "$owner" = "$ID" ] || { echo "snapshot owned by uid $owner, not $ID" >&2; exit 1; }
echo "ok   sync --only-once inside the rootfs as uid $ID wrote $snap"
run --config /etc/lightningstream/lightningstream.yaml snapshots dump "$snap" 2>/dev/null |
    grep -q '^example.org  =  192.0.2.1' || { echo "the snapshot lacks the seeded record" >&2; exit 1; }
echo "ok   the snapshot holds the seeded record"
