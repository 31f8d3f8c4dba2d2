//! The trigger's user stack at an OOM kill, symbolized against the trigger's own process.
//!
//! The eBPF program captures the stack of the task that *triggered* the OOM (`current` at
//! `mark_victim`) twice: as raw instruction pointers, and as (build id, file offset) pairs. Both must
//! be read against the trigger's address space. Symbolizing them against the *victim* (as bcc's
//! oomkill does) names functions of a different program whenever trigger and victim differ, so here
//! every name comes from either the trigger's own live mappings or an exact build-id match: a name we
//! cannot prove is left null, never guessed.
//!
//! Timing drives the design. The record reaches userspace a few milliseconds after the kill, and the
//! trigger is often the victim itself, already exiting: its `/proc/<pid>/maps` is about to vanish (or
//! already reads empty once the mm is released). So we symbolize at once, in this order:
//!
//! 1. **process**: blazesym's normalizer reads `/proc/<pid>/maps` once and turns each IP into a file
//!    offset inside a mapping. Each mapped file is opened through `/proc/<pid>/map_files/` (so deleted
//!    or replaced binaries still resolve to the inode the process really ran), its build id read, and
//!    the file descriptor kept. Names and source lines come from blazesym's ELF/DWARF source on that
//!    descriptor (`/proc/self/fd/N`), by file offset. Everything thus comes from one snapshot of the
//!    maps, and the kernel's build-id capture is checked against it: a frame whose file offset or
//!    build id disagrees means `/proc/<pid>` is no longer the process that was captured (pid reuse,
//!    exec, unmap), and the whole process result is dropped.
//! 2. **build_id**: when the process is gone, the kernel's build-id capture still gives build id +
//!    file offset for most frames. Names are filled only where that build id is one we opened during
//!    an earlier successful symbolization (its descriptor is still held, so it is the exact file).
//! 3. **none**: raw addresses only.
//!
//! Costs: blazesym caches parsed ELF/DWARF per file (keyed by device/inode/size/mtime) inside the
//! long-lived [`Symbolizer`], and the module table below caches build ids and descriptors, so a storm
//! of kills of the same binary pays one maps read, one `stat` + `readlink` per module and the lookups.
//! The tables are bounded ([`MAX_MODULES`]): past that everything is dropped and rebuilt.
//!
//! Without CAP_SYS_ADMIN (or CAP_CHECKPOINT_RESTORE) `map_files` cannot be opened. Frames then use the
//! path `/proc/<pid>/maps` shows, opened directly, but since that path may now hold a different file,
//! its names are used only when its build id equals the one the kernel captured for the frame.

use std::cell::OnceCell;
use std::collections::{HashMap, VecDeque};
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use blazesym::normalize::{NormalizeOpts, Normalizer, UserMeta};
use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer};
use blazesym::{ErrorKind, Pid};
use oomtrace_common::{
    BuildIdFrame, OomKill, USTACK_BUILD_ID_DEPTH, USTACK_DEPTH,
    build_id::{IP as BUILD_ID_IP, VALID as BUILD_ID_VALID},
    flags,
};

use super::buildid::{FileId, KERNEL_BUILD_ID_LEN, ModuleCache, ProcMaps, Snapshotter, kernel_key};
use super::python::PyStackRec;
use super::unwind::{self, End, StackCopyRec};
use crate::event::{self, UnwinderKind, UserFrame, UserStack};

/// Mapped files kept open (with their parsed symbols) before the caches are dropped and rebuilt.
const MAX_MODULES: usize = 128;
/// Smallest page size: `ip - file offset` is a multiple of it for any IP inside a file mapping.
const MIN_PAGE: u64 = 4096;

/// A mapped ELF file seen in some trigger, held open.
struct Module {
    /// Keeps the exact inode reachable after the process (and maybe the path) is gone.
    _file: File,
    /// `/proc/self/fd/N` for `_file`: the path blazesym opens (and caches by inode).
    fd_path: PathBuf,
    /// The path the file had when first seen.
    path: String,
    build_id: Option<Vec<u8>>,
    /// Why its DWARF (or separate debug file) could not be used, once it failed: ELF symbols only.
    bad_debug_info: OnceCell<String>,
}

/// Per-frame state while a stack is being symbolized.
struct Work {
    frame: UserFrame,
    /// 1 for return addresses (looked up at addr-1, so the call site is named), 0 for the faulting IP.
    adjust: u64,
    /// Module and file offset to look the name up at, once the frame is known to belong to it.
    lookup: Option<(usize, u64)>,
    /// The kernel's build id for this frame, when it captured one that lines up.
    kernel_build_id: Option<[u8; KERNEL_BUILD_ID_LEN]>,
}

impl Work {
    fn new(addr: String, index: usize) -> Self {
        Self {
            frame: UserFrame {
                addr,
                function: None,
                function_offset: None,
                file: None,
                line: None,
                module: None,
                module_offset: None,
                build_id: None,
                python: None,
            },
            adjust: u64::from(index > 0),
            lookup: None,
            kernel_build_id: None,
        }
    }

    /// Forget everything learned from `/proc/<pid>` (it turned out not to be the captured process).
    fn reset(&mut self) {
        let addr = std::mem::take(&mut self.frame.addr);
        let kernel_build_id = self.kernel_build_id;
        *self = Self {
            kernel_build_id,
            ..Self::new(addr, usize::from(self.adjust > 0))
        };
    }
}

/// Where the normalizer placed one frame.
enum Place {
    /// In a file mapping: `/proc/<pid>/map_files/...` path and the file offset looked up.
    File(PathBuf, u64),
    /// Symbolized on the spot (the vDSO): file offset, module name, symbol name and offset.
    Sym(u64, Option<String>, String, u64),
    /// Not in any file mapping (anonymous/JIT memory, [stack], or unmapped since).
    Nowhere,
}

/// Symbolizes trigger user stacks; keep one for the life of the tracer, its caches are the point.
/// Not `Send` (blazesym's caches use `Rc`): it lives on the thread that decodes records.
pub struct UserSymbolizer {
    symbolizer: Symbolizer,
    normalizer: Normalizer,
    modules: Vec<Module>,
    by_file: HashMap<FileId, usize>,
    by_build_id: HashMap<[u8; KERNEL_BUILD_ID_LEN], usize>,
    /// Files and mappings of processes seen alive (snapshots), for stacks of processes now gone.
    cache: Option<Arc<ModuleCache>>,
    /// The snapshot thread, kept alive for as long as this symbolizer names stacks from it.
    snapshots: Option<Arc<Snapshotter>>,
    /// Stack copies waiting for their `oom_kill` record (which follows each at once).
    copies: VecDeque<StackCopyRec>,
    /// Python stacks waiting for their `oom_kill` record, likewise.
    py: VecDeque<PyStackRec>,
}

/// Stack copies kept waiting for their `oom_kill` record: it comes right after its copy, so more
/// than a few waiting means their records were lost.
const MAX_WAITING_COPIES: usize = 8;

