//! `oom:mark_victim`: fires once for every task the OOM killer kills, from mark_oom_victim() inside
//! __oom_kill_process() (mm/oom_kill.c, v6.18) — also for each member of a `memory.oom.group` kill.
//! `current` is the task whose allocation set the OOM off (the trigger), which may differ from the
//! victim. Two flavours: `tp_btf` hands a typed `struct task_struct *`; the classic tracepoint hands
//! its trace record (pid, comm, rss... since 6.8, 72ba14deb40a, backported to some stable kernels;
//! only pid before).

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_current_uid_gid,
        bpf_ktime_get_boot_ns, bpf_probe_read_kernel_str_bytes, generated::bpf_get_stack,
    },
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use oomtrace_common::{
    ABSENT, KSTACK_DEPTH, OomKill, RecordKind, USTACK_BUILD_ID_DEPTH, USTACK_DEPTH, VictimSource,
    drop_reason, flags,
};

/// bpf_get_stack flags (include/uapi/linux/bpf.h).
const BPF_F_USER_STACK: u64 = 1 << 8;
const BPF_F_USER_BUILD_ID: u64 = 1 << 11;

use crate::{
    EVENTS, OOM_CONTROL, OOM_SIGKILLS, RECLAIM, cfg, count_drop,
    kernel::{memcg_levels, mm_counters, read, read_ptr, task_comm, task_ids, task_memcg},
    tgids::tgid_of,
};

/// How old a stashed oom_control / reclaim record may be and still describe this kill.
const STASH_MAX_AGE_NS: u64 = 1_000_000_000;

#[btf_tracepoint(function = "mark_victim")]
pub fn mark_victim_btf(ctx: BtfTracePointContext) -> u32 {
    // TP_PROTO(struct task_struct *task, uid_t uid), include/trace/events/oom.h v6.18.
    let victim: *const u8 = ctx.arg(0);
    let uid: u32 = ctx.arg(1);
    emit(&ctx, VictimSource::TpBtf, |rec| {
        task_ids(victim, &mut rec.victim);
        task_comm(victim, &mut rec.victim.comm);
        rec.victim_uid = uid;
        rec.flags |= flags::VICTIM_UID | flags::VICTIM_MEMCG;
        if mm_counters(victim, &mut rec.victim_mm) {
            rec.flags |= flags::VICTIM_MM | flags::VICTIM_MM_TASK;
        }
        let signal = read_ptr(victim, cfg!(task_signal));
        if let Some(adj) = read::<i16>(signal, cfg!(signal_oom_score_adj)) {
            rec.victim_oom_score_adj = i32::from(adj);
            rec.flags |= flags::VICTIM_SCORE_ADJ;
        }
    });
    0
}

#[tracepoint]
pub fn mark_victim_tp(ctx: TracePointContext) -> u32 {
    emit(&ctx, VictimSource::Tracepoint, |rec| {
        let tp = ctx.as_ptr() as *const u8;
        // The record carries the victim's task->pid (its thread id), not its tgid.
        rec.victim.tid = read::<i32>(tp, cfg!(tp_mv_pid)).unwrap_or(0) as u32;
        if rec.victim.tid == rec.trigger.tid {
            // Same task: everything the trigger has is the victim's too.
            rec.victim = rec.trigger;
            rec.flags |= flags::VICTIM_MEMCG;
        } else {
            rec.victim.tgid = tgid_of(rec.victim.tid);
        }
        let comm_loc = cfg!(tp_mv_comm);
        if let Some(loc) = read::<u32>(tp, comm_loc) {
            // __data_loc: low 16 bits offset from the record start, high 16 bits length.
            let src = tp.wrapping_add((loc & 0xffff) as usize);
            // SAFETY: bpf_probe_read_kernel_str_bytes never faults.
            let _ = unsafe { bpf_probe_read_kernel_str_bytes(src, &mut rec.victim.comm) };
        }
        if let Some(uid) = read::<u32>(tp, cfg!(tp_mv_uid)) {
            rec.victim_uid = uid;
            rec.flags |= flags::VICTIM_UID;
        }
        if let Some(adj) = read::<i16>(tp, cfg!(tp_mv_oom_score_adj)) {
            rec.victim_oom_score_adj = i32::from(adj);
            rec.flags |= flags::VICTIM_SCORE_ADJ;
        }
        // When the victim is the trigger's own process (the trigger itself, or e.g. the main
        // thread of a process whose worker allocated), its mm_struct and signal_struct are
        // `current`'s, which we may read (offsets from BTF, when there is BTF): every counter,
        // swap and hiwater included, which the record lacks.
        let same_task = rec.victim.tid == rec.trigger.tid;
        let same_process = rec.victim.tgid != 0 && rec.victim.tgid == rec.trigger.tgid;
        if same_process && !same_task {
            // Threads of one process share its memory cgroup (the memory controller is not
            // threaded in cgroup v2; in v1 charges follow mm->owner): the trigger's is the
            // victim's. A multi-threaded process whose worker allocated has its main thread
            // marked, and the record names no cgroup (mm/oom_kill.c, v6.18).
            rec.victim.memcg_id = rec.trigger.memcg_id;
            rec.flags |= flags::VICTIM_MEMCG;
        }
        // SAFETY: the running task, only read through probe reads.
        let current = unsafe { bpf_get_current_task() } as *const u8;
        if same_process && mm_counters(current, &mut rec.victim_mm) {
            rec.flags |= flags::VICTIM_MM | flags::VICTIM_MM_TASK;
        } else if cfg!(tp_mv_anon_rss) != ABSENT {
            // The record's own memory fields (since 6.8, 72ba14deb40a; some stable kernels have
            // them backported, Debian's 6.1.192 among them). Already in kB: PG_COUNT_TO_KB().
            let m = &mut rec.victim_mm;
            m.total_vm_kb = read::<u64>(tp, cfg!(tp_mv_total_vm)).unwrap_or(0);
            m.anon_rss_kb = read::<u64>(tp, cfg!(tp_mv_anon_rss)).unwrap_or(0);
            m.file_rss_kb = read::<u64>(tp, cfg!(tp_mv_file_rss)).unwrap_or(0);
            m.shmem_rss_kb = read::<u64>(tp, cfg!(tp_mv_shmem_rss)).unwrap_or(0);
            m.pgtables_kb = read::<u64>(tp, cfg!(tp_mv_pgtables)).unwrap_or(0);
            rec.flags |= flags::VICTIM_MM;
        }
        if same_process && rec.flags & flags::VICTIM_SCORE_ADJ == 0 {
            // oom_score_adj lives in the process's signal_struct.
            let signal = read_ptr(current, cfg!(task_signal));
            if let Some(adj) = read::<i16>(signal, cfg!(signal_oom_score_adj)) {
                rec.victim_oom_score_adj = i32::from(adj);
                rec.flags |= flags::VICTIM_SCORE_ADJ;
            }
        }
        if same_task && rec.flags & flags::VICTIM_UID == 0 {
            // The tracepoint reports task_uid() (real_cred); the helper reads current_cred(),
            // which differs only while the task runs with override_creds() (both
            // from_kuid(&init_user_ns), kernel/bpf/helpers.c v6.18).
            rec.victim_uid = bpf_get_current_uid_gid() as u32;
            rec.flags |= flags::VICTIM_UID;
        }
    });
    0
}

