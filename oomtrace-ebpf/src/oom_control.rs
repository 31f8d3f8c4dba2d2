//! `oom_kill_process(struct oom_control *oc, const char *message)` (mm/oom_kill.c, v6.18): the one
//! place where the kernel's own view of the OOM is complete — chosen task and its points, totalpages,
//! the memcg whose limit fired, gfp_mask, order and constraint. Stash it for `mark_victim`, which
//! runs later on the same thread (oom_kill_process -> __oom_kill_process -> mark_oom_victim).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns},
    macros::{fentry, kprobe},
    programs::{FEntryContext, ProbeContext},
};
use oomtrace_common::OomControl;

use crate::{
    OOM_CONTROL, cfg,
    kernel::{css_id, read, read_ptr},
};

#[fentry(function = "oom_kill_process")]
pub fn oom_kill_process_fentry(ctx: FEntryContext) -> u32 {
    stash(ctx.arg::<*const u8>(0));
    0
}

#[kprobe]
pub fn oom_kill_process_kprobe(ctx: ProbeContext) -> u32 {
    if let Some(oc) = ctx.arg::<*const u8>(0) {
        stash(oc);
    }
    0
}

#[inline(always)]
fn stash(oc: *const u8) {
    if oc.is_null() {
        return;
    }
    let chosen = read_ptr(oc, cfg!(oc_chosen));
    let rec = OomControl {
        // SAFETY: helper without preconditions.
        kill_ns: unsafe { bpf_ktime_get_boot_ns() },
        chosen_points: read::<i64>(oc, cfg!(oc_chosen_points)).unwrap_or(0),
        totalpages: read::<u64>(oc, cfg!(oc_totalpages)).unwrap_or(0),
        // oc->memcg is a struct mem_cgroup *, whose first member is its css.
        memcg_id: css_id(read_ptr(oc, cfg!(oc_memcg))),
        gfp_mask: u64::from(read::<u32>(oc, cfg!(oc_gfp_mask)).unwrap_or(0)),
        order: read::<i32>(oc, cfg!(oc_order)).unwrap_or(0),
        constraint: read::<u32>(oc, cfg!(oc_constraint)).unwrap_or(0),
        chosen_tgid: read::<i32>(chosen, cfg!(task_tgid)).unwrap_or(0) as u32,
        _pad: 0,
    };
    let tid = bpf_get_current_pid_tgid() as u32;
    let _ = OOM_CONTROL.insert(&tid, &rec, 0);
}
