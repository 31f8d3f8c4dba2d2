//! The OOM reaper's outcome for each victim: `oom:wake_reaper`, `oom:start_task_reaping`,
//! `oom:finish_task_reaping`, `oom:skip_task_reaping` (mm/oom_kill.c, v6.18). The reaper frees a
//! victim's anonymous memory without waiting for it to exit; `skip` means it could not (the mm
//! was already being torn down, or its mmap lock was held), which explains slow memory release.

use aya_ebpf::{
    EbpfContext, helpers::bpf_ktime_get_boot_ns, macros::tracepoint, programs::TracePointContext,
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

#[inline(always)]
fn emit(ctx: &TracePointContext, phase: u8) -> u32 {
    let pid = read::<i32>(ctx.as_ptr() as *const u8, cfg!(tp_reap_pid)).unwrap_or(0) as u32;
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