/// Reserves a record, fills what every flavour shares (trigger, memcg walk, stash lookups, stack),
/// lets `victim` fill the victim, submits. A full ring buffer is counted, never silent.
#[inline(always)]
fn emit<C: EbpfContext>(ctx: &C, source: VictimSource, victim: impl FnOnce(&mut OomKill)) {
    let Some(mut entry) = EVENTS.reserve::<OomKill>(0) else {
        count_drop(drop_reason::RINGBUF_FULL);
        return;
    };
    let ptr = entry.as_mut_ptr();
    // SAFETY: the reservation is size_of::<OomKill>() bytes; zeroing makes every field valid.
    let rec = unsafe {
        core::ptr::write_bytes(ptr, 0, 1);
        &mut *ptr
    };
    rec.kind = RecordKind::OomKill as u8;
    rec.victim_source = source as u8;
    // SAFETY: helpers without preconditions.
    rec.ts_boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: bpf_get_current_task returns the running task; only ever read through probe reads.
    let current = unsafe { bpf_get_current_task() } as *const u8;
    rec.trigger.tid = pid_tgid as u32;
    rec.trigger.tgid = (pid_tgid >> 32) as u32;
    rec.trigger.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    let memcg = task_memcg(current);
    rec.memcg_depth = memcg_levels(memcg, &mut rec.memcg);
    rec.trigger.memcg_id = rec.memcg[0].id;

    // Stashed facts count only if fresh: oom_kill_process -> mark_victim takes microseconds
    // (a whole memory.oom.group kill, milliseconds), and the last failed reclaim comes right before
    // the OOM. An older entry belongs to an earlier OOM of a thread whose tid was reused.
    let tid = rec.trigger.tid;
    let now = rec.ts_boot_ns;
    // SAFETY: LRU map values are copied out immediately.
    if let Some(oc) = unsafe { OOM_CONTROL.get(&tid) }
        && now.wrapping_sub(oc.kill_ns) < STASH_MAX_AGE_NS
    {
        rec.exact = *oc;
        rec.flags |= flags::EXACT;
    }
    // SAFETY: as above.
    if let Some(r) = unsafe { RECLAIM.get(&tid) }
        && now.wrapping_sub(r.ts_ns) < STASH_MAX_AGE_NS
    {
        rec.reclaim = *r;
        rec.flags |= flags::RECLAIM;
    }

    victim(rec);

    // A kill, or a mark of a dying task without one? The kill's SIGKILL to this very thread came
    // from this thread microseconds ago; consume it, so that it vouches for one mark only.
    // SAFETY: as above.
    if let Some(k) = unsafe { OOM_SIGKILLS.get(&tid) }
        && k.target_tid == rec.victim.tid
        && now.wrapping_sub(k.ts_ns) < STASH_MAX_AGE_NS
    {
        rec.flags |= flags::KILLED;
        let _ = OOM_SIGKILLS.remove(&tid);
    }

    // SAFETY: `kstack` is KSTACK_DEPTH u64s inside the reservation; the helper writes at most that.
    rec.kstack_bytes = unsafe {
        bpf_get_stack(
            ctx.as_ptr(),
            rec.kstack.as_mut_ptr().cast(),
            (KSTACK_DEPTH * 8) as u32,
            0,
        )
    };
    // The trigger's user stack — `current` is the trigger, so this is never the victim's stack.
    if cfg!(user_stacks) != 0 {
        // SAFETY: `ustack` / `ubuild` are inside the reservation; the helper writes at most their sizes.
        unsafe {
            rec.ustack_bytes = bpf_get_stack(
                ctx.as_ptr(),
                rec.ustack.as_mut_ptr().cast(),
                (USTACK_DEPTH * 8) as u32,
                BPF_F_USER_STACK,
            );
            rec.ubuild_bytes = bpf_get_stack(
                ctx.as_ptr(),
                rec.ubuild.as_mut_ptr().cast(),
                (USTACK_BUILD_ID_DEPTH * 32) as u32,
                BPF_F_USER_STACK | BPF_F_USER_BUILD_ID,
            );
        }
    }
    entry.submit(0);
}