impl Default for UserSymbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl UserSymbolizer {
    pub fn new() -> Self {
        Self {
            symbolizer: new_symbolizer(),
            // Build ids are read (and cached by inode) here, through the descriptors we keep.
            normalizer: Normalizer::builder().enable_build_ids(false).build(),
            modules: Vec::new(),
            by_file: HashMap::new(),
            by_build_id: HashMap::new(),
            cache: None,
            snapshots: None,
            copies: VecDeque::new(),
            py: VecDeque::new(),
        }
    }

    /// The tracer's symbolizer: names stacks from the module cache that `snapshots` fills (every
    /// running process at start, then each one the kernel names at exec and memcg reclaim).
    pub fn for_tracer(snapshots: Arc<Snapshotter>) -> Self {
        let mut s = Self::new().with_cache(snapshots.cache().clone());
        s.snapshots = Some(snapshots);
        s
    }

    /// A stack copy, for the `oom_kill` record that follows it.
    pub fn note_copy(&mut self, copy: StackCopyRec) {
        if self.copies.len() >= MAX_WAITING_COPIES {
            self.copies.pop_front();
        }
        self.copies.push_back(copy);
    }

    /// One thread's Python frames, for the `oom_kill` record that follows them.
    pub fn note_py(&mut self, py: PyStackRec) {
        if self.py.len() >= 2 * MAX_WAITING_COPIES {
            self.py.pop_front();
        }
        self.py.push_back(py);
    }

    /// The trigger's user stack of one `oom_kill` record: its stack copy (sent just before it, same
    /// timestamp and trigger thread) unwound with DWARF, cross-checked with the kernel's
    /// frame-pointer walk; the frame-pointer walk alone without a copy.
    pub fn symbolize_record(&mut self, rec: &OomKill) -> Option<UserStack> {
        let (tid, ts) = (rec.trigger.tid, rec.ts_boot_ns);
        let copy = self
            .copies
            .iter()
            .position(|c| c.hdr.trigger_tid == tid && c.hdr.ts_boot_ns == ts)
            .and_then(|i| {
                // Older copies lost their records; they will not be asked for.
                self.copies.drain(..i);
                self.copies.pop_front()
            });
        let lost = copy.is_none() && rec.flags & flags::STACK_COPY != 0;
        let mut st = self.symbolize_copy(
            rec.trigger.tgid,
            rec.ustack_bytes,
            &rec.ustack,
            rec.ubuild_bytes,
            &rec.ubuild,
            copy.as_ref(),
            lost,
        )?;
        // Python stacks of this kill; older ones lost their record.
        let mine = |p: &PyStackRec| p.hdr.trigger_tid == tid && p.hdr.ts_boot_ns == ts;
        if let Some(first) = self.py.iter().position(mine) {
            self.py.drain(..first);
        }
        let mut threads = Vec::new();
        while self.py.front().is_some_and(mine) {
            if let Some(p) = self.py.pop_front() {
                threads.push(p.to_event());
            }
        }
        if threads.is_empty() && rec.flags & flags::PY_STACKS != 0 {
            push_note(&mut st, "the Python stacks were lost (ring buffer full)");
        }
        if let Some(t) = threads.iter().find(|t| t.trigger) {
            interleave(&mut st.frames, t);
        }
        st.python_stacks = (!threads.is_empty()).then_some(threads);
        Some(st)
    }

