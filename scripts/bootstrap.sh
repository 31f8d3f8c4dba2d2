#!/usr/bin/env bash
# Installs everything oomtrace needs to build and test on a fresh Debian 12 machine of this kind.
# Idempotent and quiet when everything is already there. Pins are explained in README.md ("Toolchain").
set -euo pipefail

STABLE=1.99.1                 # aya 0.16 / aya-obj 0.6 need rustc >= 1.98
NIGHTLY=nightly-2026-07-01    # its LLVM (22.1.x) matches Debian's llvm-22, which bpf-linker links against
BPF_LINKER_VERSION=0.13       # built against Debian's llvm-22 (no prebuilt LLVM download)
LLVM_PREFIX=/usr/lib/llvm-22
APT_PKGS=(llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev)

say() { printf 'bootstrap: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi

missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v rustup >/dev/null 2>&1; then
  say "rustup not found: install it from your distribution (Debian: apt-get install rustup) and re-run"
  exit 1
fi
if ! rustup run "$STABLE" rustc --version >/dev/null 2>&1; then
  say "installing Rust $STABLE"
  rustup toolchain install "$STABLE" --profile minimal -c rustfmt -c clippy >/dev/null 2>&1
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
