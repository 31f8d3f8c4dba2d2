//! The wire contract between oomtrace's eBPF programs and its loader.
//!
//! Everything here is `#[repr(C)]`, fixed-width and padded explicitly, so that the bytes the kernel
//! writes into the ring buffer mean the same on both sides. Layouts are pinned with `const`
//! assertions: changing one is a deliberate act that must also touch the decoder and its fixtures.
#![no_std]

use core::mem::size_of;

/// `TASK_COMM_LEN` in include/linux/sched.h (16 since the beginning of git history).
pub const COMM_LEN: usize = 16;
/// Kernel stack frames captured per record (`bpf_get_stack`, deepest frames are cut).
pub const KSTACK_DEPTH: usize = 32;
/// User stack frames captured per record (instruction pointers).
pub const USTACK_DEPTH: usize = 32;
/// User stack frames captured as (build id, file offset), for symbolizing after the process is gone.
pub const USTACK_BUILD_ID_DEPTH: usize = 16;
/// Levels of the memory-cgroup hierarchy walked upwards from the trigger's memcg.
pub const MEMCG_LEVELS: usize = 8;
/// An offset or field that the running kernel does not have.
pub const ABSENT: u32 = u32::MAX;

/// Memory-cgroup page counters (include/linux/page_counter.h, mm/memcontrol.c, v6.18): what "no
/// limit" is, and which level of a hierarchy is the one whose limit an OOM hit. One rule for both
/// sides: the eBPF programs apply it when memcg reclaim begins, the loader to the kill record.
pub mod memcg {
    /// `MEMCG_CHARGE_BATCH` (include/linux/memcontrol.h, v6.18): a charge may take up to this many
    /// pages beyond its own need, so a failed one leaves usage within it of the limit.
    pub const CHARGE_BATCH_PAGES: u64 = 64;

    /// `PAGE_COUNTER_MAX` of a 64-bit kernel with `1 << page_shift`-byte pages: LONG_MAX / PAGE_SIZE
    /// (include/linux/page_counter.h, v6.18). "max" (v2) and -1 (v1) are stored as it and
    /// page_counter_memparse() caps every larger limit at it (mm/page_counter.c). It is 2^51 - 1
    /// with 4 KiB pages but 2^49 - 1 with 16 KiB and 2^47 - 1 with 64 KiB ones (arm64, ppc64), so it
    /// comes from the running kernel's page size, never from a constant.
    pub const fn page_counter_max(page_shift: u32) -> u64 {
        (i64::MAX as u64) >> (page_shift & 63)
    }

    /// Whether a page counter's `max` is a limit at all (false: "max" / unlimited).
    pub const fn is_limited(max_pages: u64, page_shift: u32) -> bool {
        max_pages < page_counter_max(page_shift)
    }

    /// How one level's counter stands against a charge of `nr_pages`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Fit {
        /// Takes the charge with more than a charge batch to spare, or has no limit.
        Room,
        /// Takes it, but within a charge batch of its limit: at its limit a moment ago, since when
        /// other tasks freed (or uncharged) some pages.
        Near,
        /// Cannot take it: page_counter_try_charge() fails once usage + nr_pages > max
        /// (mm/page_counter.c, v6.18).
        Over,
    }

    /// Where a level with `usage_pages` of `max_pages` stands against a charge of `nr_pages`.
    pub const fn fit(usage_pages: u64, max_pages: u64, nr_pages: u64, page_shift: u32) -> Fit {
        let slack = if nr_pages > CHARGE_BATCH_PAGES {
            nr_pages
        } else {
            CHARGE_BATCH_PAGES
        };
        if !is_limited(max_pages, page_shift) {
            Fit::Room
        } else if usage_pages.saturating_add(nr_pages) > max_pages {
            Fit::Over
        } else if usage_pages.saturating_add(slack) > max_pages {
            Fit::Near
        } else {
            Fit::Room
        }
    }

    /// The level whose limit an OOM hit, from `(level, usage_pages, max_pages)` nearest first:
    /// try_charge_memcg() charges the hierarchy bottom-up and stops at the first counter that
    /// cannot take the charge (mm/memcontrol.c, v6.18), so the nearest level [`Fit::Over`], else
    /// the nearest [`Fit::Near`]; None when no level is near its limit (a global OOM, or the memory
    /// was freed since). `nr_pages` is the failed charge (1 << order; 1 when unknown).
    pub fn oom_level<T>(
        levels: impl IntoIterator<Item = (T, u64, u64)>,
        nr_pages: u64,
        page_shift: u32,
    ) -> Option<T> {
        let mut near = None;
        for (level, usage, max) in levels {
            match fit(usage, max, nr_pages, page_shift) {
                Fit::Over => return Some(level),
                Fit::Near if near.is_none() => near = Some(level),
                Fit::Near | Fit::Room => {}
            }
        }
        near
    }
}

