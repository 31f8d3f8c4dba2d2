#!/usr/bin/env bash
# Unpacks Debian's syslog-ng (without installing it) into DIR, for checking the syslog-ng example
# on a machine whose system logger is rsyslog: the two packages conflict, so only one can be
# installed. Writes DIR/syslog-ng, a wrapper that runs the unpacked daemon with its own libraries
# and modules (e.g. `DIR/syslog-ng --syntax-only -f FILE`).
#
# Usage: deploy/shippers/unpack-syslog-ng.sh [DIR]   (default: target/syslog-ng)
# Needs: apt-get (its package lists: run `apt-get update` first), dpkg-deb.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
dest=$(realpath -m "${1:-$root/target/syslog-ng}")
[ -x "$dest/syslog-ng" ] && exit 0

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# syslog-ng-core and the libraries it needs that this machine does not have.
pkgs=(syslog-ng-core)
while read -r dep; do
  dpkg-query -W -f='${Status}' "$dep" 2>/dev/null | grep -q 'install ok installed' || pkgs+=("$dep")
done < <(apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
           --no-enhances syslog-ng-core | sed -n 's/^ *Depends: \([a-z0-9][a-z0-9.+-]*\)$/\1/p' | sort -u)
(cd "$work" && apt-get -qq -o APT::Sandbox::User=root download "${pkgs[@]}")
mkdir -p "$dest/root"
for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$dest/root"; done

modules=$(find "$dest/root/usr/lib/syslog-ng" -mindepth 1 -maxdepth 1 -type d -name '[0-9]*' | head -1)
cat > "$dest/syslog-ng" <<WRAP
#!/bin/sh
r="$dest/root"
LD_LIBRARY_PATH="\$r/usr/lib/syslog-ng:\$r/usr/lib/x86_64-linux-gnu:\$r/lib/x86_64-linux-gnu" \\
  exec "\$r/usr/sbin/syslog-ng" --module-path="$modules" "\$@"
WRAP
chmod +x "$dest/syslog-ng"
echo "unpack-syslog-ng: $dest/syslog-ng ($("$dest/syslog-ng" --version | head -1))" >&2
