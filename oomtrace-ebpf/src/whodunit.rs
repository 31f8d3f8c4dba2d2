//! Who sent every SIGKILL, and which processes died of one.
//!
//! - `signal:signal_generate` fires in __send_signal_locked() for every signal generated, whoever
//!   sends it: kill(2), tgkill(2), pidfd_send_signal(2) and kernel code such as the OOM killer
//!   (kernel/signal.c, v6.18). `current` is the sender.
//! - `sched:sched_process_exit` fires in do_exit() for every exiting thread, on that thread
//!   (kernel/exit.c, v6.18); the record for the group's last thread is the process's death.
//!
//! Both are filtered in the kernel to SIGKILL (or every fatal signal with `--signals all`), so
//! the volume stays that of deaths, not of all signal traffic.

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_current_uid_gid,
        bpf_ktime_get_boot_ns, bpf_probe_read_kernel_str_bytes,
    },
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use oomtrace_common::{
    ABSENT, Exit, OomSigkill, RecordKind, Signal, VictimSource, drop_reason,
    signal::{self, SEND_SIG_NOINFO, SEND_SIG_PRIV, SI_KERNEL, SI_USER, SIGKILL},
};

use crate::{
    EVENTS, OOM_SIGKILLS, cfg, count_drop,
    kernel::{read, read_ptr, task_comm, task_ids},
    tgids::tgid_of,
};

/// Signals whose default action terminates the process (signal(7)); with `--signals all` these are
/// reported, otherwise only SIGKILL, the one that cannot be caught.
#[inline(always)]
fn wanted(sig: i32) -> bool {
    sig == SIGKILL || (cfg!(all_signals) != 0 && signal::terminates_by_default(sig))
}

#[inline(always)]
fn tgid_filtered(tgid: u32) -> bool {
    let f = cfg!(filter_tgid);
    f != 0 && f != tgid
}

/// TP_PROTO(int sig, struct kernel_siginfo *info, struct task_struct *task, int group, int result),
/// include/trace/events/signal.h v6.18.
#[btf_tracepoint(function = "signal_generate")]
pub fn signal_generate_btf(ctx: BtfTracePointContext) -> u32 {
    let sig: i32 = ctx.arg(0);
    if !wanted(sig) {
        return 0;
    }
    let info: *const u8 = ctx.arg(1);
    let task: *const u8 = ctx.arg(2);
    // SEND_SIG_PRIV itself, not only si_code SI_KERNEL: force_sig() and friends pass a real
    // siginfo with SI_KERNEL too, and are not the OOM killer.
    if sig == SIGKILL && info as usize == SEND_SIG_PRIV {
        note_oom_sigkill(read::<i32>(task, cfg!(task_pid)).unwrap_or(0) as u32);
    }
    let code = match info as usize {
        SEND_SIG_NOINFO => SI_USER,
        SEND_SIG_PRIV => SI_KERNEL,
        _ => read::<i32>(info, cfg!(siginfo_code)).unwrap_or(SI_USER),
    };
    emit_signal(sig, code, ctx.arg(3), ctx.arg(4), VictimSource::TpBtf, |s| {
        task_ids(task, &mut s.target);
        task_comm(task, &mut s.target.comm);
    })
}

#[tracepoint]
pub fn signal_generate_tp(ctx: TracePointContext) -> u32 {
    let tp = ctx.as_ptr() as *const u8;
    let sig = read::<i32>(tp, cfg!(tp_sig_sig)).unwrap_or(0);
    if !wanted(sig) {
        return 0;
    }
    let code = read::<i32>(tp, cfg!(tp_sig_code)).unwrap_or(SI_USER);
    // The classic record has only si_code: TP_STORE_SIGINFO() stores SI_KERNEL for SEND_SIG_PRIV
    // (include/trace/events/signal.h, v6.18).
    if sig == SIGKILL && code == SI_KERNEL {
        note_oom_sigkill(read::<i32>(tp, cfg!(tp_sig_pid)).unwrap_or(0) as u32);
    }
    let group = read::<i32>(tp, cfg!(tp_sig_group)).unwrap_or(0);
    let result = read::<i32>(tp, cfg!(tp_sig_result)).unwrap_or(0);
    emit_signal(sig, code, group, result, VictimSource::Tracepoint, |s| {
        // The record names the target thread only; its process comes from the tid map.
        s.target.tid = read::<i32>(tp, cfg!(tp_sig_pid)).unwrap_or(0) as u32;
        s.target.tgid = tgid_of(s.target.tid);
        if let Some(c) = read::<[u8; 16]>(tp, cfg!(tp_sig_comm)) {
            s.target.comm = c;
        }
    })
}

/// Remembers a kernel-private SIGKILL from the current thread to `target_tid`, for `mark_victim`
/// (see `flags::KILLED`). Before any filter or ring-buffer reservation: a kill must be recognised
/// even when its `signal` record is not wanted or finds no room.
#[inline(always)]
fn note_oom_sigkill(target_tid: u32) {
    let k = OomSigkill {
        target_tid,
        _pad0: 0,
        // SAFETY: helper without preconditions.
        ts_ns: unsafe { bpf_ktime_get_boot_ns() },
    };
    let tid = bpf_get_current_pid_tgid() as u32;
    let _ = OOM_SIGKILLS.insert(&tid, &k, 0);
}