/// Signals and `si_code` values (include/uapi/asm-generic/signal.h and siginfo.h, v6.18; the same
/// numbers on every architecture oomtrace builds for).
pub mod signal {
    pub const SIGKILL: i32 = 9;
    /// `si_code`: kill(2), pidfd_send_signal(2), raise(3).
    pub const SI_USER: i32 = 0;
    /// `si_code`: sent by the kernel. The classic `signal_generate` record also stores it for
    /// [`SEND_SIG_PRIV`] (TP_STORE_SIGINFO, include/trace/events/signal.h v6.18).
    pub const SI_KERNEL: i32 = 0x80;
    pub const SI_QUEUE: i32 = -1;
    pub const SI_TIMER: i32 = -2;
    pub const SI_MESGQ: i32 = -3;
    pub const SI_ASYNCIO: i32 = -4;
    pub const SI_SIGIO: i32 = -5;
    /// `si_code`: tkill(2) / tgkill(2).
    pub const SI_TKILL: i32 = -6;
    pub const SI_DETHREAD: i32 = -7;
    pub const SI_ASYNCNL: i32 = -60;
    /// The `struct kernel_siginfo *` values that are no pointer (include/linux/sched/signal.h,
    /// v6.18): from user space without siginfo, and kernel-private (the OOM killer's SIGKILL).
    pub const SEND_SIG_NOINFO: usize = 0;
    pub const SEND_SIG_PRIV: usize = 1;

    /// The signal that killed a task, from its `exit_code` (the low 7 bits; 0 for a normal exit).
    pub const fn exit_signal(exit_code: i32) -> i32 {
        exit_code & 0x7f
    }

    /// Whether an `exit_code` says the task dumped core (0x80).
    pub const fn core_dumped(exit_code: i32) -> bool {
        exit_code & 0x80 != 0
    }

    /// Whether the default action of `sig` ends the process (signal(7)): every standard signal
    /// but SIGCHLD, SIGCONT, SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU, SIGURG (17-23) and SIGWINCH (28).
    pub const fn terminates_by_default(sig: i32) -> bool {
        matches!(sig, 1..=16 | 24..=27 | 29..=31)
    }
}

/// `struct bpf_stack_build_id` (include/uapi/linux/bpf.h, v6.18): [`BuildIdFrame`]'s fields.
pub mod build_id {
    /// `BPF_BUILD_ID_SIZE`: the kernel's build-id field; a shorter id is followed by zeros.
    pub const LEN: usize = 20;
    /// `BPF_STACK_BUILD_ID_EMPTY`: no frame.
    pub const EMPTY: i32 = 0;
    /// `BPF_STACK_BUILD_ID_VALID`: `build_id` and a file offset in `offset_or_ip`.
    pub const VALID: i32 = 1;
    /// `BPF_STACK_BUILD_ID_IP`: no build id could be read; `offset_or_ip` is the raw IP.
    pub const IP: i32 = 2;
}

/// Ring-buffer record kinds. Zeroed memory (0) is never a valid kind.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    OomKill = 1,
    Signal = 2,
    Exit = 3,
    Reap = 4,
    /// [`StackCopyHeader`] + stack bytes: the trigger's user registers and stack at the OOM.
    StackCopy = 5,
    /// [`ProcSeen`]: a process oomtrace should look at while it lives (exec, memcg reclaim).
    ProcSeen = 6,
    /// [`PyStackHeader`] + [`PyFrame`]s: one thread's Python frames at the OOM.
    PyStack = 7,
}

/// `Reap::phase` values: the OOM reaper's progress on a victim (oom:* tracepoints).
pub mod reap_phase {
    pub const WAKE: u8 = 1;
    pub const START: u8 = 2;
    pub const FINISH: u8 = 3;
    pub const SKIP: u8 = 4;
}

/// Length of the executable's file name captured for signal senders (`mm->exe_file` dentry name).
pub const EXE_LEN: usize = 32;

/// How the record's victim was read. The numbering is part of the wire contract.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VictimSource {
    /// `tp_btf/mark_victim`: a typed `struct task_struct *` to the victim.
    TpBtf = 1,
    /// Classic `tracepoint/oom/mark_victim`: the trace record's fields (layout from tracefs).
    Tracepoint = 2,
}

/// Indices into the per-CPU `DROPS` array.
pub mod drop_reason {
    /// `bpf_ringbuf_reserve` failed: the ring buffer was full, the record is lost.
    pub const RINGBUF_FULL: u32 = 0;
    pub const COUNT: u32 = 4;
}

