//! The OOM reaper's outcome for each victim: `oom:wake_reaper`, `oom:start_task_reaping`,
//! `oom:finish_task_reaping`, `oom:skip_task_reaping` (mm/oom_kill.c, v6.18). The reaper frees a
//! victim's anonymous memory without waiting for it to exit; `skip` means it could not (the mm
//! was already being torn down, or its mmap lock was held), which explains slow memory release.

use aya_ebpf::{
    EbpfContext,
    helpers::bpf_ktime_get_boot_ns,
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use oomtrace_common::{Reap, RecordKind, reap_phase};

use crate::{cfg, kernel::read, ring, tgids::tgid_of};

#[tracepoint]
pub fn wake_reaper(ctx: TracePointContext) -> u32 {
    emit(&ctx, reap_phase::WAKE)
}

#[tracepoint]
pub fn start_task_reaping(ctx: TracePointContext) -> u32 {
    emit(&ctx, reap_phase::START)
}

#[tracepoint]
pub fn finish_task_reaping(ctx: TracePointContext) -> u32 {
    emit(&ctx, reap_phase::FINISH)
}

#[tracepoint]
pub fn skip_task_reaping(ctx: TracePointContext) -> u32 {
    emit(&ctx, reap_phase::SKIP)
}

// TP_PROTO(int pid) for all four (include/trace/events/oom.h, v5.10 to v6.18).
#[btf_tracepoint(function = "wake_reaper")]
pub fn wake_reaper_btf(ctx: BtfTracePointContext) -> u32 {
    output(ctx.arg::<i32>(0) as u32, reap_phase::WAKE)
}

#[btf_tracepoint(function = "start_task_reaping")]
pub fn start_task_reaping_btf(ctx: BtfTracePointContext) -> u32 {
    output(ctx.arg::<i32>(0) as u32, reap_phase::START)
}

#[btf_tracepoint(function = "finish_task_reaping")]
pub fn finish_task_reaping_btf(ctx: BtfTracePointContext) -> u32 {
    output(ctx.arg::<i32>(0) as u32, reap_phase::FINISH)
}

#[btf_tracepoint(function = "skip_task_reaping")]
pub fn skip_task_reaping_btf(ctx: BtfTracePointContext) -> u32 {
    output(ctx.arg::<i32>(0) as u32, reap_phase::SKIP)
}

#[inline(always)]
fn emit(ctx: &TracePointContext, phase: u8) -> u32 {
    let pid = read::<i32>(ctx.as_ptr() as *const u8, cfg!(tp_reap_pid)).unwrap_or(0) as u32;
    output(pid, phase)
}

#[inline(always)]
fn output(pid: u32, phase: u8) -> u32 {
    // --pid: the record names the victim's thread; its process only where the tid map knows it
    // (classic mode), else the loader decides.
    let f = cfg!(filter_tgid);
    if f != 0 && f != pid {
        let tgid = tgid_of(pid);
        if tgid != 0 && tgid != f {
            return 0;
        }
    }
    let rec = Reap {
        kind: RecordKind::Reap as u8,
        phase,
        _pad0: [0; 2],
        pid,
        // SAFETY: helper without preconditions.
        ts_boot_ns: unsafe { bpf_ktime_get_boot_ns() },
    };
    // The reaper's progress is read with the victim's exit or the reader's tick (see ring.rs).
    let _ = ring::output_quiet(&rec);
    0
}
