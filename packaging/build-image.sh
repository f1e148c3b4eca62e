#!/bin/sh
# Builds the container image of packaging/Containerfile without a Docker daemon, with buildah
# (Debian: apt-get install buildah), and writes it as an OCI archive:
#
#   packaging/build-image.sh [--no-build] [ARCHIVE]   -> target/lightningstream-VERSION-oci.tar
#
# Steps: the static binary (packaging/build-static.sh, skipped with --no-build when it is
# already there), its root file system (packaging/container-rootfs.sh), `buildah bud` with vfs
# storage and chroot isolation (works as root in a container or VM without overlayfs or user
# namespaces), then `buildah push` to the archive. The image carries the OCI labels version,
# source and licenses, taken from Cargo.toml. Load it with
#
#   podman load -i target/lightningstream-VERSION-oci.tar
#   docker load -i target/lightningstream-VERSION-oci.tar     # Docker 25+ reads OCI archives
#   skopeo copy oci-archive:target/lightningstream-VERSION-oci.tar docker-daemon:lightningstream:VERSION
#
# BUILDAH_ROOT and BUILDAH_RUNROOT choose buildah's storage (default: buildah's own); the
# working image is removed from it afterwards. The archive's path is printed last.
set -eu
cd "$(dirname "$0")/.."
build=1
if [ "${1:-}" = --no-build ]; then
    build=
    shift
fi
# A field of Cargo.toml's [package] table (not of the package.metadata tables after it).
field() { awk -v k="$1" '/^\[/ { p = ($0 == "[package]") } p && $1 == k && $2 == "=" { sub(/^[^"]*"/, ""); sub(/"$/, ""); print; exit }' Cargo.toml; }
VERSION=$(field version)
SOURCE=$(field repository)
LICENSES=$(field license)
ARCHIVE=${1:-target/lightningstream-$VERSION-oci.tar}
BIN=target/x86_64-unknown-linux-gnu/release/lightningstream

command -v buildah >/dev/null || { echo "build-image.sh: buildah is missing (apt-get install buildah)" >&2; exit 1; }
if [ -n "$build" ] || [ ! -x "$BIN" ]; then
    packaging/build-static.sh --locked >&2
fi
packaging/container-rootfs.sh >&2

set -- --storage-driver vfs
[ -z "${BUILDAH_ROOT:-}" ] || set -- "$@" --root "$BUILDAH_ROOT"
[ -z "${BUILDAH_RUNROOT:-}" ] || set -- "$@" --runroot "$BUILDAH_RUNROOT"
tag=localhost/lightningstream-build:$VERSION-$$
buildah "$@" bud --quiet --isolation chroot --layers=false -f packaging/Containerfile \
    --build-arg "VERSION=$VERSION" --build-arg "SOURCE=${SOURCE:-undeclared}" \
    --build-arg "LICENSES=${LICENSES:-NOASSERTION}" -t "$tag" . >&2
mkdir -p "$(dirname "$ARCHIVE")"
rm -f "$ARCHIVE"
buildah "$@" push --quiet "$tag" "oci-archive:$ARCHIVE:lightningstream:$VERSION" >&2
buildah "$@" rmi "$tag" >/dev/null
echo "$ARCHIVE"