/// Bits of [`OomKill::flags`].
pub mod flags {
    /// `exact` was filled from `struct oom_control` (fentry/kprobe on `oom_kill_process`).
    pub const EXACT: u32 = 1 << 0;
    /// `reclaim` holds the trigger's most recent vmscan reclaim-begin record.
    pub const RECLAIM: u32 = 1 << 1;
    /// The victim's memory counters were read (its `mm` was reachable or the tracepoint carried them).
    pub const VICTIM_MM: u32 = 1 << 2;
    /// The victim's memcg id is known.
    pub const VICTIM_MEMCG: u32 = 1 << 3;
    /// The victim's uid is known.
    pub const VICTIM_UID: u32 = 1 << 4;
    /// The victim's oom_score_adj is known.
    pub const VICTIM_SCORE_ADJ: u32 = 1 << 5;
    /// `victim_mm` was read from the victim's `mm_struct` (every counter, swap and hiwater too),
    /// not copied from a classic tracepoint record (which has no swap or hiwater).
    pub const VICTIM_MM_TASK: u32 = 1 << 6;
    /// The OOM killer's own SIGKILL to this victim thread came just before the mark, from the same
    /// `current`: __oom_kill_process() sends it, then calls mark_oom_victim() (mm/oom_kill.c,
    /// v6.18). A mark without it is no kill: out_of_memory()'s and oom_kill_process()'s
    /// task_will_free_mem() shortcuts mark an already-dying task and count nothing.
    pub const KILLED: u32 = 1 << 7;
    /// A [`super::RecordKind::StackCopy`] record was sent for this kill just before it.
    pub const STACK_COPY: u32 = 1 << 8;
    /// [`super::RecordKind::PyStack`] records were sent for this kill just before it.
    pub const PY_STACKS: u32 = 1 << 9;
    /// `reclaim.kind` values.
    pub const RECLAIM_MEMCG: u32 = 1;
    pub const RECLAIM_DIRECT: u32 = 2;
}

/// The OOM killer's last SIGKILL sent by a thread (SEND_SIG_PRIV), keyed by the sender's tid:
/// which thread it went to, and when.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OomSigkill {
    pub target_tid: u32,
    pub _pad0: u32,
    pub ts_ns: u64,
}
const _: () = assert!(size_of::<OomSigkill>() == 16);

/// A task as seen from the kernel: thread-group id (the user's "pid"), thread id, memcg and comm.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskIds {
    pub tgid: u32,
    pub tid: u32,
    /// `cgroup->kn->id` of the task's memory cgroup: the cgroup directory's inode number.
    pub memcg_id: u64,
    pub comm: [u8; COMM_LEN],
}
const _: () = assert!(size_of::<TaskIds>() == 32);

/// The victim's `mm` counters in KiB, as the kernel's own "Killed process" line prints them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmCounters {
    pub total_vm_kb: u64,
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    pub shmem_rss_kb: u64,
    pub swap_kb: u64,
    pub pgtables_kb: u64,
    pub hiwater_rss_kb: u64,
}
const _: () = assert!(size_of::<MmCounters>() == 56);

/// One level of the memcg hierarchy: its id and page counters, in pages, at the kill.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemcgLevel {
    pub id: u64,
    pub usage_pages: u64,
    pub max_pages: u64,
    /// `memory.watermark`: the highest usage since creation or the last reset (v1 max_usage_in_bytes).
    pub watermark_pages: u64,
    /// The `swap` (v2) or `memsw` (v1: memory+swap) counter.
    pub swap_usage_pages: u64,
    pub swap_max_pages: u64,
}
const _: () = assert!(size_of::<MemcgLevel>() == 48);

/// `struct bpf_stack_build_id` (include/uapi/linux/bpf.h): a user frame as build id + file offset.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuildIdFrame {
    /// [`build_id::EMPTY`], [`build_id::VALID`] (build_id + offset) or [`build_id::IP`] (only
    /// `offset_or_ip` = ip).
    pub status: i32,
    pub build_id: [u8; build_id::LEN],
    pub offset_or_ip: u64,
}
const _: () = assert!(size_of::<BuildIdFrame>() == 32);

/// Fields copied from `struct oom_control` at `oom_kill_process` entry (exact modes only).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OomControl {
    /// `bpf_ktime_get_ns()` at `oom_kill_process` entry: one value per kill, shared by group members.
    pub kill_ns: u64,
    pub chosen_points: i64,
    pub totalpages: u64,
    /// memcg id of `oc->memcg` (0 for a global OOM).
    pub memcg_id: u64,
    pub gfp_mask: u64,
    pub order: i32,
    pub constraint: u32,
    pub chosen_tgid: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<OomControl>() == 56);

/// The trigger's latest `vmscan:mm_vmscan_{memcg,direct}_reclaim_begin` before the kill.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reclaim {
    pub ts_ns: u64,
    pub gfp_mask: u64,
    pub order: i32,
    /// [`flags::RECLAIM_MEMCG`] or [`flags::RECLAIM_DIRECT`].
    pub kind: u32,
    /// Memcg reclaim: the nearest memcg of the thread's ancestry that was at its limit when the
    /// reclaim began (the charge had just failed there); 0 if none or not a memcg reclaim.
    pub memcg_id: u64,
}
const _: () = assert!(size_of::<Reclaim>() == 32);

