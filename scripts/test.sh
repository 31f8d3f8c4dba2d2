#!/usr/bin/env bash
# The whole test suite: unit tests, CLI tests, the root tests that make the kernel do real OOM
# kills, and the same real-OOM tests inside qemu on Debian 11's 5.10 and Debian 12's 6.1 and 6.12 kernels once per attach
# mode (`cargo xtask vm-test`, ~20 minutes). Installs what it needs first (scripts/bootstrap.sh).
# Run as root for the root tests; without root they print SKIP lines and the rest still runs.
#
#   scripts/test.sh            everything
#   scripts/test.sh --no-vm    without the VM tests (says so at the end)
set -euo pipefail
cd "$(dirname "$0")/.."
vm=1
for arg in "$@"; do
  case "$arg" in
    --no-vm) vm=0 ;;
    *) echo "usage: scripts/test.sh [--no-vm]" >&2; exit 2 ;;
  esac
done
scripts/bootstrap.sh

# The machine is tested as a user has it: nothing here mounts tracefs or otherwise sets the box
# up (a fresh machine has no tracefs mounted; oomtrace copes on its own, see tests/tests/fresh_box.rs).

echo "== format and lints" >&2
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
# The eBPF crate once more on its own: in the workspace pass feature unification hands it
# oomtrace-common with the loader's `user` feature, which the eBPF build never has.
cargo clippy --locked -p oomtrace-ebpf --all-targets -- -D warnings
echo "== tests" >&2
cargo build --locked --workspace
cargo test --locked --workspace -- --test-threads=2
if [ "$vm" = 1 ]; then
  echo "== VM tests: Debian 5.10, 6.1 and 6.12 under qemu, every attach mode" >&2
  cargo xtask vm-test --kernel all --attach all
else
  echo "SKIP VM tests (--no-vm): fentry/kprobe, cgroup v2 and other kernels were not tested" >&2
fi