    /// Also names frames from the files and mappings `cache` keeps of processes seen alive.
    pub fn with_cache(mut self, cache: Arc<ModuleCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Loads the C library's symbols (every process maps it; as a file it is the same one in
    /// most containers of a node's images too) by symbolizing an address of our own inside it,
    /// so that the first kills do not pay for a cold start.
    pub fn warm_up(&mut self) {
        let ip = libc::malloc as *const () as usize as u64;
        let st = self.symbolize(std::process::id(), 8, &[ip], 0, &[]);
        log::debug!(
            "user-stack symbolizer warmed: {:?}",
            st.as_ref()
                .and_then(|s| s.frames.first())
                .and_then(|f| f.function.as_deref())
        );
    }

    /// `pid` is the trigger's tgid. Returns None when capture was off (ustack_bytes == 0 and
    /// ubuild_bytes == 0).
    pub fn symbolize(
        &mut self,
        pid: u32,
        ustack_bytes: i64,
        ips: &[u64],
        ubuild_bytes: i64,
        build: &[BuildIdFrame],
    ) -> Option<UserStack> {
        if ustack_bytes == 0 && ubuild_bytes == 0 {
            return None;
        }
        if self.modules.len() >= MAX_MODULES {
            // Only this symbolizer's own tables; the snapshot cache bounds itself.
            self.modules.clear();
            self.by_file.clear();
            self.by_build_id.clear();
            self.symbolizer = new_symbolizer();
        }
        let ips = captured(ustack_bytes, 8, ips);
        let mut kframes = captured(ubuild_bytes, 32, build);
        let mut notes = Vec::new();
        if ustack_bytes < 0 {
            notes.push(format!("bpf_get_stack: {ustack_bytes}"));
        }
        if ubuild_bytes < 0 {
            notes.push(format!("bpf_get_stack (build id): {ubuild_bytes}"));
        }
        if !ips.is_empty() && !kframes.is_empty() && !lines_up(ips, kframes) {
            notes.push("the build-id capture does not line up with the IP capture: ignored".into());
            kframes = &[];
        }

        let (depth, truncated) = if ips.is_empty() && !kframes.is_empty() {
            (kframes.len(), kframes.len() == USTACK_BUILD_ID_DEPTH)
        } else {
            (ips.len(), ips.len() == USTACK_DEPTH)
        };
        let mut work: Vec<Work> = (0..depth)
            .map(|i| {
                let addr = match (ips.get(i), kframes.get(i)) {
                    (Some(ip), _) => format!("{ip:#x}"),
                    (None, Some(k)) if k.status == BUILD_ID_IP => format!("{:#x}", k.offset_or_ip),
                    _ => String::new(),
                };
                Work::new(addr, i)
            })
            .collect();
        for (w, k) in work.iter_mut().zip(kframes) {
            if k.status == BUILD_ID_VALID {
                w.kernel_build_id = Some(k.build_id);
            }
        }

        let mut symbolized = event::Symbolized::None;
        if !ips.is_empty() {
            if pid == 0 {
                notes.push("no trigger pid".into());
            } else {
                match self.place_in_process(pid, ips, kframes, &mut work, &mut notes) {
                    Ok(()) => symbolized = event::Symbolized::Process,
                    Err(why) => {
                        notes.push(why);
                        work.iter_mut().for_each(Work::reset);
                    }
                }
            }
        }
        if symbolized != event::Symbolized::Process && self.place_by_kernel_build_ids(kframes, &mut work) {
            symbolized = event::Symbolized::BuildId;
        }
        self.name_frames(&mut work, &mut notes);

        Some(UserStack {
            frames: work.into_iter().map(|w| w.frame).collect(),
            depth,
            truncated,
            symbolized,
            note: (!notes.is_empty()).then(|| notes.join("; ")),
            unwinder: UnwinderKind::FramePointer,
            frame_pointer_depth: None,
            frame_pointer_common_frames: None,
            python_stacks: None,
        })
    }

    /// The trigger's stack from the kernel's copy of it (registers + stack bytes), unwound with
    /// DWARF CFI against the process's mappings — a snapshot of the same process image taken while
    /// it lived, or the live process itself — and named by file offset in the files held open. The
    /// kernel's frame-pointer walk (`ips`, `build`) is the cross-check, and the answer when there is
    /// no copy or no mapping to unwind it with.
    #[expect(
        clippy::too_many_arguments,
        reason = "the two captures of one stack, as the record has them"
    )]
    pub fn symbolize_copy(
        &mut self,
        pid: u32,
        ustack_bytes: i64,
        ips: &[u64],
        ubuild_bytes: i64,
        build: &[BuildIdFrame],
        copy: Option<&StackCopyRec>,
        copy_lost: bool,
    ) -> Option<UserStack> {
        let fp = self.symbolize(pid, ustack_bytes, ips, ubuild_bytes, build);
        let Some(copy) = copy.filter(|c| c.has_regs()) else {
            return fp.map(|mut st| {
                if copy_lost {
                    push_note(
                        &mut st,
                        "the kernel's stack copy was lost (ring buffer full): frame pointers only",
                    );
                }
                st
            });
        };
        let kframes = captured(ubuild_bytes, 32, build);
        let fp_ips = captured(ustack_bytes, 8, ips);
        let mut notes = Vec::new();
        let Some((maps, symbolized)) = self.maps_for(pid, copy, kframes, &mut notes) else {
            return fp.map(|mut st| {
                notes.iter().for_each(|n| push_note(&mut st, n));
                st
            });
        };
        let u = unwind::unwind(copy, &maps);
        if u.frames.len() < 2 && fp_ips.len() > 1 {
            return fp.map(|mut st| {
                push_note(&mut st, "DWARF unwinding found no caller: frame pointers used");
                st
            });
        }
        if u.end == End::Failed {
            notes.push("DWARF unwinding stopped early (no unwind rule, no frame pointer)".into());
        }
        let mut work: Vec<Work> = u
            .frames
            .iter()
            .enumerate()
            .map(|(i, &addr)| Work::new(format!("{addr:#x}"), i))
            .collect();
        let mut files: Vec<Arc<super::buildid::ElfFile>> = Vec::new();
        let mut nowhere = 0;
        for (w, &addr) in work.iter_mut().zip(&u.frames) {
            let Some(m) = maps.find(addr) else {
                if maps.vdso.as_ref().is_some_and(|v| v.contains(&addr)) {
                    w.frame.module = Some("[vdso]".into());
                } else {
                    nowhere += 1;
                }
                continue;
            };
            let off = addr - m.start + m.offset;
            w.frame.module = Some(m.file.path.clone());
            w.frame.module_offset = Some(off);
            w.frame.build_id = m.file.build_id.as_deref().map(hex);
            let fi = match files.iter().position(|f| Arc::ptr_eq(f, &m.file)) {
                Some(i) => i,
                None => {
                    files.push(m.file.clone());
                    files.len() - 1
                }
            };
            w.lookup = off.checked_sub(w.adjust).map(|o| (fi, o));
        }
        if nowhere > 0 {
            notes.push(format!(
                "{nowhere} frame(s) outside the snapshot's file mappings (JIT or anonymous code, or mapped after it)"
            ));
        }
        // Names, one batch per file, through the descriptors the cache holds.
        let module_of: Vec<Option<usize>> = files
            .iter()
            .map(|f| self.open_module(&f.fd_path, f.path.clone()).ok())
            .collect();
        for w in work.iter_mut() {
            w.lookup = w
                .lookup
                .and_then(|(fi, off)| module_of.get(fi).copied().flatten().map(|m| (m, off)));
        }
        self.name_frames(&mut work, &mut notes);
        let fp_depth = (!fp_ips.is_empty()).then_some(fp_ips.len());
        let common = fp_depth.map(|_| fp_ips.iter().zip(&u.frames).take_while(|(a, b)| a == b).count());
        let truncated = u.end == End::Depth
            || (u.end == End::OutOfCopy && copy.hdr.status & oomtrace_common::stack_status::CAPPED != 0);
        Some(UserStack {
            depth: work.len(),
            frames: work.into_iter().map(|w| w.frame).collect(),
            truncated,
            symbolized,
            note: (!notes.is_empty()).then(|| notes.join("; ")),
            unwinder: UnwinderKind::Dwarf,
            frame_pointer_depth: fp_depth,
            frame_pointer_common_frames: common,
            python_stacks: None,
        })
    }

    /// The mappings to unwind `copy` with: the last snapshot of the same process image, if it maps
    /// the IP; else the live process, if it is still the one captured. Either must agree with the
    /// kernel's build-id capture of the innermost frame, when it has one.
    fn maps_for(
        &self,
        pid: u32,
        copy: &StackCopyRec,
        kframes: &[BuildIdFrame],
        notes: &mut Vec<String>,
    ) -> Option<(Arc<ProcMaps>, event::Symbolized)> {
        let Some(cache) = &self.cache else {
            notes.push("no module cache: the stack copy is not unwound".into());
            return None;
        };
        let (h, ip) = (&copy.hdr, copy.hdr.ip);
        let agrees = |maps: &ProcMaps| {
            let Some(m) = maps.find(ip) else { return false };
            kframes.first().is_none_or(|k| {
                k.status != BUILD_ID_VALID
                    || (k.offset_or_ip == ip - m.start + m.offset
                        && m.file
                            .build_id
                            .as_deref()
                            .is_none_or(|id| same_build_id(id, &k.build_id)))
            })
        };
        if let Some(maps) = cache.proc(pid).filter(|p| p.matches(h.mm, h.start_boot_ns)) {
            if agrees(&maps) {
                return Some((maps, event::Symbolized::Snapshot));
            }
            notes.push("the snapshot of the trigger does not map its IP as the kernel saw it".into());
        }
        match cache.snapshot(pid, None) {
            Ok(maps) if maps.matches(h.mm, h.start_boot_ns) && agrees(&maps) => {
                Some((maps, event::Symbolized::Process))
            }
            Ok(_) => {
                notes.push(format!(
                    "/proc/{pid} is no longer the captured process: the stack copy is not unwound"
                ));
                None
            }
            Err(e) => {
                notes.push(format!(
                    "no snapshot of the trigger's mappings (it died before one was taken: {e}): the stack copy is not unwound"
                ));
                None
            }
        }
    }

    /// Places every frame in the live process' mappings and checks them against the kernel's build-id
    /// capture. Err: the process is gone or is not the one that was captured.
    fn place_in_process(
        &mut self,
        pid: u32,
        ips: &[u64],
        kframes: &[BuildIdFrame],
        work: &mut [Work],
        notes: &mut Vec<String>,
    ) -> Result<(), String> {
        let lookup: Vec<u64> = work
            .iter()
            .zip(ips)
            .map(|(w, ip)| ip.saturating_sub(w.adjust))
            .collect();
        let places = self.normalize(pid, &lookup, true)?;

        // Distinct map_files paths of this call and what they resolved to.
        let mut seen: Vec<(&Path, Option<(usize, String)>)> = Vec::new();
        let mut unopened = Vec::new();
        let mut open_error = None;
        let mut nowhere = 0;
        for (i, (w, place)) in work.iter_mut().zip(&places).enumerate() {
            match place {
                Place::File(map_file, off) => {
                    w.frame.module_offset = Some(off + w.adjust);
                    let resolved = match seen.iter().find(|(p, _)| p == map_file) {
                        Some((_, r)) => r.clone(),
                        None => {
                            let r = self.open_mapped(map_file).map_err(|e| open_error = Some(e)).ok();
                            seen.push((map_file, r.clone()));
                            r
                        }
                    };
                    match resolved {
                        Some((m, path)) => {
                            w.frame.module = Some(path);
                            w.frame.build_id = self.modules[m].build_id.as_deref().map(hex);
                            w.lookup = Some((m, *off));
                        }
                        None => unopened.push(i),
                    }
                }
                Place::Sym(off, module, name, sym_off) => {
                    w.frame.module = module.clone().or_else(|| Some("[vdso]".into()));
                    w.frame.module_offset = Some(off + w.adjust);
                    w.frame.function = Some(name.clone());
                    w.frame.function_offset = Some(sym_off + w.adjust);
                }
                Place::Nowhere => nowhere += 1,
            }
        }

        // The kernel walked the same stack: where it has a build id, offsets and ids must agree.
        for (i, (w, k)) in work.iter_mut().zip(kframes).enumerate() {
            if k.status != BUILD_ID_VALID {
                continue;
            }
            let file_id = w.lookup.and_then(|(m, _)| self.modules[m].build_id.as_deref());
            let agrees = w.frame.module_offset == Some(k.offset_or_ip)
                && file_id.is_none_or(|id| same_build_id(id, &k.build_id));
            if !agrees {
                return Err(format!(
                    "/proc/{pid}/maps no longer matches the captured stack at frame {i} \
                     (pid reused, exec or unmap since the kill): process ignored"
                ));
            }
            if file_id.is_none() {
                w.frame.build_id = Some(hex(&k.build_id));
            }
        }

        if let Some(e) = open_error {
            notes.push(format!(
                "cannot open /proc/{pid}/map_files ({e}; needs CAP_SYS_ADMIN): \
                 names only where the kernel's build id matches the file"
            ));
            self.place_by_symbolic_paths(pid, &lookup, &unopened, work);
        }
        // Frames still without a file to read names from, whose kernel build id (already checked
        // to agree on the offset) is a module we hold.
        for w in work.iter_mut().filter(|w| w.lookup.is_none()) {
            if let (Some(k), Some(off)) = (w.kernel_build_id, w.frame.module_offset)
                && let Some(&m) = self.by_build_id.get(&k)
            {
                w.lookup = off.checked_sub(w.adjust).map(|off| (m, off));
            }
        }
        if nowhere > 0 {
            notes.push(format!(
                "{nowhere} frame(s) outside any mapped file (JIT, anonymous or unmapped code)"
            ));
        }
        Ok(())
    }

    /// Frames whose mapping could not be opened through map_files: report the path maps shows and take
    /// names from it only where its build id equals the kernel's for the frame.
    fn place_by_symbolic_paths(&mut self, pid: u32, lookup: &[u64], frames: &[usize], work: &mut [Work]) {
        let Ok(places) = self.normalize(pid, lookup, false) else {
            return;
        };
        for &i in frames {
            let (Some(w), Some(Place::File(path, off))) = (work.get_mut(i), places.get(i)) else {
                continue;
            };
            w.frame.module = Some(path.to_string_lossy().into_owned());
            if let Some(m) = self.open_module(path, path.to_string_lossy().into_owned()).ok()
                && let (Some(id), Some(k)) = (self.modules[m].build_id.as_deref(), w.kernel_build_id)
                && same_build_id(id, &k)
            {
                w.frame.build_id = Some(hex(id));
                w.lookup = Some((m, *off));
            }
        }
    }

    /// The process is gone: build id and file offset from the kernel, names from modules seen before
    /// (here, or held open by the snapshot cache). Returns whether any frame had a build id.
    fn place_by_kernel_build_ids(&mut self, kframes: &[BuildIdFrame], work: &mut [Work]) -> bool {
        let mut any = false;
        for (w, k) in work.iter_mut().zip(kframes) {
            if k.status != BUILD_ID_VALID {
                continue;
            }
            any = true;
            w.frame.module_offset = Some(k.offset_or_ip);
            w.frame.build_id = Some(hex(&k.build_id));
            if !self.by_build_id.contains_key(&k.build_id)
                && let Some(f) = self.cache.as_ref().and_then(|c| c.by_build_id(&k.build_id))
            {
                // The snapshot cache holds the file with exactly this build id open: its
                // descriptor reaches that inode, whatever became of the path.
                let _ = self.open_module(&f.fd_path, f.path.clone());
            }
            if let Some(&m) = self.by_build_id.get(&k.build_id) {
                let module = &self.modules[m];
                w.frame.module = Some(module.path.clone());
                w.frame.build_id = module.build_id.as_deref().map(hex);
                w.lookup = k.offset_or_ip.checked_sub(w.adjust).map(|off| (m, off));
            }
        }
        any
    }

    /// Fills function/offset/file/line for every frame placed in a module, one batch per module.
    fn name_frames(&self, work: &mut [Work], notes: &mut Vec<String>) {
        let mut todo: Vec<usize> = (0..work.len()).filter(|&i| work[i].lookup.is_some()).collect();
        while let Some(&first) = todo.first() {
            let Some((m, _)) = work[first].lookup else { break };
            let (batch, rest): (Vec<usize>, Vec<usize>) = todo
                .iter()
                .partition(|&&i| work[i].lookup.is_some_and(|(mm, _)| mm == m));
            todo = rest;
            let offsets: Vec<u64> = batch
                .iter()
                .filter_map(|&i| work[i].lookup.map(|(_, off)| off))
                .collect();
            let module = &self.modules[m];
            let mut elf = Elf::new(&module.fd_path);
            elf.debug_syms = module.bad_debug_info.get().is_none();
            if let Some(e) = module.bad_debug_info.get() {
                notes.push(format!(
                    "debug info of {} unusable ({e}): ELF symbols only",
                    module.path
                ));
            }
            let syms = match self
                .symbolizer
                .symbolize(&Source::Elf(elf.clone()), Input::FileOffset(&offsets))
            {
                Ok(syms) => syms,
                Err(e) if elf.debug_syms => {
                    // Unusable debug info (e.g. a separate debug file compressed in a way we cannot
                    // read) must not cost the ELF symbol names: retry without it, and from now on.
                    notes.push(format!(
                        "debug info of {} unusable ({e}): ELF symbols only",
                        module.path
                    ));
                    let _ = module.bad_debug_info.set(e.to_string());
                    elf.debug_syms = false;
                    match self
                        .symbolizer
                        .symbolize(&Source::Elf(elf), Input::FileOffset(&offsets))
                    {
                        Ok(syms) => syms,
                        Err(e) => {
                            notes.push(format!("symbolizing {}: {e}", module.path));
                            continue;
                        }
                    }
                }
                Err(e) => {
                    notes.push(format!("symbolizing {}: {e}", module.path));
                    continue;
                }
            };
            for (&i, sym) in batch.iter().zip(syms) {
                let Symbolized::Sym(sym) = sym else { continue };
                let w = &mut work[i];
                w.frame.function = Some(sym.name.into_owned());
                w.frame.function_offset = Some(sym.offset as u64 + w.adjust);
                if let Some(ci) = &sym.code_info {
                    w.frame.file = Some(ci.to_path().to_string_lossy().into_owned());
                    w.frame.line = ci.line;
                }
            }
        }
    }

    /// One read of `/proc/<pid>/maps`: where each address lies.
    fn normalize(&self, pid: u32, addrs: &[u64], map_files: bool) -> Result<Vec<Place>, String> {
        let opts = NormalizeOpts {
            map_files,
            ..NormalizeOpts::default()
        };
        let out = self
            .normalizer
            .normalize_user_addrs_opts(Pid::from(pid), addrs, &opts)
            .map_err(|e| match e.kind() {
                ErrorKind::NotFound => format!("the trigger had exited: /proc/{pid}/maps is gone"),
                ErrorKind::UnexpectedEof => {
                    format!("the trigger had released its memory: /proc/{pid}/maps is empty")
                }
                _ => format!("reading /proc/{pid}/maps: {e}"),
            })?;
        Ok(out
            .outputs
            .iter()
            .map(|&(off, meta)| match out.meta.get(meta) {
                Some(UserMeta::Elf(elf)) => Place::File(elf.path.clone(), off),
                Some(UserMeta::Sym(sym)) => Place::Sym(
                    off,
                    sym.module.as_ref().map(|m| m.to_string_lossy().into_owned()),
                    sym.name.to_string(),
                    sym.offset as u64,
                ),
                _ => Place::Nowhere,
            })
            .collect())
    }

    /// The module behind a `/proc/<pid>/map_files/<range>` link, and the path the link shows.
    fn open_mapped(&mut self, map_file: &Path) -> io::Result<(usize, String)> {
        let path = fs::read_link(map_file)?.to_string_lossy().into_owned();
        let m = self.open_module(map_file, path.clone())?;
        Ok((m, path))
    }

    /// The cached module for the file at `path` (one `stat` when known), opening it when new.
    fn open_module(&mut self, path: &Path, shown_as: String) -> io::Result<usize> {
        if let Some(&m) = self.by_file.get(&FileId::of(&fs::metadata(path)?)) {
            return Ok(m);
        }
        let file = File::open(path)?;
        let id = FileId::of(&file.metadata()?);
        if let Some(&m) = self.by_file.get(&id) {
            return Ok(m);
        }
        let fd_path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        let build_id = blazesym::helper::read_elf_build_id(&fd_path)
            .ok()
            .flatten()
            .map(|b| b.into_owned());
        let m = self.modules.len();
        if let Some(key) = build_id.as_deref().and_then(kernel_key) {
            self.by_build_id.entry(key).or_insert(m);
        }
        self.by_file.insert(id, m);
        self.modules.push(Module {
            _file: file,
            fd_path,
            path: shown_as,
            build_id,
            bad_debug_info: OnceCell::new(),
        });
        Ok(m)
    }
}