/// One task killed by the OOM killer: emitted at `mark_victim`, once per killed task.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OomKill {
    /// [`RecordKind::OomKill`].
    pub kind: u8,
    /// [`VictimSource`].
    pub victim_source: u8,
    pub _pad0: [u8; 2],
    /// [`flags`] bits.
    pub flags: u32,
    /// `bpf_ktime_get_boot_ns()` at `mark_victim`.
    pub ts_boot_ns: u64,
    pub victim: TaskIds,
    pub trigger: TaskIds,
    pub victim_mm: MmCounters,
    pub victim_uid: u32,
    pub victim_oom_score_adj: i32,
    /// Trigger's memcg and its ancestors, nearest first; `memcg_depth` entries are valid.
    pub memcg: [MemcgLevel; MEMCG_LEVELS],
    pub memcg_depth: u32,
    pub _pad1: u32,
    pub exact: OomControl,
    pub reclaim: Reclaim,
    /// Bytes `bpf_get_stack` wrote into `kstack` (negative: its error).
    pub kstack_bytes: i64,
    pub kstack: [u64; KSTACK_DEPTH],
    /// The trigger's user stack (instruction pointers); bytes written, negative on error, 0 if off.
    pub ustack_bytes: i64,
    pub ustack: [u64; USTACK_DEPTH],
    /// The same stack's top frames as build id + file offset.
    pub ubuild_bytes: i64,
    pub ubuild: [BuildIdFrame; USTACK_BUILD_ID_DEPTH],
}
const _: () =
    assert!(size_of::<OomKill>() == 16 + 64 + 56 + 8 + 384 + 8 + 56 + 32 + 8 + 256 + 8 + 256 + 8 + 512);

/// A signal generated for a task: `signal:signal_generate`, emitted for SIGKILL (or every fatal
/// signal with `--signals all`). `current` is the sender; kernel code sending on a task's behalf
/// (the OOM killer) shows as that task with `code` SI_KERNEL.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Signal {
    /// [`RecordKind::Signal`].
    pub kind: u8,
    /// [`VictimSource`]: how the target was read.
    pub source: u8,
    pub _pad0: [u8; 2],
    pub sig: i32,
    pub ts_boot_ns: u64,
    pub sender: TaskIds,
    pub target: TaskIds,
    pub sender_uid: u32,
    /// `si_code` as the tracepoint reports it (SI_USER 0, SI_KERNEL 0x80, SI_QUEUE -1, SI_TKILL -6, ...).
    pub code: i32,
    /// Non-zero: sent to the whole thread group (PIDTYPE_TGID or wider).
    pub group: i32,
    /// `enum trace_signal_deliver`: 0 delivered, 1 ignored, 2 already pending, 3 overflow, 4 lose info.
    pub result: i32,
    /// Basename of the sender's executable (`current->mm->exe_file`), empty for kernel threads.
    pub sender_exe: [u8; EXE_LEN],
}
const _: () = assert!(size_of::<Signal>() == 16 + 64 + 16 + EXE_LEN);

/// A thread group that died of a signal: `sched:sched_process_exit` for its last thread.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Exit {
    /// [`RecordKind::Exit`].
    pub kind: u8,
    pub _pad0: [u8; 3],
    /// `task->exit_code`: the terminating signal in the low 7 bits, 0x80 if it dumped core.
    pub exit_code: i32,
    pub ts_boot_ns: u64,
    pub task: TaskIds,
    /// The group leader's `start_boottime`, ns since boot.
    pub start_boot_ns: u64,
}
const _: () = assert!(size_of::<Exit>() == 16 + 32 + 8);

/// The OOM reaper on a victim: `oom:wake_reaper`, `start_task_reaping`, `finish_task_reaping`,
/// `skip_task_reaping` (mm/oom_kill.c, v6.18), each carrying the victim's pid.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Reap {
    /// [`RecordKind::Reap`].
    pub kind: u8,
    /// [`reap_phase`].
    pub phase: u8,
    pub _pad0: [u8; 2],
    /// The victim's thread id.
    pub pid: u32,
    pub ts_boot_ns: u64,
}
const _: () = assert!(size_of::<Reap>() == 16);

