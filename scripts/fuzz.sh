#!/usr/bin/env bash
# Fuzzes oomtrace's decoders and parsers (the cargo-fuzz targets in fuzz/) for a bounded time:
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     # default: 60 s for each of every target
#
# Targets: record (ring-buffer records, decoded, enriched, written as JSON), tracefs_format,
# cgroup_text (/proc/self/mountinfo, /proc/<pid>/cgroup), cgroup_tree (the cgroup-path resolver
# on directories with crafted names), proc_text (/proc and cgroupfs text), btf (kernel BTF).
# Each starts from seeds made here (a record of each kind, this machine's tracefs formats and
# /proc files) plus what earlier runs found (fuzz/corpus/, not committed). A crash fails the
# script; its input is left in fuzz/artifacts/<target>/ (replay: cargo +NIGHTLY fuzz run TARGET FILE).
# Installs what it needs when missing: the nightly below and cargo-fuzz (from crates.io).
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(record tracefs_format cgroup_text cgroup_tree proc_text btf)
fi
# libFuzzer needs nightly (-Zsanitizer). This is the eBPF pin (oomtrace-ebpf/rust-toolchain.toml):
# rustc 1.98, the oldest oomtrace builds with, and already installed by scripts/bootstrap.sh.
NIGHTLY=nightly-2026-07-01
CARGO_FUZZ_VERSION=0.13.2

if ! rustup run "$NIGHTLY" rustc --version >/dev/null 2>&1; then
  rustup toolchain install "$NIGHTLY" --profile minimal
fi
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

# The targets never load the eBPF programs: embed an empty object instead of building them
# (which would need bpf-linker).
mkdir -p fuzz/target
: > fuzz/target/empty.bpf.o
export OOMTRACE_BPF_OBJECT=$PWD/fuzz/target/empty.bpf.o
# cgroup_tree makes and removes directories here.
export OOMTRACE_FUZZ_DIR=${OOMTRACE_FUZZ_DIR:-${TMPDIR:-/tmp}}

seed() { # seed TARGET NAME < content
  mkdir -p "fuzz/corpus/$1"
  cat > "fuzz/corpus/$1/seed-$2"
}
record() { # record KIND SIZE: a zeroed record of that kind (oomtrace-common/src/lib.rs)
  { printf "\\x0$1"; head -c $(($2 - 1)) /dev/zero; } | seed record "kind$1"
}
record 1 1664 # OomKill
record 2 128  # Signal
record 3 56   # Exit
record 4 16   # Reap
for e in oom/mark_victim signal/signal_generate sched/sched_process_exit \
  vmscan/mm_vmscan_memcg_reclaim_begin oom/start_task_reaping; do
  f=/sys/kernel/tracing/events/$e/format
  [ -r "$f" ] && seed tracefs_format "${e//\//-}" < "$f"
done
printf 'name: mark_victim\nID: 1\nformat:\n\tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;\n' |
  seed tracefs_format minimal
{ cat /proc/self/mountinfo; printf '\0'; cat /proc/self/cgroup; } | seed cgroup_text self
printf 'a b/"q"/back\\slash/\xff\xfe/tab\there' | seed cgroup_tree names
seed proc_text status < /proc/self/status
seed proc_text osrelease < /proc/sys/kernel/osrelease
head -c 32768 /proc/kallsyms | seed proc_text kallsyms
printf 'cache 100\nrss 200\ntotal_rss 2000\ntotal_rss_huge 2097152\n' | seed proc_text memory.stat-v1
printf 'anon 4096\nfile 8192\nanon_thp 2097152\nslab 7\n' | seed proc_text memory.stat-v2
mkdir -p fuzz/corpus/btf

failed=()
cd fuzz
for t in "${targets[@]}"; do
  echo "== fuzz $t for ${secs}s" >&2
  if ! cargo +"$NIGHTLY" fuzz run "$t" "corpus/$t" -- \
    -max_total_time="$secs" -max_len=8192 -timeout=10 -print_final_stats=1; then
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: crashes in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} target(s), ${secs}s each, no crash" >&2
