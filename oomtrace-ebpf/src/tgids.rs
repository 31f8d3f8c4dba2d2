//! Thread id → process id, for the classic tracepoints that name a task by its thread id only
//! (`signal:signal_generate`'s target, `oom:mark_victim` before 6.8): once that thread has died,
//! nothing in /proc can say which process it belonged to. `task:task_newtask` fires in
//! copy_process() on the parent, for every new thread and process (kernel/fork.c, v6.18), with the
//! child's pid and clone flags: a CLONE_THREAD child joins the parent's thread group, any other
//! child leads its own. The loader seeds the tasks that existed before it attached from /proc.
//! `sched:sched_process_free` removes a task once it is released (delayed_put_task_struct(),
//! kernel/exit.c v6.18) and its id may be reused, so dead threads never crowd out live ones.
//! Only loaded with classic tracepoints; tp_btf programs read the task's tgid directly.

use aya_ebpf::{
    EbpfContext, helpers::bpf_get_current_pid_tgid, macros::map, macros::tracepoint, maps::LruHashMap,
    programs::TracePointContext,
};

use crate::{cfg, kernel::read};

/// include/uapi/linux/sched.h
const CLONE_THREAD: u32 = 0x0001_0000;

/// tid → tgid of the live tasks. The loader sizes it (1 entry when no classic tracepoint needs
/// it); should a host have more threads than it holds, the least recently used go first, and a
/// lookup that misses falls back to /proc in user space.
#[map]
pub static TGIDS: LruHashMap<u32, u32> = LruHashMap::with_max_entries(1, 0);

#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    let tp = ctx.as_ptr() as *const u8;
    let (Some(pid), Some(flags)) = (
        read::<i32>(tp, cfg!(tp_nt_pid)),
        // u64 (unsigned long before 6.x) on a little-endian machine: the low half has CLONE_THREAD.
        read::<u32>(tp, cfg!(tp_nt_clone_flags)),
    ) else {
        return 0;
    };
    let tid = pid as u32;
    let tgid = if flags & CLONE_THREAD != 0 {
        (bpf_get_current_pid_tgid() >> 32) as u32
    } else {
        tid
    };
    let _ = TGIDS.insert(&tid, &tgid, 0);
    0
}

#[tracepoint]
pub fn task_free(ctx: TracePointContext) -> u32 {
    if let Some(pid) = read::<i32>(ctx.as_ptr() as *const u8, cfg!(tp_free_pid)) {
        let _ = TGIDS.remove(&(pid as u32));
    }
    0
}

/// The process a thread belongs to, or 0 when unknown.
#[inline(always)]
pub fn tgid_of(tid: u32) -> u32 {
    if tid == 0 {
        return 0;
    }
    // SAFETY: the value is copied out immediately.
    unsafe { TGIDS.get(&tid) }.copied().unwrap_or(0)
}