/// Kernel layout facts resolved by the loader from the running kernel's BTF and tracefs, handed to
/// the programs as a frozen `.rodata` global. Offsets are in bytes; [`ABSENT`] means "not on this kernel".
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    // struct task_struct
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_comm: u32,
    pub task_mm: u32,
    pub task_signal: u32,
    pub task_cgroups: u32,
    // struct signal_struct
    pub signal_oom_score_adj: u32,
    // struct mm_struct
    pub mm_total_vm: u32,
    pub mm_hiwater_rss: u32,
    pub mm_pgtables_bytes: u32,
    pub mm_rss_stat: u32,
    /// Distance between two `rss_stat` counters (sizeof(struct percpu_counter) since 6.2, 8 before).
    pub rss_stride: u32,
    /// Offset of the counter value inside one element (`percpu_counter.count`, or 0 for atomic_long_t).
    pub rss_value: u32,
    /// `enum { MM_FILEPAGES, MM_ANONPAGES, MM_SWAPENTS, MM_SHMEMPAGES }` values.
    pub rss_file_idx: u32,
    pub rss_anon_idx: u32,
    pub rss_swap_idx: u32,
    pub rss_shmem_idx: u32,
    // struct css_set / cgroup_subsys_state / cgroup / kernfs_node
    pub css_set_subsys: u32,
    /// `enum cgroup_subsys_id` value of `memory_cgrp_id` ([`ABSENT`] without CONFIG_MEMCG).
    pub memory_cgrp_id: u32,
    pub css_cgroup: u32,
    pub css_parent: u32,
    pub cgroup_kn: u32,
    pub kn_id: u32,
    // struct mem_cgroup / page_counter
    pub memcg_memory: u32,
    pub page_counter_usage: u32,
    pub page_counter_max: u32,
    // struct oom_control (exact modes)
    pub oc_memcg: u32,
    pub oc_gfp_mask: u32,
    pub oc_order: u32,
    pub oc_totalpages: u32,
    pub oc_chosen: u32,
    pub oc_chosen_points: u32,
    pub oc_constraint: u32,
    // tracepoint oom/mark_victim record layout (tracefs format)
    pub tp_mv_pid: u32,
    pub tp_mv_comm: u32,
    pub tp_mv_total_vm: u32,
    pub tp_mv_anon_rss: u32,
    pub tp_mv_file_rss: u32,
    pub tp_mv_shmem_rss: u32,
    pub tp_mv_uid: u32,
    pub tp_mv_pgtables: u32,
    pub tp_mv_oom_score_adj: u32,
    // tracepoints vmscan:mm_vmscan_{memcg,direct}_reclaim_begin (same layout on every kernel seen)
    pub tp_reclaim_order: u32,
    pub tp_reclaim_gfp: u32,
    /// Size of the `gfp_flags` field (4 or 8).
    pub tp_reclaim_gfp_size: u32,
    /// log2(PAGE_SIZE) of the running kernel.
    pub page_shift: u32,
    // Whodunit: exits and signals.
    pub task_exit_code: u32,
    pub task_group_leader: u32,
    pub task_start_boottime: u32,
    /// `signal_struct.live`: threads still alive (0 once the last one passed do_exit's decrement).
    pub signal_live: u32,
    pub mm_exe_file: u32,
    /// `file.f_path.dentry`
    pub file_dentry: u32,
    /// `dentry.d_name.name`
    pub dentry_name: u32,
    /// `kernel_siginfo.si_code`
    pub siginfo_code: u32,
    // tracepoint signal:signal_generate record layout
    pub tp_sig_sig: u32,
    pub tp_sig_code: u32,
    pub tp_sig_comm: u32,
    pub tp_sig_pid: u32,
    pub tp_sig_group: u32,
    pub tp_sig_result: u32,
    /// tracepoint sched:sched_process_exit `group_dead` (bool), ABSENT before 6.16.
    pub tp_exit_group_dead: u32,
    /// Report every fatal signal (1) or only SIGKILL (0).
    pub all_signals: u32,
    /// Only report signals to / exits of this tgid (0: all).
    pub filter_tgid: u32,
    /// `page_counter.watermark`
    pub page_counter_watermark: u32,
    /// `mem_cgroup.swap` / `mem_cgroup.memsw` (one anonymous union since 4.x)
    pub memcg_swap: u32,
    /// Capture the trigger's user stack (1) or not (0, --no-user-stacks).
    pub user_stacks: u32,
    /// tracepoint task:task_newtask `pid` and `clone_flags` (low 32 bits: CLONE_THREAD is bit 16)
    pub tp_nt_pid: u32,
    pub tp_nt_clone_flags: u32,
    /// tracepoint sched:sched_process_free `pid`
    pub tp_free_pid: u32,
    /// `pid` in the oom:*_reaping / wake_reaper records (one event class).
    pub tp_reap_pid: u32,
    /// 1 when tp_btf sched_process_exit carries `bool group_dead` as its second argument
    /// (6.16+: btf_trace_sched_process_exit has 3 parameters), ABSENT before.
    pub btf_exit_group_dead: u32,
}
const _: () = assert!(size_of::<Config>() == 71 * 4);

