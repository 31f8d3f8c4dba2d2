#!/usr/bin/env bash
# Builds oomtrace (installing its toolchain on first use) and installs the single binary.
#   scripts/install.sh [PREFIX]     default PREFIX=/usr/local  ->  PREFIX/bin/oomtrace
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${1:-/usr/local}
scripts/bootstrap.sh
cargo build --release --locked -p oomtrace >&2
install -D -m 0755 target/release/oomtrace "$prefix/bin/oomtrace"
echo "installed $prefix/bin/oomtrace" >&2
