//! The trigger's user registers and a copy of its user stack at the OOM, for unwinding in user space
//! with DWARF CFI after the process is gone (`bpf_get_stack` walks frame pointers, which most
//! distribution binaries and Debian's python3 do not keep); and the `ProcSeen` notifications that
//! let the loader snapshot a process's mappings and files while it is still alive.
//!
//! `mark_victim` runs on the trigger (`current`), whose address space is intact until it returns:
//! only what is copied here survives the victim's exit, which follows microseconds later.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_smp_processor_id, bpf_ktime_get_boot_ns,
        bpf_probe_read_kernel,
        generated::{bpf_get_current_task_btf, bpf_probe_read_user, bpf_task_pt_regs},
    },
    macros::{map, raw_tracepoint},
    maps::{Array, LruHashMap},
    programs::RawTracePointContext,
};
use oomtrace_common::{
    ProcSeen, RecordKind, STACK_COPY_MAX, StackConfig, StackCopy, StackCopyHeader, drop_reason, seen_reason,
    stack_status,
};

use crate::{
    EVENTS, cfg, count_drop,
    kernel::{read, read_ptr},
};

/// What the loader resolved for the stack and Python readers (frozen `.rodata`).
#[unsafe(no_mangle)]
static STACK_CONFIG: StackConfig = StackConfig::ABSENT;

macro_rules! scfg {
    ($field:ident) => {
        // SAFETY: STACK_CONFIG is a plain static; a volatile read of one of its fields is valid.
        unsafe { core::ptr::read_volatile(&raw const STACK_CONFIG.$field) }
    };
}

/// Whether the loader asked for Python frames.
#[inline(always)]
pub fn python_enabled() -> bool {
    scfg!(python) != 0
}

/// `task_struct.thread.fsbase`, [`oomtrace_common::ABSENT`] if unknown.
#[inline(always)]
pub fn task_fsbase_off() -> u32 {
    scfg!(task_fsbase)
}

/// One scratch record per CPU, indexed by CPU id. Not a per-CPU map: a per-CPU value may not
/// exceed PCPU_MIN_UNIT_SIZE (32 KiB, kernel/bpf/arraymap.c array_map_alloc_check() v6.18), and
/// the copy is 32 KiB plus its header. Tracepoints run with preemption disabled
/// (include/linux/tracepoint.h __DO_TRACE, v6.18), so one CPU's slot has one writer at a time.
/// The loader sizes it to the possible CPUs; a CPU beyond it copies nothing.
#[map]
static STACK_SCRATCH: Array<StackCopy> = Array::with_max_entries(1, 0);

/// When each process last sent a `ProcSeen` at memcg reclaim (tgid -> boot ns).
#[map]
static SEEN: LruHashMap<u32, u64> = LruHashMap::with_max_entries(4096, 0);

const PAGE: u64 = 4096;
/// Full pages after the first (partial) one: the first is at most PAGE, so the copy stays within
/// STACK_COPY_MAX (1 + 7 pages = 32 KiB).
const MORE_PAGES: u64 = (STACK_COPY_MAX as u64 / PAGE) - 1;

/// x86_64 `struct pt_regs` (arch/x86/include/asm/ptrace.h, v6.18): the fields we read, by index of
/// u64 slot. The layout is the kernel's entry-code ABI, unchanged since 2.6.
const PT_REGS_BP: usize = 4;
const PT_REGS_IP: usize = 16;
const PT_REGS_CS: usize = 17;
const PT_REGS_SP: usize = 19;
const PT_REGS_WORDS: usize = 21;