impl Config {
    /// Every offset absent: the programs read nothing until the loader fills it in.
    pub const ABSENT: Self = Self {
        task_pid: ABSENT,
        task_tgid: ABSENT,
        task_comm: ABSENT,
        task_mm: ABSENT,
        task_signal: ABSENT,
        task_cgroups: ABSENT,
        signal_oom_score_adj: ABSENT,
        mm_total_vm: ABSENT,
        mm_hiwater_rss: ABSENT,
        mm_pgtables_bytes: ABSENT,
        mm_rss_stat: ABSENT,
        rss_stride: 8,
        rss_value: 0,
        rss_file_idx: ABSENT,
        rss_anon_idx: ABSENT,
        rss_swap_idx: ABSENT,
        rss_shmem_idx: ABSENT,
        css_set_subsys: ABSENT,
        memory_cgrp_id: ABSENT,
        css_cgroup: ABSENT,
        css_parent: ABSENT,
        cgroup_kn: ABSENT,
        kn_id: ABSENT,
        memcg_memory: ABSENT,
        page_counter_usage: ABSENT,
        page_counter_max: ABSENT,
        oc_memcg: ABSENT,
        oc_gfp_mask: ABSENT,
        oc_order: ABSENT,
        oc_totalpages: ABSENT,
        oc_chosen: ABSENT,
        oc_chosen_points: ABSENT,
        oc_constraint: ABSENT,
        tp_mv_pid: ABSENT,
        tp_mv_comm: ABSENT,
        tp_mv_total_vm: ABSENT,
        tp_mv_anon_rss: ABSENT,
        tp_mv_file_rss: ABSENT,
        tp_mv_shmem_rss: ABSENT,
        tp_mv_uid: ABSENT,
        tp_mv_pgtables: ABSENT,
        tp_mv_oom_score_adj: ABSENT,
        tp_reclaim_order: ABSENT,
        tp_reclaim_gfp: ABSENT,
        tp_reclaim_gfp_size: 8,
        page_shift: 12,
        task_exit_code: ABSENT,
        task_group_leader: ABSENT,
        task_start_boottime: ABSENT,
        signal_live: ABSENT,
        mm_exe_file: ABSENT,
        file_dentry: ABSENT,
        dentry_name: ABSENT,
        siginfo_code: ABSENT,
        tp_sig_sig: ABSENT,
        tp_sig_code: ABSENT,
        tp_sig_comm: ABSENT,
        tp_sig_pid: ABSENT,
        tp_sig_group: ABSENT,
        tp_sig_result: ABSENT,
        tp_exit_group_dead: ABSENT,
        all_signals: 0,
        filter_tgid: 0,
        tp_reap_pid: ABSENT,
        page_counter_watermark: ABSENT,
        memcg_swap: ABSENT,
        user_stacks: 1,
        tp_nt_pid: ABSENT,
        tp_nt_clone_flags: ABSENT,
        tp_free_pid: ABSENT,
        btf_exit_group_dead: ABSENT,
    };
}

/// Most bytes of user stack copied per OOM, from the stack pointer up (the stack grows down: the
/// callers' frames lie above it).
pub const STACK_COPY_MAX: usize = 32 * 1024;

/// [`StackCopyHeader::status`] bits.
pub mod stack_status {
    /// `ip`, `sp`, `bp` hold the trigger's user-mode registers (`task_pt_regs`).
    pub const REGS: u8 = 1 << 0;
    /// The copy stopped at a page that could not be read: the end of the stack's mapping (or a
    /// page not resident: the helper cannot fault it in).
    pub const END_OF_MAPPING: u8 = 1 << 1;
    /// The copy stopped at [`super::STACK_COPY_MAX`]: outer frames may be missing.
    pub const CAPPED: u8 = 1 << 2;
}

/// Header of a [`RecordKind::StackCopy`] record; `len` bytes of the stack, starting at `sp`,
/// follow it. Sent just before the `OomKill` record of the same `mark_victim` run, whose
/// `ts_boot_ns` and `trigger.tid` it carries (and whose `flags` has [`flags::STACK_COPY`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackCopyHeader {
    /// [`RecordKind::StackCopy`].
    pub kind: u8,
    /// [`stack_status`] bits.
    pub status: u8,
    pub _pad0: [u8; 2],
    pub trigger_tid: u32,
    pub ts_boot_ns: u64,
    pub trigger_tgid: u32,
    /// Stack bytes following the header.
    pub len: u32,
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// `current->mm` (its kernel address): which image of the process this is — a new exec has a
    /// new mm — to match the record with a [`ProcSeen`] snapshot of the same image.
    pub mm: u64,
    /// The thread-group leader's `start_boottime` (ns since boot), to tell a reused tgid apart.
    pub start_boot_ns: u64,
}
const _: () = assert!(size_of::<StackCopyHeader>() == 64);

/// The eBPF side's scratch for one stack copy (a per-CPU slot), sent with `bpf_ringbuf_output`
/// of its first `size_of::<StackCopyHeader>() + hdr.len` bytes.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct StackCopy {
    pub hdr: StackCopyHeader,
    pub bytes: [u8; STACK_COPY_MAX],
}
const _: () = assert!(size_of::<StackCopy>() == 64 + STACK_COPY_MAX);

/// [`ProcSeen::reason`] values.
pub mod seen_reason {
    /// The process ran `execve` (`sched:sched_process_exec`).
    pub const EXEC: u8 = 1;
    /// One of its threads began memcg reclaim: it is charging at a limit, an OOM may follow.
    pub const MEMCG_RECLAIM: u8 = 2;
}

/// A process to snapshot now, while it is alive: its executable mappings and files (for
/// unwinding and naming its stack after it is gone) and, for a Python interpreter, where its
/// runtime state is.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcSeen {
    /// [`RecordKind::ProcSeen`].
    pub kind: u8,
    /// [`seen_reason`].
    pub reason: u8,
    pub _pad0: [u8; 2],
    pub tgid: u32,
    pub ts_boot_ns: u64,
    /// `current->mm` (see [`StackCopyHeader::mm`]).
    pub mm: u64,
}
const _: () = assert!(size_of::<ProcSeen>() == 24);

