#!/usr/bin/env bash
# The whole test suite: unit tests, CLI tests and the root tests that make the kernel do real OOM
# kills. Installs what it needs first (scripts/bootstrap.sh). Run as root for the root tests;
# without root they print SKIP lines and the unit/CLI tests still run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh

if [ "$(id -u)" -eq 0 ]; then
  # Classic tracepoints and their formats live in tracefs; bpffs is not needed (nothing is pinned).
  if [ ! -d /sys/kernel/tracing/events ] && [ ! -d /sys/kernel/debug/tracing/events ]; then
    mount -t tracefs tracefs /sys/kernel/tracing
  fi
fi

echo "== format and lints" >&2
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "== tests" >&2
cargo build --locked --workspace
cargo test --locked --workspace -- --test-threads=2
