//! Offline DWARF unwinding of the trigger's user stack, from the registers and stack bytes the
//! kernel copied at the OOM (oomtrace-ebpf/src/stackcopy.rs).
//!
//! The kernel's own user-stack walk (`bpf_get_stack`) follows frame pointers, which distribution
//! binaries (Debian's python3 among them) do not keep: it stops after a frame or two, or wanders
//! off into garbage. Here framehop walks the copy with each module's call frame information
//! (`.eh_frame`, indexed by `.eh_frame_hdr`, or `.debug_frame`), read from the files the
//! [`ModuleCache`](super::buildid::ModuleCache) holds open, placed at the load bias of the
//! process's mappings as snapshotted while it lived. Where a module has no CFI for an address,
//! framehop falls back to the frame pointer.

use std::{mem::size_of, ops::Range};

use anyhow::{Result, bail};
use framehop::{
    ExplicitModuleSectionInfo, FrameAddress, Module, Unwinder,
    x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64},
};
use oomtrace_common::{StackCopyHeader, stack_status};

use super::buildid::{Mapping, ProcMaps, Section};

/// Frames unwound at most (the kernel's frame-pointer capture keeps 32).
pub const MAX_FRAMES: usize = 64;

/// A decoded `StackCopy` record: registers and the stack bytes from `sp` up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackCopyRec {
    pub hdr: StackCopyHeader,
    pub stack: Vec<u8>,
}

impl StackCopyRec {
    /// Decodes the header and the `len` stack bytes after it. A record shorter than it says is an
    /// error (counted by the caller), never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let h = size_of::<StackCopyHeader>();
        if bytes.len() < h {
            bail!(
                "stack_copy record of {} bytes, expected at least {h}",
                bytes.len()
            );
        }
        // SAFETY: length checked; StackCopyHeader is repr(C) integers (any bit pattern is valid);
        // read_unaligned copes with the ring buffer's 8-byte alignment.
        let hdr = unsafe { bytes.as_ptr().cast::<StackCopyHeader>().read_unaligned() };
        let len = hdr.len as usize;
        let Some(stack) = bytes.get(h..h + len) else {
            bail!(
                "stack_copy record of {} bytes, its header says {}",
                bytes.len(),
                h + len
            );
        };
        Ok(Self {
            hdr,
            stack: stack.to_vec(),
        })
    }

    /// The 8 bytes at user address `addr`, if the copy holds them.
    pub fn read_u64(&self, addr: u64) -> Option<u64> {
        let off = usize::try_from(addr.checked_sub(self.hdr.sp)?).ok()?;
        let b = self.stack.get(off..off.checked_add(8)?)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }

    pub fn has_regs(&self) -> bool {
        self.hdr.status & stack_status::REGS != 0
    }
}

/// How an unwind ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// A root frame (CFI says there is no caller, or the frame pointer chain ends at 0).
    Root,
    /// The next frame lies beyond the copied bytes (the copy was capped, or the CFI is wrong).
    OutOfCopy,
    /// [`MAX_FRAMES`] reached.
    Depth,
    /// Unwinding failed otherwise (no unwind rule and no usable frame pointer, a loop).
    Failed,
}

/// The unwound frames: the IP first, then return addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unwound {
    pub frames: Vec<u64>,
    pub end: End,
}

/// Unwinds `copy` against the process's mappings `maps`. Each mapped file becomes one framehop
/// module at its load bias; files without unwind tables still take part (framehop falls back to
/// the frame pointer there).
pub fn unwind(copy: &StackCopyRec, maps: &ProcMaps) -> Unwound {
    let mut unwinder = UnwinderX86_64::<Section>::new();
    for (m, range) in modules(maps) {
        if let Some(module) = module_of(m, range) {
            unwinder.add_module(module);
        }
    }
    let mut cache = CacheX86_64::<_>::new();
    let mut read = |addr: u64| copy.read_u64(addr).ok_or(());
    let h = &copy.hdr;
    let mut it = unwinder.iter_frames(
        h.ip,
        UnwindRegsX86_64::new(h.ip, h.sp, h.bp),
        &mut cache,
        &mut read,
    );
    let mut frames = Vec::new();
    let end = loop {
        if frames.len() >= MAX_FRAMES {
            break End::Depth;
        }
        match it.next() {
            Ok(Some(FrameAddress::InstructionPointer(ip))) => frames.push(ip),
            Ok(Some(FrameAddress::ReturnAddress(ra))) => frames.push(ra.get()),
            Ok(None) => break End::Root,
            Err(framehop::Error::CouldNotReadStack(_)) => break End::OutOfCopy,
            Err(e) => {
                log::debug!("unwind of tid {} stopped: {e}", h.trigger_tid);
                break End::Failed;
            }
        }
    };
    Unwound { frames, end }
}