/// Kernel facts the stack and Python readers need, resolved from BTF by the loader and handed over
/// as a second frozen `.rodata` global (`STACK_CONFIG`), apart from [`Config`] so that its layout
/// stays as it is.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackConfig {
    /// Copy the trigger's user stack at the OOM (1) or not (0: `--no-user-stacks`).
    pub copy_stack: u32,
    /// Walk Python frames at the OOM (1) or not.
    pub python: u32,
    /// `task_struct.thread.fsbase` (x86_64): the thread pointer, which glibc's `pthread_self()`
    /// returns and CPython 3.10 keeps as `PyThreadState.thread_id`.
    pub task_fsbase: u32,
    /// Minimum nanoseconds between two [`ProcSeen`] records of one process at memcg reclaim.
    pub seen_interval_ns: u32,
}
const _: () = assert!(size_of::<StackConfig>() == 16);

impl StackConfig {
    pub const ABSENT: Self = Self {
        copy_stack: 0,
        python: 0,
        task_fsbase: ABSENT,
        seen_interval_ns: 1_000_000_000,
    };
}

/// CPython offsets the frame walker reads with, per interpreter (from its `_Py_DebugOffsets`, 3.13+,
/// or oomtrace's table checked against each version's headers). [`ABSENT`] where the version has
/// no such field. All in bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PyOffsets {
    /// PY_VERSION_HEX of the interpreter.
    pub version_hex: u32,
    pub runtime_interpreters_head: u32,
    /// `_PyRuntime.gilstate.tstate_current` (3.10, 3.11): the thread holding the GIL.
    pub runtime_tstate_current: u32,
    pub interp_threads_head: u32,
    /// `interp->ceval.gil` (3.12+), and in `struct _gil_runtime_state`: `locked`, `last_holder`.
    pub interp_gil: u32,
    pub gil_locked: u32,
    pub gil_holder: u32,
    pub tstate_next: u32,
    /// `thread_id`: pthread_self() of the thread (its fs base on x86_64 glibc).
    pub tstate_thread_id: u32,
    /// `native_thread_id` (3.11+): the kernel's thread id.
    pub tstate_native_thread_id: u32,
    /// 3.10 `frame`, 3.11/3.12 `cframe` (then [`Self::cframe_current_frame`]), 3.13 `current_frame`.
    pub tstate_frame: u32,
    pub cframe_current_frame: u32,
    pub frame_previous: u32,
    /// `f_code` (3.10-3.12) or `f_executable` (3.13).
    pub frame_code: u32,
    /// 3.10 `f_lasti` (int, code units), 3.11/3.12 `prev_instr`, 3.13 `instr_ptr` (pointers).
    pub frame_instr: u32,
    /// `owner` (3.11+; FRAME_OWNED_BY_CSTACK = 3 marks the C stack's entry shim, 3.12+).
    pub frame_owner: u32,
    /// `is_entry` (3.11 only): the first frame a `_PyEval_EvalFrameDefault` call pushed.
    pub frame_is_entry: u32,
    pub code_filename: u32,
    /// `co_qualname` (3.11+) or `co_name` (3.10).
    pub code_name: u32,
    pub code_firstlineno: u32,
    pub code_linetable: u32,
    /// `co_code_adaptive` (3.11+): where the bytecode starts inside the code object.
    pub code_adaptive: u32,
    pub unicode_state: u32,
    pub unicode_length: u32,
    pub unicode_ascii_size: u32,
    pub unicode_compact_size: u32,
    pub bytes_size: u32,
    pub bytes_sval: u32,
}
const _: () = assert!(size_of::<PyOffsets>() == 28 * 4);

/// A Python process the walker knows: where its `_PyRuntime` is and how to read it. The loader
/// fills one per process (map `PY_PROCS`, keyed by tgid) when it snapshots the process.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PyProc {
    pub runtime_addr: u64,
    pub off: PyOffsets,
}
const _: () = assert!(size_of::<PyProc>() == 8 + 28 * 4);

/// Bytes kept of a frame's qualified name (its start), file name (its end) and line table (its
/// start: the line of an instruction past it is unknown).
pub const PY_NAME_LEN: usize = 64;
pub const PY_FILE_LEN: usize = 128;
pub const PY_LINETABLE_LEN: usize = 256;
/// Python frames copied per thread, innermost first.
pub const PY_FRAMES: usize = 32;

/// [`PyFrame::flags`] bits.
pub mod py_frame {
    /// The C stack's entry shim (3.12+), not Python code: marks where a `_PyEval_EvalFrameDefault`
    /// call began.
    pub const SHIM: u16 = 1 << 0;
    /// `is_entry` (3.11): this frame is the first of a `_PyEval_EvalFrameDefault` call.
    pub const ENTRY: u16 = 1 << 1;
    /// The name or file was not a compact ASCII/latin-1 string and is left empty.
    pub const NON_ASCII: u16 = 1 << 2;
}

/// One Python frame as copied at the OOM: the code object's identity and what names it (the code
/// object dies with the process).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PyFrame {
    pub code: u64,
    /// The raw instruction field ([`PyOffsets::frame_instr`]).
    pub instr: u64,
    pub first_line: i32,
    /// [`py_frame`] bits.
    pub flags: u16,
    pub name_len: u16,
    pub file_len: u16,
    pub linetable_len: u16,
    /// Full lengths, to tell a cut name, file or line table.
    pub file_full_len: u32,
    pub linetable_full_len: u32,
    pub _pad: u32,
    pub name: [u8; PY_NAME_LEN],
    pub file: [u8; PY_FILE_LEN],
    pub linetable: [u8; PY_LINETABLE_LEN],
}
const _: () = assert!(size_of::<PyFrame>() == 40 + PY_NAME_LEN + PY_FILE_LEN + PY_LINETABLE_LEN);

