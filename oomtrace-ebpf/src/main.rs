//! oomtrace's eBPF programs. One file per hook family:
//! - `mark_victim.rs`: one record per OOM-killed task (`tp_btf` or classic tracepoint).
//! - `oom_control.rs`: exact `struct oom_control` facts at `oom_kill_process` (fentry or kprobe).
//! - `reaper.rs`: the OOM reaper's progress on each victim.
//! - `reclaim.rs`: the trigger's latest reclaim attempt, for gfp/order on tracepoint-only kernels.
//! - `whodunit.rs`: every SIGKILL generated and every process that died of one.
//! - `python.rs`: CPython frames of the trigger's and the GIL holder's threads at the OOM.
//! - `stackcopy.rs`: the trigger's user registers and stack copy at the OOM; process notifications.
//! - `tgids.rs`: thread id → process id for the classic tracepoints that only name a thread.
//! - `kernel.rs`: reading kernel structs at offsets the loader resolved from BTF.
//!
//! Built for `bpfel-unknown-none` by oomtrace/build.rs. On the host (`cargo clippy --workspace`)
//! the crate is an ordinary binary with an empty `main`, so that the lints see the same code.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

mod kernel;
mod mark_victim;
mod oom_control;
#[expect(dead_code, reason = "called from mark_victim once it is wired in (issue 12)")]
mod python;
mod reaper;
mod reclaim;
#[expect(
    dead_code,
    reason = "called from mark_victim and reclaim once they are wired in (issue 12)"
)]
mod stackcopy;
mod tgids;
mod whodunit;

use aya_ebpf::{
    macros::map,
    maps::{LruHashMap, PerCpuArray, RingBuf},
};
use oomtrace_common::{Config, OomControl, OomSigkill, Reclaim, drop_reason};

/// Kernel layout facts, filled in by the loader before load (frozen `.rodata`).
#[unsafe(no_mangle)]
static CONFIG: Config = Config::ABSENT;

/// Records to user space. The loader may resize it (`--ring-size`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Records that could not be delivered, by [`drop_reason`].
#[map]
static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(drop_reason::COUNT, 0);

/// `struct oom_control` facts stashed at `oom_kill_process` entry, keyed by the OOM-ing thread's tid,
/// picked up by `mark_victim` on the same thread.
#[map]
static OOM_CONTROL: LruHashMap<u32, OomControl> = LruHashMap::with_max_entries(1024, 0);

/// The OOM killer's latest SIGKILL from each thread (keyed by the sender's tid), which
/// `mark_victim` on the same thread consumes to tell a kill from a mark without one.
#[map]
static OOM_SIGKILLS: LruHashMap<u32, OomSigkill> = LruHashMap::with_max_entries(1024, 0);

/// Each thread's latest reclaim-begin record, keyed by tid.
#[map]
static RECLAIM: LruHashMap<u32, Reclaim> = LruHashMap::with_max_entries(8192, 0);

/// Reads one `CONFIG` field without letting the compiler fold the compile-time default into the code.
macro_rules! cfg_get {
    ($field:ident) => {
        // SAFETY: CONFIG is a plain static; a volatile read of one of its fields is always valid.
        unsafe { core::ptr::read_volatile(&raw const crate::CONFIG.$field) }
    };
}
pub(crate) use cfg_get as cfg;

pub(crate) fn count_drop(reason: u32) {
    if let Some(slot) = DROPS.get_ptr_mut(reason) {
        // SAFETY: per-CPU slot of this CPU; no other writer can run here concurrently.
        unsafe { *slot += 1 };
    }
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// Host builds only: the programs are never run there.
#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
