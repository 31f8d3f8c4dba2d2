//! Handing records to the reader, and when to wake it.
//!
//! A wakeup is the most expensive thing a record does: bpf_ringbuf_commit() queues an irq_work
//! whose handler wakes the reader (kernel/bpf/ringbuf.c, v6.18), and on the lab's VM that costs
//! ~14 µs inside the submitting program (a self-IPI, then the reader's wakeup) — more than all the
//! rest of a kill's programs together. So only the records that end something, or that the
//! reader must act on at once, wake it: `oom_kill`, `exit`, `ProcSeen` ([`submit`], [`output`]).
//! `signal`, `oom_reap` and the stack copy and Python frames that precede their `oom_kill` ([`submit_quiet`],
//! [`output_quiet`]) do not (BPF_RB_NO_WAKEUP): they are read together with the next record that
//! does, or on the reader's tick.
//!
//! Without flags the kernel wakes the reader only if it has read everything before this record
//! (its consumer position is this record's), which assumes that an unread record before it has
//! woken the reader already. A quiet record breaks that, so every quiet record leaves its mark in
//! [`QUIET`], and the next waking record that finds a mark it has not seen forces its wakeup.

use aya_ebpf::{
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{Array, ring_buf::RingBufEntry},
};
use oomtrace_common::drop_reason;

use crate::{EVENTS, count_drop};

/// Slot 0: the mark of the latest record submitted without a wakeup (its time). Slot 1: the mark
/// the last forced wakeup saw. Shared, not per-CPU: a quiet record on one CPU must make a waking
/// record on another one force. Plain stores, no read-modify-write (the BPF target has no atomic
/// add in Rust): of two quiet records racing, one mark stays, and either differs from the last
/// one seen — what matters is only that it changed.
#[map]
static QUIET: Array<u64> = Array::with_max_entries(2, 0);

/// Room for one `T` in the ring buffer, or None (counted as `ring_buffer_full`).
#[inline(always)]
pub fn reserve<T: 'static>() -> Option<RingBufEntry<T>> {
    let entry = EVENTS.reserve::<T>(0);
    if entry.is_none() {
        count_drop(drop_reason::RINGBUF_FULL);
    }
    entry
}

/// Room for a record that will not wake the reader ([`submit_quiet`]). Counted before the
/// reservation: a waking record reserved after this one then sees the count and forces.
#[inline(always)]
pub fn reserve_quiet<T: 'static>() -> Option<RingBufEntry<T>> {
    note_quiet();
    reserve()
}

/// Submits a record that ends something (a kill, a death): wakes the reader now.
#[inline(always)]
pub fn submit<T>(entry: RingBufEntry<T>) {
    entry.submit(wake_flags());
}

/// Submits a record from [`reserve_quiet`] without waking the reader.
#[inline(always)]
pub fn submit_quiet<T>(entry: RingBufEntry<T>) {
    entry.submit(u64::from(BPF_RB_NO_WAKEUP));
}

/// Copies a record into the ring buffer and wakes the reader (see [`submit`]).
#[inline(always)]
pub fn output<T: ?Sized>(rec: &T) {
    if EVENTS.output(rec, wake_flags()).is_err() {
        count_drop(drop_reason::RINGBUF_FULL);
    }
}

/// Copies a record into the ring buffer without waking the reader. Returns whether it fit.
#[inline(always)]
pub fn output_quiet<T: ?Sized>(rec: &T) -> bool {
    note_quiet();
    let ok = EVENTS.output(rec, u64::from(BPF_RB_NO_WAKEUP)).is_ok();
    if !ok {
        count_drop(drop_reason::RINGBUF_FULL);
    }
    ok
}

#[inline(always)]
fn note_quiet() {
    if let Some(mark) = QUIET.get_ptr_mut(0) {
        // SAFETY: a map value that lives as long as the map; a plain 8-byte store.
        unsafe { core::ptr::write_volatile(mark, bpf_ktime_get_ns()) };
    }
}

/// 0 (the kernel's own rule) unless a quiet record came since the last forced wakeup.
#[inline(always)]
fn wake_flags() -> u64 {
    let (Some(mark), Some(seen)) = (QUIET.get_ptr(0), QUIET.get_ptr_mut(1)) else {
        return u64::from(BPF_RB_FORCE_WAKEUP);
    };
    // SAFETY: map values as above; racing writers of `seen` cost at most an extra wakeup.
    unsafe {
        let mark = core::ptr::read_volatile(mark);
        if mark == core::ptr::read_volatile(seen) {
            return 0;
        }
        core::ptr::write_volatile(seen, mark);
    }
    u64::from(BPF_RB_FORCE_WAKEUP)
}

/// Zeroes a plain-data part of a record with 8-byte stores. A `memset` (`write_bytes`, a zeroed
/// struct literal) becomes a call into aya-ebpf's byte-at-a-time `memset` here: zeroing the whole
/// 1.7 KiB `OomKill` that way took thousands of instructions per kill.
#[inline(always)]
pub fn zero<T>(v: &mut T) {
    const {
        assert!(size_of::<T>().is_multiple_of(8) && align_of::<T>() >= 8);
    }
    let p = core::ptr::from_mut(v).cast::<u64>();
    for i in 0..size_of::<T>() / 8 {
        // SAFETY: `i` 8-byte words lie within `*v`, which is plain data (any bits are valid).
        unsafe { core::ptr::write_volatile(p.add(i), 0) };
    }
}

/// Copies plain data word by word. A struct assignment from a map value into a record becomes a
/// call into aya-ebpf's byte-at-a-time `memmove` (LLVM cannot rule out an overlap).
#[inline(always)]
pub fn copy<T>(dst: &mut T, src: &T) {
    const {
        assert!(size_of::<T>().is_multiple_of(8) && align_of::<T>() >= 8);
    }
    let d = core::ptr::from_mut(dst).cast::<u64>();
    let s = core::ptr::from_ref(src).cast::<u64>();
    for i in 0..size_of::<T>() / 8 {
        // SAFETY: `i` 8-byte words lie within both values, which are plain data.
        unsafe { core::ptr::write_volatile(d.add(i), core::ptr::read_volatile(s.add(i))) };
    }
}