/// [`PyStackHeader::flags`] bits.
pub mod py_thread {
    /// This thread is the OOM's trigger.
    pub const TRIGGER: u8 = 1 << 0;
    /// This thread held the GIL at the OOM.
    pub const GIL: u8 = 1 << 1;
    /// More than [`super::PY_FRAMES`] frames: the outer ones are missing.
    pub const TRUNCATED: u8 = 1 << 2;
}

/// Header of a [`RecordKind::PyStack`] record, followed by `nframes` [`PyFrame`]s. Sent before the
/// `OomKill` record it belongs to (same `ts_boot_ns` and `trigger_tid`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PyStackHeader {
    /// [`RecordKind::PyStack`].
    pub kind: u8,
    /// [`py_thread`] bits.
    pub flags: u8,
    pub _pad0: [u8; 2],
    pub trigger_tid: u32,
    pub ts_boot_ns: u64,
    /// The thread's kernel id (`native_thread_id`; 0 on 3.10 unless it is the trigger).
    pub tid: u32,
    pub nframes: u32,
    pub version_hex: u32,
    pub _pad1: u32,
}
const _: () = assert!(size_of::<PyStackHeader>() == 32);

/// The eBPF side's scratch for one thread's frames (a per-CPU slot).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PyStackScratch {
    pub hdr: PyStackHeader,
    pub frames: [PyFrame; PY_FRAMES],
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are `#[repr(C)]`, made only of integers and arrays of integers, with every
    // padding byte spelled out as a field: any bit pattern is a valid value.
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::OomControl {}
    unsafe impl aya::Pod for super::Reclaim {}
    unsafe impl aya::Pod for super::Signal {}
    unsafe impl aya::Pod for super::Exit {}
    unsafe impl aya::Pod for super::Reap {}
    unsafe impl aya::Pod for super::StackConfig {}
    unsafe impl aya::Pod for super::PyProc {}
}

#[cfg(test)]
mod tests {
    use super::{memcg::*, signal::*};

    #[test]
    fn page_counter_max_follows_the_page_size() {
        // LONG_MAX / PAGE_SIZE for 4, 16 and 64 KiB pages.
        assert_eq!(page_counter_max(12), (1 << 51) - 1);
        assert_eq!(page_counter_max(14), (1 << 49) - 1);
        assert_eq!(page_counter_max(16), (1 << 47) - 1);
        for shift in [12, 14, 16] {
            assert!(!is_limited(page_counter_max(shift), shift));
            assert!(is_limited(page_counter_max(shift) - 1, shift));
        }
        // The old fixed bound (2^50 pages) took a 64 KiB kernel's "max" for a limit of 8 EiB.
        assert!(page_counter_max(16) < 1 << 50);
    }

    #[test]
    fn the_nearest_level_that_cannot_take_the_charge_is_the_oom_memcg() {
        let unl = page_counter_max(12);
        let pick = |levels: &[(u64, u64)], nr| {
            oom_level(levels.iter().enumerate().map(|(i, &(u, m))| (i, u, m)), nr, 12)
        };
        // the child is at its limit
        assert_eq!(pick(&[(100, 100), (500, 1000), (9, unl)], 1), Some(0));
        // the child has room, the parent is full: the parent's limit fired
        assert_eq!(pick(&[(10, 1000), (1000, 1000), (9, unl)], 1), Some(1));
        // an exact hit further up beats a near one below
        assert_eq!(pick(&[(970, 1000), (1000, 1000)], 1), Some(1));
        // an order-9 charge does not fit in 100 free pages
        assert_eq!(pick(&[(900, 1000), (9, unl)], 512), Some(0));
        // nobody near a limit: a global OOM
        assert_eq!(pick(&[(10, unl), (9, unl)], 1), None);
        assert_eq!(pick(&[(10, 1000), (9, unl)], 1), None);
        // within a charge batch: memory freed since the charge failed
        assert_eq!(pick(&[(970, 1000), (9, unl)], 1), Some(0));
        assert_eq!(pick(&[], 1), None);
        // usage above an unlimited max on a 64 KiB kernel is still no limit
        let unl64 = page_counter_max(16);
        assert_eq!(oom_level([(0, unl64, unl64)], 1, 16), None);
    }

    #[test]
    fn signal_facts() {
        assert!(terminates_by_default(SIGKILL));
        assert!(terminates_by_default(15) && terminates_by_default(31) && terminates_by_default(24));
        assert!(!(17..=23).any(terminates_by_default));
        assert!(!terminates_by_default(28) && !terminates_by_default(0) && !terminates_by_default(32));
        assert_eq!(exit_signal(0x89), SIGKILL);
        assert!(core_dumped(0x86) && !core_dumped(9));
    }
}