/// Copies the current task's user registers and stack (from its stack pointer up, page by page,
/// until a page cannot be read or STACK_COPY_MAX) and sends them as one `StackCopy` record of its
/// real length. Returns whether a record was sent. Call it before reserving the `OomKill` record,
/// so that this one comes first in the ring buffer.
#[inline(always)]
pub fn copy_stack(ts_boot_ns: u64) -> bool {
    if scfg!(copy_stack) == 0 {
        return false;
    }
    // SAFETY: helpers without preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(slot) = STACK_SCRATCH.get_ptr_mut(cpu) else {
        return false;
    };
    // SAFETY: this CPU's slot, with no other writer while we run (see STACK_SCRATCH).
    let s = unsafe { &mut *slot };
    // bpf_task_pt_regs() (5.15) gives task_pt_regs(): the user registers saved at kernel entry —
    // the page fault or the syscall that is charging memory.
    // SAFETY: the helper takes the BTF task pointer it is given by bpf_get_current_task_btf().
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const [u64; PT_REGS_WORDS];
    // SAFETY: bpf_probe_read_kernel never faults.
    let Ok(r) = (unsafe { bpf_probe_read_kernel(regs) }) else {
        return false;
    };
    if r[PT_REGS_CS] & 3 != 3 {
        // Not user-mode registers (a kernel thread's, e.g. a sysrq-forced OOM): nothing to unwind.
        return false;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let sp = r[PT_REGS_SP];
    s.hdr = StackCopyHeader {
        kind: RecordKind::StackCopy as u8,
        status: stack_status::REGS,
        _pad0: [0; 2],
        trigger_tid: pid_tgid as u32,
        ts_boot_ns,
        trigger_tgid: (pid_tgid >> 32) as u32,
        len: 0,
        ip: r[PT_REGS_IP],
        sp,
        bp: r[PT_REGS_BP],
        mm: current_mm(),
        start_boot_ns: leader_start_boot_ns(),
    };
    let dst = s.bytes.as_mut_ptr();
    // The rest of sp's page, then whole pages: every read stays within one page, so the first one
    // that fails is where the mapping ends (the kernel cannot fault pages in here, either).
    let first = PAGE - (sp & (PAGE - 1));
    let mut len = 0u64;
    // SAFETY: `first` <= PAGE <= STACK_COPY_MAX bytes into the scratch; the helper never faults.
    if unsafe { bpf_probe_read_user(dst.cast(), first as u32, sp as *const _) } == 0 {
        len = first;
        for i in 0..MORE_PAGES {
            let off = first + i * PAGE;
            // SAFETY: off + PAGE <= PAGE + MORE_PAGES * PAGE = STACK_COPY_MAX.
            let rc = unsafe {
                bpf_probe_read_user(
                    dst.wrapping_add(off as usize).cast(),
                    PAGE as u32,
                    (sp + off) as *const _,
                )
            };
            if rc != 0 {
                break;
            }
            len = off + PAGE;
        }
    }
    if len >= STACK_COPY_MAX as u64 {
        len = STACK_COPY_MAX as u64;
        s.hdr.status |= stack_status::CAPPED;
    } else {
        s.hdr.status |= stack_status::END_OF_MAPPING;
    }
    s.hdr.len = len as u32;
    let total = size_of::<StackCopyHeader>() + len as usize;
    // SAFETY: `total` <= size_of::<StackCopy>(): the header plus at most STACK_COPY_MAX bytes.
    let bytes = unsafe { core::slice::from_raw_parts(slot as *const u8, total.min(size_of::<StackCopy>())) };
    if EVENTS.output(bytes, 0).is_err() {
        count_drop(drop_reason::RINGBUF_FULL);
        return false;
    }
    true
}

/// A thread of the current process began memcg reclaim: tell the loader, at most once per
/// `seen_interval_ns` per process, so that it snapshots the mappings (libraries loaded since exec,
/// numpy's among them) before a possible OOM takes the process away.
#[inline(always)]
pub fn note_reclaim() {
    if scfg!(copy_stack) == 0 {
        return;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    // SAFETY: the value is copied out at once.
    if let Some(&last) = unsafe { SEEN.get(&tgid) }
        && now.wrapping_sub(last) < u64::from(scfg!(seen_interval_ns))
    {
        return;
    }
    let _ = SEEN.insert(&tgid, &now, 0);
    send_seen(tgid, now, seen_reason::MEMCG_RECLAIM);
}

/// `sched_process_exec` as a raw tracepoint: no BTF and no tracefs needed (4.17+). Fires in the new
/// program's context, after its executable and interpreter are mapped (fs/exec.c exec_binprm(),
/// v6.18).
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn process_exec(_ctx: RawTracePointContext) -> i32 {
    if scfg!(copy_stack) == 0 {
        return 0;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // A new program: the next reclaim is worth a new snapshot, whenever it comes.
    let _ = SEEN.remove(&tgid);
    // SAFETY: helper without preconditions.
    send_seen(tgid, unsafe { bpf_ktime_get_boot_ns() }, seen_reason::EXEC);
    0
}

/// `current->mm` as a number: identifies the process image (exec replaces it).
#[inline(always)]
fn current_mm() -> u64 {
    // SAFETY: the running task, only read through probe reads.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    read_ptr(task, cfg!(task_mm)) as u64
}

/// `current->group_leader->start_boottime`, 0 if unknown.
#[inline(always)]
fn leader_start_boot_ns() -> u64 {
    // SAFETY: as above.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let leader = read_ptr(task, cfg!(task_group_leader));
    read::<u64>(leader, cfg!(task_start_boottime)).unwrap_or(0)
}

#[inline(always)]
fn send_seen(tgid: u32, ts_boot_ns: u64, reason: u8) {
    let rec = ProcSeen {
        kind: RecordKind::ProcSeen as u8,
        reason,
        _pad0: [0; 2],
        tgid,
        ts_boot_ns,
        mm: current_mm(),
    };
    // With a wakeup: the snapshot races the OOM (a memcg reclaim that cannot free anything ends in
    // an OOM within a millisecond or so); the per-process interval bounds how often.
    if EVENTS.output(&rec, 0).is_err() {
        count_drop(drop_reason::RINGBUF_FULL);
    }
}