fn new_symbolizer() -> Symbolizer {
    // Inlined-function lookup makes `code_info` the line in the named (outer) function, consistent with
    // `function` and `function_offset`; without it the line would be deep inside inlined library code.
    Symbolizer::builder()
        .enable_code_info(true)
        .enable_inlined_fns(true)
        .enable_demangling(true)
        .build()
}

/// The frames a `bpf_get_stack` call wrote: `bytes / size` of them, none on error or when off.
fn captured<T>(bytes: i64, size: usize, buf: &[T]) -> &[T] {
    let n = usize::try_from(bytes).map_or(0, |b| b / size);
    &buf[..n.min(buf.len())]
}

/// Whether frame i of the build-id capture is frame i of the IP capture: same depth (up to the
/// smaller buffer), IP-only frames carry the same IP, and file offsets are page-congruent with it.
fn lines_up(ips: &[u64], kframes: &[BuildIdFrame]) -> bool {
    kframes.len() == ips.len().min(USTACK_BUILD_ID_DEPTH)
        && ips.iter().zip(kframes).all(|(&ip, k)| match k.status {
            BUILD_ID_VALID => ip.wrapping_sub(k.offset_or_ip) % MIN_PAGE == 0,
            BUILD_ID_IP => ip == k.offset_or_ip,
            _ => true,
        })
}

