#!/usr/bin/env bash
# Builds oomtrace's container image from a built binary, with no registry and no base image: an
# OCI image (umoci) holding the binary and the shared libraries it links (as `ldd` lists them),
# written as an OCI layout directory and as an OCI archive that every runtime can load:
#
#   containerd:  ctr -n k8s.io images import --base-name localhost/oomtrace target/oomtrace-oci.tar
#   podman:      podman load -i target/oomtrace-oci.tar
#   docker:      skopeo copy oci-archive:target/oomtrace-oci.tar docker-daemon:localhost/oomtrace:0.1.0
#   a registry:  skopeo copy oci-archive:target/oomtrace-oci.tar docker://REGISTRY/oomtrace:0.1.0
#
# Usage: deploy/image/build-oci.sh [--binary PATH] [--tag TAG] [--out DIR]
#   --binary  the oomtrace binary (default: target/release/oomtrace; `cargo build --release` first)
#   --tag     the image tag (default: the crate version, e.g. 0.1.0)
#   --out     where the layout (oomtrace-oci/) and the archive (oomtrace-oci.tar) go (default: target/)
# Needs: umoci, tar, ldd (Debian: apt-get install umoci).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
binary=$root/target/release/oomtrace
tag=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)
out=$root/target

while [ $# -gt 0 ]; do
  case $1 in
    --binary) binary=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "build-oci: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

command -v umoci >/dev/null || { echo "build-oci: umoci not found (Debian: apt-get install umoci)" >&2; exit 1; }
[ -x "$binary" ] || { echo "build-oci: $binary not found (cargo build --release -p oomtrace)" >&2; exit 1; }

layout=$out/oomtrace-oci
bundle=$out/oomtrace-oci.bundle
archive=$out/oomtrace-oci.tar
rm -rf "$layout" "$bundle" "$archive"
mkdir -p "$out"

umoci init --layout "$layout"
umoci new --image "$layout:$tag"
umoci unpack --image "$layout:$tag" "$bundle" >/dev/null
rootfs=$bundle/rootfs

install -D -m 0755 "$binary" "$rootfs/usr/local/bin/oomtrace"
# The dynamic loader and every library the binary links, at the paths the binary asks for.
ldd "$binary" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' | sort -u | while read -r lib; do
  # The loader must stay executable: the kernel execs it as the binary's interpreter.
  install -D -m 0755 "$lib" "$rootfs$lib"
done
# Writable scratch for nothing in particular: the root filesystem is mounted read-only.
mkdir -p "$rootfs/tmp"
chmod 1777 "$rootfs/tmp"

umoci repack --image "$layout:$tag" "$bundle"
umoci config --image "$layout:$tag" \
  --config.entrypoint /usr/local/bin/oomtrace \
  --config.cmd run \
  --config.label "org.opencontainers.image.title=oomtrace" \
  --config.label "org.opencontainers.image.description=eBPF tracer for Linux OOM kills" \
  --config.label "org.opencontainers.image.version=$tag"
umoci gc --layout "$layout"
rm -rf "$bundle"

tar -C "$layout" -cf "$archive" .
echo "build-oci: $layout:$tag and $archive" >&2