#[inline(always)]
fn emit_signal(
    sig: i32,
    code: i32,
    group: i32,
    result: i32,
    source: VictimSource,
    target: impl FnOnce(&mut Signal),
) -> u32 {
    let Some(mut entry) = EVENTS.reserve::<Signal>(0) else {
        count_drop(drop_reason::RINGBUF_FULL);
        return 0;
    };
    let ptr = entry.as_mut_ptr();
    // SAFETY: the reservation holds a Signal; zeroing makes every field valid.
    let s = unsafe {
        core::ptr::write_bytes(ptr, 0, 1);
        &mut *ptr
    };
    target(s);
    let pid_tgid = bpf_get_current_pid_tgid();
    // --pid keeps signals to that process and signals it sends.
    if tgid_filtered(if s.target.tgid != 0 {
        s.target.tgid
    } else {
        s.target.tid
    }) && tgid_filtered((pid_tgid >> 32) as u32)
    {
        entry.discard(0);
        return 0;
    }
    s.kind = RecordKind::Signal as u8;
    s.source = source as u8;
    s.sig = sig;
    s.code = code;
    s.group = group;
    s.result = result;
    // SAFETY: helpers without preconditions.
    s.ts_boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    // SAFETY: the running task, only read through probe reads.
    let current = unsafe { bpf_get_current_task() } as *const u8;
    task_ids(current, &mut s.sender);
    s.sender.tid = pid_tgid as u32;
    s.sender.tgid = (pid_tgid >> 32) as u32;
    s.sender.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    s.sender_uid = bpf_get_current_uid_gid() as u32;
    exe_name(current, &mut s.sender_exe);
    entry.submit(0);
    0
}

/// Basename of the task's executable: task->mm->exe_file->f_path.dentry->d_name.name.
#[inline(always)]
fn exe_name(task: *const u8, out: &mut [u8; oomtrace_common::EXE_LEN]) {
    let mm = read_ptr(task, cfg!(task_mm));
    let file = read_ptr(mm, cfg!(mm_exe_file));
    let dentry = read_ptr(file, cfg!(file_dentry));
    let name = read_ptr(dentry, cfg!(dentry_name));
    if !name.is_null() {
        // SAFETY: bpf_probe_read_kernel_str_bytes never faults.
        let _ = unsafe { bpf_probe_read_kernel_str_bytes(name, out) };
    }
}

/// `sched:sched_process_exit`, on the exiting thread itself.
#[tracepoint]
pub fn process_exit(ctx: TracePointContext) -> u32 {
    let gd_off = cfg!(tp_exit_group_dead);
    let group_dead =
        (gd_off != ABSENT).then(|| read::<u8>(ctx.as_ptr() as *const u8, gd_off).unwrap_or(0) != 0);
    exit(group_dead)
}

/// TP_PROTO(struct task_struct *p) before 6.16, (struct task_struct *p, bool group_dead) since
/// (include/trace/events/sched.h); `p` is current.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn process_exit_btf(ctx: BtfTracePointContext) -> u32 {
    let group_dead = (cfg!(btf_exit_group_dead) != ABSENT).then(|| ctx.arg::<u8>(1) != 0);
    exit(group_dead)
}

/// One process's death. `group_dead` is the tracepoint's own word for "the group's last thread",
/// where it has one.
#[inline(always)]
fn exit(group_dead: Option<bool>) -> u32 {
    // SAFETY: the running (exiting) task, only read through probe reads.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let code = read::<i32>(task, cfg!(task_exit_code)).unwrap_or(0);
    if !wanted(signal::exit_signal(code)) {
        return 0;
    }
    // Only the group's last thread: the tracepoint says so since 6.16; before, signal->live has
    // just been decremented to 0 by that thread (do_exit(), kernel/exit.c v6.18).
    let group_dead = group_dead.unwrap_or_else(|| {
        let signal = read_ptr(task, cfg!(task_signal));
        read::<i32>(signal, cfg!(signal_live)) == Some(0)
    });
    if !group_dead {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if tgid_filtered((pid_tgid >> 32) as u32) {
        return 0;
    }
    let Some(mut entry) = EVENTS.reserve::<Exit>(0) else {
        count_drop(drop_reason::RINGBUF_FULL);
        return 0;
    };
    let ptr = entry.as_mut_ptr();
    // SAFETY: the reservation holds an Exit; zeroing makes every field valid.
    let e = unsafe {
        core::ptr::write_bytes(ptr, 0, 1);
        &mut *ptr
    };
    e.kind = RecordKind::Exit as u8;
    e.exit_code = code;
    // SAFETY: helper without preconditions.
    e.ts_boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    task_ids(task, &mut e.task);
    e.task.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    let leader = read_ptr(task, cfg!(task_group_leader));
    e.start_boot_ns = read::<u64>(leader, cfg!(task_start_boottime)).unwrap_or(0);
    entry.submit(0);
    0
}