/// One module per mapped file: the range of its executable mappings, and the mapping the bias is
/// read from (the lowest).
fn modules(maps: &ProcMaps) -> Vec<(&Mapping, Range<u64>)> {
    let mut out: Vec<(&Mapping, Range<u64>)> = Vec::new();
    for m in &maps.mappings {
        match out.iter_mut().find(|(f, _)| f.file.id == m.file.id) {
            Some((_, r)) => {
                r.start = r.start.min(m.start);
                r.end = r.end.max(m.end);
            }
            None => out.push((m, m.start..m.end)),
        }
    }
    out
}

fn module_of(m: &Mapping, avma: Range<u64>) -> Option<Module<Section>> {
    let f = &m.file;
    let bias = f.bias(m.start, m.offset)?;
    let section = |name: &str| Section::of(f, name);
    let (text, text_svma) = section(".text").unzip();
    let (eh_frame, eh_frame_svma) = section(".eh_frame").unzip();
    let (eh_frame_hdr, eh_frame_hdr_svma) = section(".eh_frame_hdr").unzip();
    let debug_frame = section(".debug_frame").map(|(s, _)| s);
    let got_svma = section(".got").map(|(_, r)| r);
    let info = ExplicitModuleSectionInfo {
        base_svma: 0,
        text_svma,
        text,
        stubs_svma: None,
        stub_helper_svma: None,
        got_svma,
        unwind_info: None,
        eh_frame_svma,
        eh_frame,
        eh_frame_hdr_svma,
        eh_frame_hdr,
        debug_frame,
        text_segment_svma: None,
        text_segment: None,
    };
    Some(Module::new(f.path.clone(), avma, bias, info))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::arch::asm;

    use super::*;
    use crate::enrich::buildid::ModuleCache;

    /// This thread's registers and its stack from `sp` up (as the kernel would copy them), taken
    /// inside the innermost of three non-inlined functions.
    pub(crate) fn capture_here() -> StackCopyRec {
        #[inline(never)]
        fn level3() -> StackCopyRec {
            let (ip, sp, bp): (u64, u64, u64);
            // SAFETY: reads registers only; `lea` of the next instruction gives an IP in this function.
            unsafe {
                asm!(
                    "lea {ip}, [rip]",
                    "mov {sp}, rsp",
                    "mov {bp}, rbp",
                    ip = out(reg) ip,
                    sp = out(reg) sp,
                    bp = out(reg) bp,
                );
            }
            // The whole stack from sp to the end of the thread's stack mapping, at most 32 KiB.
            let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
            let end = maps
                .lines()
                .filter_map(|l| {
                    let (r, _) = l.split_once(' ')?;
                    let (a, b) = r.split_once('-')?;
                    Some((u64::from_str_radix(a, 16).ok()?, u64::from_str_radix(b, 16).ok()?))
                })
                .find(|&(a, b)| a <= sp && sp < b)
                .unwrap()
                .1;
            let len = (end - sp).min(oomtrace_common::STACK_COPY_MAX as u64) as usize;
            // SAFETY: [sp, sp + len) is inside this thread's stack mapping, which is readable.
            let stack = unsafe { std::slice::from_raw_parts(sp as *const u8, len) }.to_vec();
            std::hint::black_box(StackCopyRec {
                hdr: StackCopyHeader {
                    kind: oomtrace_common::RecordKind::StackCopy as u8,
                    status: stack_status::REGS | stack_status::END_OF_MAPPING,
                    trigger_tid: 1,
                    trigger_tgid: std::process::id(),
                    len: len as u32,
                    ip,
                    sp,
                    bp,
                    ..Default::default()
                },
                stack,
            })
        }
        #[inline(never)]
        fn level2() -> StackCopyRec {
            std::hint::black_box(level3())
        }
        #[inline(never)]
        fn level1() -> StackCopyRec {
            std::hint::black_box(level2())
        }
        level1()
    }

    #[test]
    fn unwinds_own_stack_from_a_copy() {
        let copy = capture_here();
        let cache = ModuleCache::new();
        let maps = cache.snapshot(std::process::id(), None).unwrap();
        let u = unwind(&copy, &maps);
        let explain = || {
            let frames: Vec<String> = u
                .frames
                .iter()
                .map(|&f| match maps.find(f) {
                    Some(m) => format!("{f:#x} {}+{:#x}", m.file.path, f - m.start + m.offset),
                    None => format!("{f:#x} ?"),
                })
                .collect();
            format!(
                "sp {:#x} bp {:#x} len {} end {:?}: {frames:#?}",
                copy.hdr.sp, copy.hdr.bp, copy.hdr.len, u.end
            )
        };
        assert!(u.frames.len() >= 5, "{}", explain());
        assert_eq!(u.frames[0], copy.hdr.ip);
        // Every frame is in a mapped file of ours (test binary, libc), none is garbage.
        for f in &u.frames {
            assert!(
                maps.find(*f).is_some(),
                "{f:#x} outside any mapping: {}",
                explain()
            );
        }
    }

    /// Through code without frame pointers: Debian's libc is built without them, so a capture
    /// taken in a qsort() comparator must show qsort's own frames between the comparator and our
    /// caller (a frame-pointer walk skips them, or stops).
    #[test]
    fn unwinds_through_libc_without_frame_pointers() {
        static COPY: std::sync::Mutex<Option<StackCopyRec>> = std::sync::Mutex::new(None);
        extern "C" fn cmp(a: *const libc::c_void, b: *const libc::c_void) -> libc::c_int {
            let mut c = COPY.lock().unwrap();
            if c.is_none() {
                *c = Some(capture_here());
            }
            // SAFETY: qsort hands the comparator pointers to two of the array's i32s.
            unsafe { *a.cast::<i32>() - *b.cast::<i32>() }
        }
        #[inline(never)]
        fn sort_caller() {
            let mut v = [3i32, 1, 2, 5, 4];
            // SAFETY: a valid array of 5 i32 and a comparator for i32.
            unsafe { libc::qsort(v.as_mut_ptr().cast(), v.len(), 4, Some(cmp)) };
            std::hint::black_box(&v);
        }
        sort_caller();
        let copy = COPY.lock().unwrap().clone().unwrap();
        let cache = ModuleCache::new();
        let maps = cache.snapshot(std::process::id(), None).unwrap();
        let u = unwind(&copy, &maps);
        let libc_file = maps
            .find(libc::qsort as *const () as usize as u64)
            .unwrap()
            .file
            .id;
        let in_libc = u
            .frames
            .iter()
            .position(|&f| maps.find(f).is_some_and(|m| m.file.id == libc_file));
        let caller = sort_caller as *const () as usize as u64;
        let back_in_caller = in_libc.and_then(|a| {
            let after = u.frames[a..]
                .iter()
                .position(|&f| f > caller && f < caller + 256)?;
            Some(a + after)
        });
        assert!(
            back_in_caller.is_some(),
            "no return into sort_caller after the libc frame {in_libc:?}: {u:?}"
        );
    }

    #[test]
    fn decodes_and_bounds_checks() {
        let copy = capture_here();
        let mut bytes = Vec::new();
        // SAFETY: plain repr(C) integers.
        bytes.extend_from_slice(unsafe {
            std::slice::from_raw_parts(
                (&copy.hdr as *const StackCopyHeader).cast::<u8>(),
                size_of::<StackCopyHeader>(),
            )
        });
        bytes.extend_from_slice(&copy.stack);
        assert_eq!(StackCopyRec::decode(&bytes).unwrap(), copy);
        assert!(StackCopyRec::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(StackCopyRec::decode(&bytes[..10]).is_err());
        assert_eq!(copy.read_u64(copy.hdr.sp - 8), None);
        assert_eq!(copy.read_u64(copy.hdr.sp + copy.hdr.len as u64 - 7), None);
        assert!(copy.read_u64(copy.hdr.sp).is_some());
    }
}
