//! `vmscan:mm_vmscan_{memcg,direct}_reclaim_begin`: remember each thread's latest reclaim attempt.
//!
//! On tracepoint-only kernels nothing hands over `struct oom_control`, but an OOM is always preceded
//! by failed reclaim on the same thread: memcg charges reclaim in try_charge_memcg() before
//! mem_cgroup_oom(), the page allocator in __alloc_pages_direct_reclaim() before
//! __alloc_pages_may_oom() (mm/memcontrol.c, mm/page_alloc.c, v6.18). The loader reports these
//! values as `allocation.source: "memcg_reclaim"` or `"direct_reclaim"`. Caveat kept in docs/events.md: memcg reclaim records order 0 and
//! the reclaim context's gfp (try_to_free_mem_cgroup_pages(), mm/vmscan.c v6.18), not the original.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_boot_ns},
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use oomtrace_common::{ABSENT, Reclaim, flags};

use crate::{
    RECLAIM, cfg,
    kernel::{memcg_at_limit, task_memcg},
};

#[tracepoint]
pub fn memcg_reclaim_begin(ctx: TracePointContext) -> u32 {
    remember(&ctx, flags::RECLAIM_MEMCG);
    0
}

#[tracepoint]
pub fn direct_reclaim_begin(ctx: TracePointContext) -> u32 {
    remember(&ctx, flags::RECLAIM_DIRECT);
    0
}

/// TP_PROTO(int order, gfp_t gfp_flags) for both (include/trace/events/vmscan.h, v5.10 to v6.18);
/// gfp_t is an unsigned int.
#[btf_tracepoint(function = "mm_vmscan_memcg_reclaim_begin")]
pub fn memcg_reclaim_begin_btf(ctx: BtfTracePointContext) -> u32 {
    let gfp: u32 = ctx.arg(1);
    store(ctx.arg(0), u64::from(gfp), flags::RECLAIM_MEMCG);
    0
}

#[btf_tracepoint(function = "mm_vmscan_direct_reclaim_begin")]
pub fn direct_reclaim_begin_btf(ctx: BtfTracePointContext) -> u32 {
    let gfp: u32 = ctx.arg(1);
    store(ctx.arg(0), u64::from(gfp), flags::RECLAIM_DIRECT);
    0
}

#[inline(always)]
fn remember(ctx: &TracePointContext, kind: u32) {
    let order_off = cfg!(tp_reclaim_order);
    let gfp_off = cfg!(tp_reclaim_gfp);
    if order_off == ABSENT || gfp_off == ABSENT {
        return;
    }
    // SAFETY: offsets come from this tracepoint's tracefs format; read_at uses bpf_probe_read.
    let order = unsafe { ctx.read_at::<i32>(order_off as usize) }.unwrap_or(-1);
    let gfp_mask = if cfg!(tp_reclaim_gfp_size) == 4 {
        // SAFETY: as above.
        unsafe { ctx.read_at::<u32>(gfp_off as usize) }.map(u64::from)
    } else {
        // SAFETY: as above.
        unsafe { ctx.read_at::<u64>(gfp_off as usize) }
    }
    .unwrap_or(0);
    store(order, gfp_mask, kind);
}

#[inline(always)]
fn store(order: i32, gfp_mask: u64, kind: u32) {
    let tid = bpf_get_current_pid_tgid() as u32;
    let memcg_id = if kind == flags::RECLAIM_MEMCG {
        // SAFETY: the running task, only read through probe reads.
        memcg_at_limit(task_memcg(unsafe { bpf_get_current_task() } as *const u8))
    } else {
        0
    };
    let rec = Reclaim {
        // SAFETY: helper without preconditions.
        ts_ns: unsafe { bpf_ktime_get_boot_ns() },
        gfp_mask,
        order,
        kind,
        memcg_id,
    };
    let _ = RECLAIM.insert(&tid, &rec, 0);
}
