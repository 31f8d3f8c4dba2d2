//! CPython frames at the OOM: walk the trigger's interpreter thread states through `_PyRuntime`
//! (address and offsets per process in `PY_PROCS`, filled by the loader when it snapshots a Python
//! process) and copy what names each frame — code object name, file name, first line, the current
//! instruction and the start of the line table — since the code objects die with the process.
//!
//! The trigger's own thread state is found by its kernel thread id (`native_thread_id`, 3.11+) or,
//! on 3.10, by its thread pointer (`thread_id` is pthread_self(), the fs base on x86_64 glibc). The
//! thread holding the GIL is sent too (a native thread that allocates, numpy's or TensorFlow's
//! workers, runs no Python itself): `gilstate.tstate_current` (3.10, 3.11) or the GIL's
//! `last_holder` while `locked` (3.12+).

use aya_ebpf::{
    helpers::{bpf_get_current_task, generated::bpf_probe_read_user},
    macros::map,
    maps::{LruHashMap, PerCpuArray},
};
use oomtrace_common::{
    ABSENT, PY_FRAMES, PY_LINETABLE_LEN, PyFrame, PyOffsets, PyProc, PyStackHeader, PyStackScratch,
    RecordKind, drop_reason, py_frame, py_thread,
};

use crate::{EVENTS, count_drop, kernel::read, stackcopy};

/// Python processes, by tgid (the loader inserts them when it snapshots a process; LRU, so the
/// dead ones make room).
#[map]
static PY_PROCS: LruHashMap<u32, PyProc> = LruHashMap::with_max_entries(4096, 0);

/// One thread's frames being gathered (per CPU; 15 KiB, within a per-CPU value's 32 KiB).
#[map]
static PY_SCRATCH: PerCpuArray<PyStackScratch> = PerCpuArray::with_max_entries(1, 0);

/// Thread states looked at per process (a process with more threads shows only the first ones).
const MAX_THREADS: usize = 16;
/// `FRAME_OWNED_BY_CSTACK` (Include/internal/pycore_frame.h, 3.12 and 3.13).
const OWNED_BY_CSTACK: u8 = 3;

#[inline(always)]
fn user<T>(addr: u64) -> Option<T> {
    if addr == 0 {
        return None;
    }
    let mut v = core::mem::MaybeUninit::<T>::uninit();
    // SAFETY: bpf_probe_read_user never faults; `v` is initialised only when it returns 0.
    let rc = unsafe { bpf_probe_read_user(v.as_mut_ptr().cast(), size_of::<T>() as u32, addr as *const _) };
    // SAFETY: the helper wrote size_of::<T>() bytes.
    (rc == 0).then(|| unsafe { v.assume_init() })
}

#[inline(always)]
fn at<T>(base: u64, off: u32) -> Option<T> {
    if off == ABSENT || base == 0 {
        return None;
    }
    user::<T>(base.wrapping_add(u64::from(off)))
}

#[inline(always)]
fn ptr(base: u64, off: u32) -> u64 {
    at::<u64>(base, off).unwrap_or(0)
}

/// Walks the current process's Python threads (if it is a known Python process) and sends one
/// `PyStack` record for the trigger's thread and one for the GIL holder. Returns how many were
/// sent. Call before reserving the `OomKill` record.
#[inline(always)]
pub fn walk(ts_boot_ns: u64, tid: u32, tgid: u32) -> u32 {
    if !stackcopy::python_enabled() {
        return 0;
    }
    // SAFETY: the value is copied out at once.
    let Some(p) = (unsafe { PY_PROCS.get(&tgid) }).copied() else {
        return 0;
    };
    let o = &p.off;
    let interp = ptr(p.runtime_addr, o.runtime_interpreters_head);
    if interp == 0 {
        return 0;
    }
    let gil = if o.runtime_tstate_current != ABSENT {
        ptr(p.runtime_addr, o.runtime_tstate_current)
    } else {
        let g = ptr(interp, o.interp_gil);
        if at::<i32>(g, o.gil_locked).unwrap_or(0) != 0 {
            ptr(g, o.gil_holder)
        } else {
            0
        }
    };
    // SAFETY: the running task, only read through probe reads.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let fsbase = read::<u64>(task, stackcopy::task_fsbase_off()).unwrap_or(0);
    let mut trigger = 0u64;
    let mut t = ptr(interp, o.interp_threads_head);
    for _ in 0..MAX_THREADS {
        if t == 0 {
            break;
        }
        let native = at::<u64>(t, o.tstate_native_thread_id).unwrap_or(0);
        let pthread = at::<u64>(t, o.tstate_thread_id).unwrap_or(0);
        if native == u64::from(tid) || (native == 0 && fsbase != 0 && pthread == fsbase) {
            trigger = t;
            break;
        }
        t = ptr(t, o.tstate_next);
    }
    let mut sent = 0;
    if trigger != 0 {
        let flags = py_thread::TRIGGER | if trigger == gil { py_thread::GIL } else { 0 };
        sent += u32::from(send_thread(o, trigger, flags, tid, ts_boot_ns));
    }
    if gil != 0 && gil != trigger {
        let native = at::<u64>(gil, o.tstate_native_thread_id).unwrap_or(0) as u32;
        sent += u32::from(send_thread(o, gil, py_thread::GIL, native, ts_boot_ns));
    }
    sent
}