/// The interpreter's `_PyEval_EvalFrameDefault` calls on the native stack, innermost first, each
/// get the Python frames that call was running (the k-th call, the k-th run of frames).
fn interleave(frames: &mut [UserFrame], t: &event::PyThread) {
    let mut groups = t.eval_groups.iter();
    let mut at = 0;
    for f in frames.iter_mut() {
        if f.function.as_deref() != Some("_PyEval_EvalFrameDefault") {
            continue;
        }
        let Some(&n) = groups.next() else { break };
        f.python = Some(t.frames[at..(at + n).min(t.frames.len())].to_vec());
        at += n;
    }
}

fn push_note(st: &mut UserStack, note: &str) {
    st.note = Some(match st.note.take() {
        Some(n) => format!("{n}; {note}"),
        None => note.to_owned(),
    });
}

fn same_build_id(id: &[u8], kernel: &[u8; KERNEL_BUILD_ID_LEN]) -> bool {
    kernel_key(id).is_some_and(|k| &k == kernel)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;
    use std::process::Command;
    use std::time::Instant;

    use super::*;

    #[inline(never)]
    fn known_fn(x: u64) -> u64 {
        std::hint::black_box(x).wrapping_mul(31).rotate_left(7)
    }

    fn known_ip() -> u64 {
        (known_fn as fn(u64) -> u64) as usize as u64
    }

    fn bytes(frames: usize) -> i64 {
        (frames * 8) as i64
    }

    fn exe() -> String {
        std::env::current_exe().unwrap().to_string_lossy().into_owned()
    }

    fn valid(build_id: &[u8], offset: u64) -> BuildIdFrame {
        BuildIdFrame {
            status: BUILD_ID_VALID,
            build_id: kernel_key(build_id).unwrap(),
            offset_or_ip: offset,
        }
    }

    /// Naming a live process' frames needs /proc/<pid>/map_files (CAP_SYS_ADMIN): tests that check
    /// names skip without it.
    fn map_files_readable() -> bool {
        let first = fs::read_dir("/proc/self/map_files")
            .ok()
            .and_then(|mut d| d.next()?.ok());
        let ok = first.is_some_and(|e| File::open(e.path()).is_ok());
        if !ok {
            eprintln!("/proc/self/map_files cannot be opened (needs CAP_SYS_ADMIN): skipped");
        }
        ok
    }

    fn dead_pid() -> u32 {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn ustack_names_own_function() {
        if !map_files_readable() {
            return;
        }
        let mut s = UserSymbolizer::new();
        // Frame 0 is the faulting IP (looked up as is); frame 1 is a return address just past the
        // function's first byte (looked up at addr-1, i.e. the start).
        let ips = [known_ip(), known_ip() + 1];
        let st = s.symbolize(std::process::id(), bytes(2), &ips, 0, &[]).unwrap();
        assert_eq!(st.symbolized.as_str(), "process", "{st:?}");
        assert_eq!((st.depth, st.truncated), (2, false));
        for (i, f) in st.frames.iter().enumerate() {
            assert_eq!(f.addr, format!("{:#x}", ips[i]));
            assert!(f.function.as_deref().unwrap().ends_with("known_fn"), "{f:?}");
            assert_eq!(f.function_offset, Some(i as u64));
            assert_eq!(f.module.as_deref(), Some(exe().as_str()));
            assert!(f.module_offset.is_some());
            assert!(f.file.as_deref().unwrap().ends_with("ustack.rs"), "{f:?}");
            assert!(f.line.is_some());
        }
        assert_eq!(
            st.frames[1].module_offset,
            st.frames[0].module_offset.map(|o| o + 1)
        );
        if let Some(n) = &st.note {
            panic!("unexpected note {n}");
        }
    }

    #[test]
    fn ustack_names_shared_library_function() {
        if !map_files_readable() {
            return;
        }
        let mut s = UserSymbolizer::new();
        let ip = libc::getpid as *const () as usize as u64 + 1;
        let st = s.symbolize(std::process::id(), bytes(1), &[ip], 0, &[]).unwrap();
        assert_eq!(st.symbolized.as_str(), "process", "{st:?}");
        let f = &st.frames[0];
        assert!(f.function.as_deref().unwrap().contains("getpid"), "{f:?}");
        assert_eq!(f.function_offset, Some(1));
        assert!(f.module.is_some() && f.module_offset.is_some(), "{f:?}");
    }

    /// Another process running a binary whose path was deleted after it started: names still come
    /// from the very file it mapped, opened through /proc/<pid>/map_files.
    #[test]
    fn ustack_names_another_process_with_deleted_binary() {
        if !map_files_readable() {
            return;
        }
        // A second name for this test binary, run as a child, then unlinked: maps shows "(deleted)".
        let exe = std::env::current_exe().unwrap();
        let link = exe.with_file_name(format!("ustack-deleted-{}", std::process::id()));
        let _ = fs::remove_file(&link);
        fs::hard_link(&exe, &link).unwrap();
        let mut child = Command::new(&link)
            .args(["--ignored", "--exact", "enrich::ustack::tests::ustack_sleeper"])
            .env("OOMTRACE_USTACK_SLEEPER", "1")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        fs::remove_file(&link).unwrap();
        let pid = child.id();
        let base_of = |pid: u32, name: &Path| {
            let maps = fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
            let name = name.file_name()?.to_str()?;
            let line = maps
                .lines()
                .find(|l| l.contains(name) && l.split_whitespace().nth(2) == Some("00000000"))?;
            u64::from_str_radix(line.split('-').next()?, 16).ok()
        };
        let mut child_base = None;
        for _ in 0..200 {
            child_base = base_of(pid, &link);
            if child_base.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let ip = child_base.unwrap() + (known_ip() - base_of(std::process::id(), &exe).unwrap());

        let st = UserSymbolizer::new()
            .symbolize(pid, bytes(1), &[ip], 0, &[])
            .unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(st.symbolized.as_str(), "process", "{st:?}");
        let f = &st.frames[0];
        assert!(f.function.as_deref().unwrap().ends_with("known_fn"), "{f:?}");
        assert_eq!(f.module, Some(format!("{} (deleted)", link.display())));
    }

    #[test]
    #[ignore = "run by ustack_names_another_process_with_deleted_binary"]
    fn ustack_sleeper() {
        if std::env::var_os("OOMTRACE_USTACK_SLEEPER").is_some() {
            std::thread::sleep(std::time::Duration::from_secs(30));
        }
    }

    #[test]
    fn ustack_checks_the_kernel_build_id_capture() {
        if !map_files_readable() {
            return;
        }
        let mut s = UserSymbolizer::new();
        let pid = std::process::id();
        let ips = [known_ip()];
        let first = s.symbolize(pid, bytes(1), &ips, 0, &[]).unwrap();
        let off = first.frames[0].module_offset.unwrap();
        let id = std::env::current_exe()
            .ok()
            .and_then(|p| blazesym::helper::read_elf_build_id(&p).ok().flatten());
        let id = id.map(|b| b.into_owned()).unwrap_or_else(|| vec![0x5a; 20]);

        // A matching capture confirms the process result and supplies a build id if the file has none.
        let st = s.symbolize(pid, bytes(1), &ips, 32, &[valid(&id, off)]).unwrap();
        assert_eq!(st.symbolized.as_str(), "process", "{st:?}");
        assert_eq!(st.frames[0].build_id, Some(hex(&id)));
        assert!(st.frames[0].function.is_some());

        // A capture of a different file at this position means /proc/<pid> is not the captured process:
        // no name may come from it, and the unknown build id has no cached module either.
        let other = [0xab; 20];
        let st = s
            .symbolize(pid, bytes(1), &ips, 32, &[valid(&other, off)])
            .unwrap();
        assert_eq!(st.symbolized.as_str(), "build_id", "{st:?}");
        assert!(
            st.note.as_deref().unwrap().contains("no longer matches"),
            "{st:?}"
        );
        let f = &st.frames[0];
        assert_eq!((f.function.as_ref(), f.module.as_ref()), (None, None));
        assert_eq!(f.build_id, Some(hex(&other)));
        assert_eq!(f.module_offset, Some(off));
        assert_eq!(f.addr, format!("{:#x}", ips[0]));

        // A build-id capture that cannot be the same walk (different depth) is ignored, not trusted.
        let st = s
            .symbolize(pid, bytes(1), &ips, 64, &[valid(&other, off), valid(&other, off)])
            .unwrap();
        assert_eq!(st.symbolized.as_str(), "process", "{st:?}");
        assert!(st.note.as_deref().unwrap().contains("does not line up"));
    }

    #[test]
    fn ustack_dead_process_keeps_addresses_without_names() {
        let mut s = UserSymbolizer::new();
        let pid = dead_pid();
        let ips = [known_ip(), 0x7f00_dead_beef];
        let st = s.symbolize(pid, bytes(2), &ips, 0, &[]).unwrap();
        assert_eq!(st.symbolized.as_str(), "none", "{st:?}");
        assert!(
            st.note
                .as_deref()
                .unwrap()
                .contains(&format!("/proc/{pid}/maps is gone")),
            "{st:?}"
        );
        for (f, ip) in st.frames.iter().zip(ips) {
            assert_eq!(f.addr, format!("{ip:#x}"));
            assert_eq!(
                (&f.function, &f.file, &f.module, &f.module_offset),
                (&None, &None, &None, &None)
            );
        }
        // With a kernel build-id capture: build id and offset, still no names (nothing cached).
        let k = [
            valid(&[0x11; 20], 0x1234),
            BuildIdFrame {
                status: BUILD_ID_IP,
                ..valid(&[], ips[1])
            },
        ];
        let k = [
            BuildIdFrame {
                offset_or_ip: ips[0] & 0xfff,
                ..k[0]
            },
            k[1],
        ];
        let st = s.symbolize(pid, bytes(2), &ips, 64, &k).unwrap();
        assert_eq!(st.symbolized.as_str(), "build_id", "{st:?}");
        assert_eq!(st.frames[0].build_id, Some("11".repeat(20)));
        assert_eq!(st.frames[0].module_offset, Some(ips[0] & 0xfff));
        assert!(
            st.frames
                .iter()
                .all(|f| f.function.is_none() && f.module.is_none())
        );
    }

    #[test]
    fn ustack_dead_process_named_from_build_id_cache() {
        let Some(id) = std::env::current_exe()
            .ok()
            .and_then(|p| blazesym::helper::read_elf_build_id(&p).ok().flatten())
        else {
            eprintln!("test binary has no build id: skipped");
            return;
        };
        if !map_files_readable() {
            return;
        }
        let mut s = UserSymbolizer::new();
        let ips = [known_ip(), known_ip() + 1];
        let live = s.symbolize(std::process::id(), bytes(2), &ips, 0, &[]).unwrap();
        let k: Vec<_> = live
            .frames
            .iter()
            .map(|f| valid(&id, f.module_offset.unwrap()))
            .collect();
        // The same capture arriving after the process died: names come from the cached module only
        // because its build id matches exactly.
        let st = s.symbolize(dead_pid(), bytes(2), &ips, 64, &k).unwrap();
        assert_eq!(st.symbolized.as_str(), "build_id", "{st:?}");
        for (a, b) in st.frames.iter().zip(&live.frames) {
            assert_eq!(a, b);
        }
    }

    /// Without CAP_SYS_ADMIN (and CAP_CHECKPOINT_RESTORE) /proc/<pid>/map_files cannot be opened: the
    /// path from maps is only trusted where its build id equals the kernel's. Runs this test binary
    /// again under setpriv with both capabilities dropped from the bounding set.
    #[test]
    fn ustack_without_map_files_access() {
        // CAP_SYS_ADMIN (bit 21) in CapEff, as root (setpriv needs CAP_SETPCAP too; root has it).
        let cap_eff = fs::read_to_string("/proc/self/status").ok().and_then(|s| {
            let v = s.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
            u64::from_str_radix(v.trim(), 16).ok()
        });
        let privileged = cap_eff.is_some_and(|v| v & (1 << 21) != 0)
            && fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        let setpriv = Path::new("/usr/bin/setpriv");
        if !privileged || !setpriv.exists() {
            eprintln!("needs root and setpriv: skipped");
            return;
        }
        let out = Command::new(setpriv)
            .arg("--bounding-set=-sys_admin,-checkpoint_restore")
            .arg(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "enrich::ustack::tests::ustack_unprivileged_child",
                "--nocapture",
            ])
            .env("OOMTRACE_USTACK_UNPRIVILEGED", "1")
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && log.contains("1 passed"), "{log}");
    }

    #[test]
    #[ignore = "run by ustack_without_map_files_access"]
    fn ustack_unprivileged_child() {
        if std::env::var_os("OOMTRACE_USTACK_UNPRIVILEGED").is_none() {
            return;
        }
        let mut s = UserSymbolizer::new();
        let pid = std::process::id();
        let ips = [known_ip()];
        let st = s.symbolize(pid, bytes(1), &ips, 0, &[]).unwrap();
        assert_eq!(st.symbolized.as_str(), "process", "{st:?}");
        assert!(
            st.note.as_deref().unwrap().contains("cannot open /proc/"),
            "{st:?}"
        );
        let f = &st.frames[0];
        // The path maps shows and the offset, but no name: nothing proves the file is the mapped one.
        assert_eq!(
            (f.module.as_deref(), &f.function),
            (Some(exe().as_str()), &None),
            "{f:?}"
        );
        let off = f.module_offset.unwrap();
        let Some(id) = blazesym::helper::read_elf_build_id(&exe()).unwrap() else {
            return;
        };
        // The kernel's build id for the frame equals the file's: now the name is exact.
        let st = s.symbolize(pid, bytes(1), &ips, 32, &[valid(&id, off)]).unwrap();
        let f = &st.frames[0];
        assert!(f.function.as_deref().unwrap().ends_with("known_fn"), "{st:?}");
        assert_eq!(f.build_id, Some(hex(&id)));
        // A different build id: no name.
        let st = s
            .symbolize(pid, bytes(1), &ips, 32, &[valid(&[0xcd; 20], off)])
            .unwrap();
        assert_eq!(st.frames[0].function, None, "{st:?}");
    }

    #[test]
    fn ustack_zombie_reads_as_released() {
        let mut s = UserSymbolizer::new();
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not reaped: /proc/<pid> stays but the mm is gone once it has exited.
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
            && Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let st = s.symbolize(pid, bytes(1), &[known_ip()], 0, &[]).unwrap();
        child.wait().unwrap();
        assert_eq!(st.symbolized.as_str(), "none", "{st:?}");
        assert!(st.note.as_deref().unwrap().contains("is empty"), "{st:?}");
        assert_eq!(st.frames[0].function, None);
    }

    #[test]
    fn ustack_capture_errors_and_truncation() {
        let mut s = UserSymbolizer::new();
        let pid = std::process::id();
        assert_eq!(s.symbolize(pid, 0, &[0; 32], 0, &[]), None);

        let st = s.symbolize(pid, -14, &[0; 32], 0, &[]).unwrap();
        assert_eq!(
            (st.depth, st.truncated, st.symbolized.as_str()),
            (0, false, "none")
        );
        assert!(st.frames.is_empty());
        assert_eq!(st.note.as_deref(), Some("bpf_get_stack: -14"));

        let ips = [known_ip(); USTACK_DEPTH];
        let full = s.symbolize(pid, bytes(USTACK_DEPTH), &ips, 0, &[]).unwrap();
        assert_eq!(
            (full.depth, full.truncated, full.frames.len()),
            (USTACK_DEPTH, true, USTACK_DEPTH)
        );
        let short = s.symbolize(pid, bytes(USTACK_DEPTH - 1), &ips, 0, &[]).unwrap();
        assert_eq!((short.depth, short.truncated), (USTACK_DEPTH - 1, false));
        let dead = s
            .symbolize(dead_pid(), bytes(USTACK_DEPTH), &ips, 0, &[])
            .unwrap();
        assert_eq!((dead.depth, dead.truncated), (USTACK_DEPTH, true));
    }

    /// The kernel's stack copy of a process that is gone, unwound and named from a snapshot of it
    /// taken while it lived: the DWARF stack names the capturing functions and their callers.
    #[test]
    fn ustack_copy_of_a_dead_process_named_from_its_snapshot() {
        if !map_files_readable() {
            return;
        }
        let mut copy = unwind::tests::capture_here();
        let cache = ModuleCache::new();
        let me = cache.snapshot(std::process::id(), None).unwrap();
        let dead = dead_pid();
        copy.hdr.trigger_tgid = dead;
        copy.hdr.mm = 0x1234;
        cache.adopt(dead, &me, Some(0x1234));
        let mut s = UserSymbolizer::new().with_cache(cache.clone());
        let st = s
            .symbolize_copy(dead, 0, &[], 0, &[], Some(&copy), false)
            .unwrap();
        assert_eq!(st.unwinder, UnwinderKind::Dwarf, "{st:?}");
        assert_eq!(st.symbolized, event::Symbolized::Snapshot, "{st:?}");
        let names: Vec<&str> = st.frames.iter().filter_map(|f| f.function.as_deref()).collect();
        let pos = |n: &str| names.iter().position(|f| f.ends_with(n));
        let (l3, l2, l1) = (pos("level3"), pos("level2"), pos("level1"));
        assert!(l3 < l2 && l2 < l1 && l3.is_some(), "{names:?}");
        assert!(
            names.iter().any(|n| n.contains("ustack_copy_of_a_dead_process")),
            "{names:?}"
        );
        let f = &st.frames[l3.unwrap()];
        assert!(
            f.file.as_deref().unwrap().ends_with("unwind.rs") && f.line.is_some(),
            "{f:?}"
        );
        assert_eq!(
            (st.frame_pointer_depth, st.frame_pointer_common_frames),
            (None, None)
        );

        // With the frame-pointer walk of the same stack (this binary keeps frame pointers): agrees.
        let ips: Vec<u64> = st
            .frames
            .iter()
            .map(|f| u64::from_str_radix(&f.addr[2..], 16).unwrap())
            .take(4)
            .collect();
        let st2 = s
            .symbolize_copy(dead, bytes(ips.len()), &ips, 0, &[], Some(&copy), false)
            .unwrap();
        assert_eq!(st2.frame_pointer_depth, Some(ips.len()), "{st2:?}");
        assert_eq!(st2.frame_pointer_common_frames, Some(ips.len()), "{st2:?}");
        assert_eq!(st2.frames, st.frames);

        // Another image of the process (a different mm): the snapshot is not used, and the
        // process is gone, so there is nothing to unwind with: the frame-pointer stack stands.
        copy.hdr.mm = 0x9999;
        let st3 = s
            .symbolize_copy(dead, bytes(ips.len()), &ips, 0, &[], Some(&copy), false)
            .unwrap();
        assert_eq!(st3.unwinder, UnwinderKind::FramePointer, "{st3:?}");
        assert!(st3.note.as_deref().unwrap().contains("no snapshot"), "{st3:?}");
        assert!(st3.frames.iter().all(|f| f.function.is_none()));
    }

    /// The live process: a fresh snapshot is taken at once (`process`).
    #[test]
    fn ustack_copy_of_a_live_process() {
        if !map_files_readable() {
            return;
        }
        let copy = unwind::tests::capture_here();
        let mut s = UserSymbolizer::new().with_cache(ModuleCache::new());
        let st = s
            .symbolize_copy(std::process::id(), 0, &[], 0, &[], Some(&copy), false)
            .unwrap();
        assert_eq!(
            (st.unwinder, st.symbolized),
            (UnwinderKind::Dwarf, event::Symbolized::Process),
            "{st:?}"
        );
        assert!(
            st.frames[0].function.as_deref().unwrap().ends_with("level3"),
            "{st:?}"
        );
        // No copy (lost to a full ring buffer): the frame-pointer stack, and a note.
        let st = s
            .symbolize_copy(std::process::id(), bytes(1), &[known_ip()], 0, &[], None, true)
            .unwrap();
        assert_eq!(st.unwinder, UnwinderKind::FramePointer);
        assert!(
            st.note.as_deref().unwrap().contains("stack copy was lost"),
            "{st:?}"
        );
    }

    #[test]
    fn ustack_serializes_nulls() {
        let st = UserSymbolizer::new()
            .symbolize(dead_pid(), bytes(1), &[0x1000], 0, &[])
            .unwrap();
        let v = serde_json::to_value(&st).unwrap();
        assert_eq!(v["frames"][0]["addr"], "0x1000");
        assert!(v["frames"][0]["function"].is_null() && v["frames"][0]["build_id"].is_null());
        assert_eq!(v["symbolized"], "none");
    }

    /// Cost of the first (cold: parse ELF/DWARF) and later (cached) symbolizations, and of the
    /// build-id path once the process is gone. Run with --nocapture to see the numbers.
    #[test]
    fn ustack_cached_call_cost() {
        if !map_files_readable() {
            return;
        }
        let mut s = UserSymbolizer::new();
        let pid = std::process::id();
        let libc = libc::getpid as *const () as usize as u64;
        let ips = [libc + 1, known_ip() + 1, libc + 2, known_ip() + 3];
        let t = Instant::now();
        let first = s.symbolize(pid, bytes(4), &ips, 0, &[]).unwrap();
        let cold = t.elapsed();
        let n = 50;
        let t = Instant::now();
        for _ in 0..n {
            assert_eq!(s.symbolize(pid, bytes(4), &ips, 0, &[]).unwrap(), first);
        }
        let warm = t.elapsed() / n;

        // The kernel's build-id capture of the same stack, replayed after the process is gone.
        let k: Vec<_> = first
            .frames
            .iter()
            .map(|f| match (&f.build_id, f.module_offset) {
                (Some(id), Some(off)) => valid(&unhex(id), off),
                _ => BuildIdFrame {
                    status: BUILD_ID_IP,
                    build_id: [0; 20],
                    offset_or_ip: 0,
                },
            })
            .collect();
        let dead = dead_pid();
        let t = Instant::now();
        for _ in 0..n {
            s.symbolize(dead, bytes(4), &ips, 128, &k).unwrap();
        }
        let gone = t.elapsed() / n;
        let modules: Vec<_> = s.modules.iter().map(|m| &m.path).collect();
        eprintln!(
            "ustack: first call {cold:?}, cached call {warm:?}, process gone (build-id cache) {gone:?}; \
             4 frames in {modules:?}"
        );
        assert!(s.modules.len() <= 2);
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
