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
use oomtrace_common::{Reap, RecordKind, drop_reason, reap_phase};

use crate::{EVENTS, cfg, count_drop, kernel::read};

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
    let rec = Reap {
        kind: RecordKind::Reap as u8,
        phase,
        _pad0: [0; 2],
        pid,
        // SAFETY: helper without preconditions.
        ts_boot_ns: unsafe { bpf_ktime_get_boot_ns() },
    };
    if EVENTS.output(&rec, 0).is_err() {
        count_drop(drop_reason::RINGBUF_FULL);
    }
    0
}