/// Copies one thread's frames and sends them; false if nothing was sent.
#[inline(always)]
fn send_thread(o: &PyOffsets, tstate: u64, flags: u8, thread_tid: u32, ts_boot_ns: u64) -> bool {
    let Some(s) = PY_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's slot, one writer at a time (tracepoints run with preemption disabled).
    let s = unsafe { &mut *s };
    let mut frame = ptr(tstate, o.tstate_frame);
    if o.cframe_current_frame != ABSENT {
        frame = ptr(frame, o.cframe_current_frame);
    }
    let mut n = 0usize;
    let mut flags = flags;
    for i in 0..PY_FRAMES {
        if frame == 0 {
            break;
        }
        let f = &mut s.frames[i];
        copy_frame(o, frame, f);
        n = i + 1;
        frame = ptr(frame, o.frame_previous);
    }
    if frame != 0 {
        flags |= py_thread::TRUNCATED;
    }
    let trigger_tid = aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32;
    s.hdr = PyStackHeader {
        kind: RecordKind::PyStack as u8,
        flags,
        _pad0: [0; 2],
        trigger_tid,
        ts_boot_ns,
        tid: thread_tid,
        nframes: n as u32,
        version_hex: o.version_hex,
        _pad1: 0,
    };
    let total = size_of::<PyStackHeader>() + n.min(PY_FRAMES) * size_of::<PyFrame>();
    // SAFETY: `total` <= size_of::<PyStackScratch>().
    let bytes = unsafe {
        core::slice::from_raw_parts(
            (s as *const PyStackScratch).cast::<u8>(),
            total.min(size_of::<PyStackScratch>()),
        )
    };
    if EVENTS.output(bytes, 0).is_err() {
        count_drop(drop_reason::RINGBUF_FULL);
        return false;
    }
    true
}

/// Not inlined: a BPF subprogram, so that the verifier does not face 32 unrolled copies of it
/// per thread (inlined, mark_victim failed to load with E2BIG: too many instructions to verify).
#[inline(never)]
fn copy_frame(o: &PyOffsets, frame: u64, f: &mut PyFrame) {
    f.flags = 0;
    f.name_len = 0;
    f.file_len = 0;
    f.linetable_len = 0;
    f.file_full_len = 0;
    f.linetable_full_len = 0;
    f.first_line = 0;
    f.instr = at::<u64>(frame, o.frame_instr).unwrap_or(0);
    if at::<u8>(frame, o.frame_is_entry).unwrap_or(0) != 0 {
        f.flags |= py_frame::ENTRY;
    }
    if at::<u8>(frame, o.frame_owner) == Some(OWNED_BY_CSTACK) && o.frame_is_entry == ABSENT {
        // 3.12+: the entry shim _PyEval_EvalFrameDefault pushes; it runs no Python code.
        f.flags |= py_frame::SHIM;
        f.code = 0;
        return;
    }
    let code = ptr(frame, o.frame_code);
    f.code = code;
    if code == 0 {
        return;
    }
    f.first_line = at::<i32>(code, o.code_firstlineno).unwrap_or(0);
    let (name_len, _, ok) = copy_str(o, ptr(code, o.code_name), &mut f.name, false);
    let (file_len, file_full, ok2) = copy_str(o, ptr(code, o.code_filename), &mut f.file, true);
    if !(ok && ok2) {
        f.flags |= py_frame::NON_ASCII;
    }
    f.name_len = name_len;
    f.file_len = file_len;
    f.file_full_len = file_full;
    let lt = ptr(code, o.code_linetable);
    let full = at::<i64>(lt, o.bytes_size).unwrap_or(0).max(0) as u64;
    let n = full.min(PY_LINETABLE_LEN as u64) as u32;
    if n > 0 {
        // SAFETY: n <= PY_LINETABLE_LEN bytes into the frame's buffer; the helper never faults.
        let rc = unsafe {
            bpf_probe_read_user(
                f.linetable.as_mut_ptr().cast(),
                n,
                (lt + u64::from(o.bytes_sval)) as *const _,
            )
        };
        if rc == 0 {
            f.linetable_len = n as u16;
            f.linetable_full_len = full as u32;
        }
    }
}

/// Copies a compact ASCII or latin-1 `str` into `out` — its start, or with `tail` its end (file
/// paths: the end names the file). Returns (bytes copied, full length, whether it could be read).
#[inline(always)]
fn copy_str<const N: usize>(o: &PyOffsets, s: u64, out: &mut [u8; N], tail: bool) -> (u16, u32, bool) {
    if s == 0 {
        return (0, 0, false);
    }
    let state = at::<u32>(s, o.unicode_state).unwrap_or(0);
    // PyASCIIObject.state: interned:2, kind:3, compact:1, ascii:1 (Include/cpython/unicodeobject.h,
    // 3.10 to 3.13).
    let kind = (state >> 2) & 7;
    let compact = state & (1 << 5) != 0;
    let ascii = state & (1 << 6) != 0;
    if !compact || kind != 1 {
        return (0, 0, false);
    }
    let data = s + u64::from(if ascii {
        o.unicode_ascii_size
    } else {
        o.unicode_compact_size
    });
    let len = at::<i64>(s, o.unicode_length).unwrap_or(0).max(0) as u64;
    let n = len.min(N as u64);
    let src = if tail { data + (len - n) } else { data };
    // SAFETY: n <= N bytes into `out`; the helper never faults.
    let rc = unsafe { bpf_probe_read_user(out.as_mut_ptr().cast(), n as u32, src as *const _) };
    if rc != 0 {
        return (0, len as u32, false);
    }
    (n as u16, len as u32, true)
}
