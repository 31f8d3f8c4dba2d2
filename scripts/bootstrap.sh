#!/usr/bin/env bash
# Installs everything oomtrace needs to build and test on a fresh Debian 12 machine of this kind.
# Idempotent and quiet when everything is already there. Pins are explained in README.md ("Toolchain").
set -euo pipefail

STABLE=1.99.1                 # aya 0.16 / aya-obj 0.6 need rustc >= 1.98
NIGHTLY=nightly-2026-07-01    # its LLVM (22.1.x) matches Debian's llvm-22, which bpf-linker links against
BPF_LINKER_VERSION=0.13       # built against Debian's llvm-22 (no prebuilt LLVM download)
LLVM_PREFIX=/usr/lib/llvm-22
APT_PKGS=(llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev)
# `cargo xtask vm-test`: qemu, busybox for the guest, and the decompressors that get vmlinux out
# of Debian's vmlinuz (6.1 is lz4, 6.12 zstd). The guest's binaries are static musl builds.
VM_APT_PKGS=(qemu-system-x86 busybox-static cpio zstd xz-utils lz4)
MUSL_TARGET=x86_64-unknown-linux-musl

say() { printf 'bootstrap: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi

# apt_ensure WHAT [apt-get install options --] PKG...: installs the packages that are missing.
apt_ensure() {
  local what=$1; shift
  local opts=()
  if [ "${1:-}" = "--no-install-recommends" ]; then opts+=("$1"); shift; fi
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ "${#missing[@]}" -gt 0 ] || return 0
  say "installing Debian packages $what: ${missing[*]}"
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${opts[@]}" "${missing[@]}" >/dev/null
}

apt_ensure "for the build" "${APT_PKGS[@]}"
# Without recommends: qemu's GUI, OVMF and block drivers are not needed for a serial-only guest.
apt_ensure "for the VM tests" --no-install-recommends "${VM_APT_PKGS[@]}"
# `cargo xtask bench`: the contenders oomtrace is measured against (bench/): Debian's bpftrace, and
# clang, libbpf-dev and bpftool to build the C floor against the running kernel's BTF.
BENCH_APT_PKGS=(bpftrace clang libbpf-dev bpftool)
apt_ensure "for the benchmark" "${BENCH_APT_PKGS[@]}"

if ! command -v rustup >/dev/null 2>&1; then
  say "rustup not found: install it from your distribution (Debian: apt-get install rustup) and re-run"
  exit 1
fi
if ! rustup run "$STABLE" rustc --version >/dev/null 2>&1; then
  say "installing Rust $STABLE"
  rustup toolchain install "$STABLE" --profile minimal -c rustfmt -c clippy >/dev/null 2>&1
fi
if ! rustup target list --toolchain "$STABLE" --installed 2>/dev/null | grep -qx "$MUSL_TARGET"; then
  say "adding the Rust target $MUSL_TARGET to $STABLE (static binaries for the VM tests)"
  rustup target add "$MUSL_TARGET" --toolchain "$STABLE" >/dev/null 2>&1
fi
if ! rustup run "$NIGHTLY" rustc --version >/dev/null 2>&1 \
   || ! rustup component list --toolchain "$NIGHTLY" --installed 2>/dev/null | grep -q '^rust-src'; then
  say "installing Rust $NIGHTLY with rust-src (eBPF target)"
  rustup toolchain install "$NIGHTLY" --profile minimal -c rust-src >/dev/null 2>&1
fi

want_linker() {
  command -v bpf-linker >/dev/null 2>&1 || return 0
  bpf-linker --version 2>/dev/null | grep -q " ${BPF_LINKER_VERSION}\." && return 1
  return 0
}
if want_linker; then
  say "building bpf-linker $BPF_LINKER_VERSION against $LLVM_PREFIX (a few minutes, once)"
  LLVM_SYS_221_PREFIX=$LLVM_PREFIX LIBRARY_PATH=$LLVM_PREFIX/lib \
    RUSTFLAGS="-C link-arg=-Wl,-rpath,$LLVM_PREFIX/lib" \
    cargo +"$STABLE" install --quiet --locked bpf-linker --version "~$BPF_LINKER_VERSION" \
      --no-default-features --features llvm-22
fi
