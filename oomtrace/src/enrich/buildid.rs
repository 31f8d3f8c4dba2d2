//! The build id -> open file cache, and each process's executable mappings as last seen alive.
//!
//! A stack copied at an OOM is unwound and named after the trigger is gone (it is usually the
//! victim, and exits microseconds after `mark_victim`). By then `/proc/<pid>` is empty, its binary
//! may have been replaced on disk and its container removed. So the files are opened while the
//! process lives — at start for every running process, when it execs, and when it first enters
//! memcg reclaim (see oomtrace-ebpf/src/stackcopy.rs) — through `/proc/<pid>/map_files/`, which
//! reaches the very inode the process mapped; the descriptor is kept, so its bytes stay readable
//! whatever happens to the path. With each snapshot go the process's executable mappings (start,
//! end, file offset, file): the unwinder needs each module's load bias.
//!
//! A snapshot is tied to one image of one process: the tgid, the leader's start time (a reused
//! tgid starts later), and `mm` (exec makes a new one) when the snapshot was asked for by the kernel.
//! A stack whose process does not match is not given the snapshot: no name rather than a wrong one.
//!
//! Shared (`Send + Sync`): snapshots are taken on a thread of their own, so that a slow one never
//! holds up the pipeline, and read by the pipeline thread.

use std::{
    collections::{HashMap, VecDeque},
    fs::{self, File, Metadata},
    io,
    ops::{Deref, Range},
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, OnceLock, mpsc},
    thread,
};

use memmap2::Mmap;
use object::{Object, ObjectSection, ObjectSegment, SegmentFlags};
use oomtrace_common::{ProcSeen, seen_reason};

/// The kernel's build-id field, zero-padded for shorter ids.
pub const KERNEL_BUILD_ID_LEN: usize = oomtrace_common::build_id::LEN;
/// Files held open (each costs a descriptor and, once unwound or named, its parsed tables).
const MAX_FILES: usize = 512;
/// Processes whose mappings are remembered; the oldest snapshot goes first.
const MAX_PROCS: usize = 4096;
/// Snapshot requests waiting for the snapshot thread; more are dropped (and counted).
const MAX_PENDING: usize = 256;

/// Identity of a file's contents as far as the file system tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
}

impl FileId {
    pub fn of(m: &Metadata) -> Self {
        Self {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
        }
    }
}

/// A mapped ELF file, held open.
pub struct ElfFile {
    file: File,
    /// `/proc/self/fd/N` for `file`: a path to the exact inode, for blazesym.
    pub fd_path: PathBuf,
    /// The path the file had when first seen (as `/proc/<pid>/maps` showed it).
    pub path: String,
    pub build_id: Option<Vec<u8>>,
    pub id: FileId,
    /// The file's bytes, mapped on first use (unwind tables, segments).
    map: OnceLock<Option<Arc<Mmap>>>,
    /// PT_LOAD segments: (file offset, file size, vaddr), parsed on first use.
    loads: OnceLock<Vec<(u64, u64, u64)>>,
}

impl ElfFile {
    fn open(path: &Path, shown_as: String) -> io::Result<Self> {
        let file = File::open(path)?;
        let id = FileId::of(&file.metadata()?);
        let fd_path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        let build_id = blazesym::helper::read_elf_build_id(&fd_path)
            .ok()
            .flatten()
            .map(|b| b.into_owned());
        Ok(Self {
            file,
            fd_path,
            path: shown_as,
            build_id,
            id,
            map: OnceLock::new(),
            loads: OnceLock::new(),
        })
    }

    /// The whole file, mapped read-only (None if it cannot be).
    pub fn bytes(&self) -> Option<Arc<Mmap>> {
        self.map
            .get_or_init(|| {
                // SAFETY: a read-only private mapping of a file we hold open. A file that is
                // truncated under us could fault on access; ELF files in use are not rewritten in
                // place (the loader would crash too), they are replaced by a new inode.
                unsafe { Mmap::map(&self.file) }.ok().map(Arc::new)
            })
            .clone()
    }

    /// PT_LOAD segments as (file offset, file size, vaddr).
    pub fn loads(&self) -> &[(u64, u64, u64)] {
        self.loads.get_or_init(|| {
            let Some(map) = self.bytes() else {
                return Vec::new();
            };
            let Ok(obj) = object::File::parse(&**map) else {
                return Vec::new();
            };
            obj.segments()
                .filter(|s| matches!(s.flags(), SegmentFlags::Elf { .. }))
                .map(|s| {
                    let (off, size) = s.file_range();
                    (off, size, s.address())
                })
                .collect()
        })
    }

    /// The load bias of a mapping of this file at `start` with file offset `offset`: the address
    /// that the ELF's virtual address 0 lands at. None when no PT_LOAD covers the offset.
    pub fn bias(&self, start: u64, offset: u64) -> Option<u64> {
        let &(p_off, _, p_vaddr) = self
            .loads()
            .iter()
            .find(|&&(o, sz, _)| offset >= o & !0xfff && offset < o + sz.max(1))?;
        // vaddr of the mapping's first byte: p_vaddr + (offset - p_offset).
        let vaddr = p_vaddr.wrapping_add(offset).wrapping_sub(p_off);
        Some(start.wrapping_sub(vaddr))
    }

    /// The kernel's 20-byte form of the build id.
    pub fn kernel_build_id(&self) -> Option<[u8; KERNEL_BUILD_ID_LEN]> {
        self.build_id.as_deref().and_then(kernel_key)
    }
}

/// A part of a mapped file's bytes (a section), for the unwinder, without copying.
#[derive(Clone)]
pub struct Section {
    map: Arc<Mmap>,
    range: Range<usize>,
}

impl Deref for Section {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.map[self.range.clone()]
    }
}

impl Section {
    /// The bytes of section `name` of `file` and its address range, if present and stored
    /// uncompressed in the file.
    pub fn of(file: &ElfFile, name: &str) -> Option<(Section, Range<u64>)> {
        let map = file.bytes()?;
        let obj = object::File::parse(&**map).ok()?;
        let s = obj.section_by_name(name)?;
        if s.compressed_file_range().ok()?.format != object::CompressionFormat::None {
            return None;
        }
        let (off, size) = s.file_range()?;
        let range = usize::try_from(off).ok()?..usize::try_from(off + size).ok()?;
        if range.end > map.len() {
            return None;
        }
        let addr = s.address()..s.address() + s.size();
        Some((Section { map, range }, addr))
    }
}

/// One executable file mapping of a process.
#[derive(Clone)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    pub file: Arc<ElfFile>,
}

/// A process's executable mappings, as read from `/proc/<pid>/maps` while it lived.
pub struct ProcMaps {
    pub tgid: u32,
    /// `current->mm` when the kernel asked for the snapshot; None for the start-up scan.
    pub mm: Option<u64>,
    /// The leader's start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
    pub start_ticks: u64,
    /// Executable file mappings, by start address.
    pub mappings: Vec<Mapping>,
    /// The `[vdso]` mapping, if any (its unwind tables are in memory only).
    pub vdso: Option<Range<u64>>,
}

impl ProcMaps {
    /// The mapping holding `addr`.
    pub fn find(&self, addr: u64) -> Option<&Mapping> {
        let i = self.mappings.partition_point(|m| m.start <= addr);
        self.mappings[..i].last().filter(|m| addr < m.end)
    }

    /// Whether this snapshot is of the process image a kernel record describes: same leader start
    /// (to the clock tick) and, when both know it, the same mm.
    pub fn matches(&self, mm: u64, start_boot_ns: u64) -> bool {
        let ticks = start_boot_ns / (1_000_000_000 / clock_ticks());
        let start_ok = start_boot_ns == 0 || ticks.abs_diff(self.start_ticks) <= 1;
        start_ok && self.mm.is_none_or(|m| m == mm)
    }
}

/// USER_HZ, the unit of /proc's start times.
fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|&t| t > 0).unwrap_or(100)
}

#[derive(Default)]
struct Inner {
    by_file: HashMap<FileId, Arc<ElfFile>>,
    by_build_id: HashMap<[u8; KERNEL_BUILD_ID_LEN], Arc<ElfFile>>,
    procs: HashMap<u32, Arc<ProcMaps>>,
    /// Insertion order of `procs`, to drop the oldest.
    order: VecDeque<u32>,
}

/// Counters of the cache's work, for tests and debugging.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub snapshots: u64,
    pub failed: u64,
    pub dropped_requests: u64,
    pub files: usize,
}

/// The build-id -> file cache and the per-process mappings.
#[derive(Default)]
pub struct ModuleCache {
    inner: Mutex<Inner>,
    stats: Mutex<Stats>,
}

impl ModuleCache {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Reads `/proc/<tgid>/maps` and opens every executable file mapping (once per file).
    /// `mm` is the kernel's `current->mm` for a snapshot the kernel asked for.
    pub fn snapshot(&self, tgid: u32, mm: Option<u64>) -> io::Result<Arc<ProcMaps>> {
        let r = self.snapshot_inner(tgid, mm);
        let mut st = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        match &r {
            Ok(_) => st.snapshots += 1,
            Err(_) => st.failed += 1,
        }
        r
    }

    fn snapshot_inner(&self, tgid: u32, mm: Option<u64>) -> io::Result<Arc<ProcMaps>> {
        let started = start_ticks(tgid)?;
        let maps = fs::read_to_string(format!("/proc/{tgid}/maps"))?;
        let mut mappings = Vec::new();
        let mut vdso = None;
        for line in maps.lines() {
            let Some(m) = MapsLine::parse(line) else { continue };
            if m.path == "[vdso]" {
                vdso = Some(m.start..m.end);
                continue;
            }
            if !m.exec || !m.path.starts_with('/') {
                continue;
            }
            let file = match self.open_mapping(tgid, &m) {
                Ok(f) => f,
                Err(e) => {
                    log::debug!("snapshot of {tgid}: cannot open {}: {e}", m.path);
                    continue;
                }
            };
            mappings.push(Mapping {
                start: m.start,
                end: m.end,
                offset: m.offset,
                file,
            });
        }
        if mappings.is_empty() && vdso.is_none() {
            // A kernel thread, or a process that has released its memory (exiting).
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "no mappings"));
        }
        // The process may have exited and its tgid been reused while we read.
        if start_ticks(tgid)? != started {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "process replaced during the snapshot",
            ));
        }
        mappings.sort_by_key(|m| m.start);
        // A scan (no mm) of a process the kernel named before keeps that mm: if it exec'd since,
        // the snapshot then matches neither image, which costs names, never makes them wrong.
        let mm = mm.or_else(|| {
            let inner = self.lock();
            let old = inner.procs.get(&tgid)?;
            (old.start_ticks == started).then_some(old.mm).flatten()
        });
        let pm = Arc::new(ProcMaps {
            tgid,
            mm,
            start_ticks: started,
            mappings,
            vdso,
        });
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.procs.insert(tgid, pm.clone()).is_none() {
            inner.order.push_back(tgid);
        }
        while inner.procs.len() > MAX_PROCS {
            let Some(old) = inner.order.pop_front() else { break };
            inner.procs.remove(&old);
        }
        Ok(pm)
    }

    /// The file behind one mapping: through `map_files` (the exact inode, even deleted or
    /// replaced; needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE), else the path `maps` shows, kept only
    /// when its inode is the one `maps` names.
    fn open_mapping(&self, tgid: u32, m: &MapsLine) -> io::Result<Arc<ElfFile>> {
        let map_file = PathBuf::from(format!("/proc/{tgid}/map_files/{:x}-{:x}", m.start, m.end));
        let (path, shown) = match fs::metadata(&map_file) {
            Ok(_) => (map_file, m.path.to_owned()),
            Err(_) => {
                let p = PathBuf::from(m.path.trim_end_matches(" (deleted)"));
                let md = fs::metadata(&p)?;
                if md.ino() != m.inode || m.path.ends_with(" (deleted)") {
                    return Err(io::Error::other("path no longer holds the mapped file"));
                }
                (p, m.path.to_owned())
            }
        };
        let id = FileId::of(&fs::metadata(&path)?);
        if let Some(f) = self.lock().by_file.get(&id) {
            return Ok(f.clone());
        }
        let f = Arc::new(ElfFile::open(&path, shown)?);
        let mut inner = self.lock();
        if inner.by_file.len() >= MAX_FILES {
            // Keep what live snapshots use; forget the rest.
            let used: std::collections::HashSet<FileId> = inner
                .procs
                .values()
                .flat_map(|p| p.mappings.iter().map(|m| m.file.id))
                .collect();
            inner.by_file.retain(|k, _| used.contains(k));
            inner.by_build_id.retain(|_, f| used.contains(&f.id));
        }
        let f = inner.by_file.entry(f.id).or_insert(f).clone();
        if let Some(key) = f.kernel_build_id() {
            inner.by_build_id.entry(key).or_insert_with(|| f.clone());
        }
        Ok(f)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The last snapshot of `tgid`.
    pub fn proc(&self, tgid: u32) -> Option<Arc<ProcMaps>> {
        self.lock().procs.get(&tgid).cloned()
    }

    /// A file held open with this build id (the kernel's 20-byte form).
    pub fn by_build_id(&self, id: &[u8; KERNEL_BUILD_ID_LEN]) -> Option<Arc<ElfFile>> {
        self.lock().by_build_id.get(id).cloned()
    }

    /// Files `maps` as the snapshot of `tgid` (tests: a process that is gone, with known mappings).
    #[cfg(test)]
    pub(crate) fn adopt(&self, tgid: u32, maps: &ProcMaps, mm: Option<u64>) {
        let pm = Arc::new(ProcMaps {
            tgid,
            mm,
            start_ticks: maps.start_ticks,
            mappings: maps.mappings.clone(),
            vdso: maps.vdso.clone(),
        });
        self.lock().procs.insert(tgid, pm);
    }

    pub fn stats(&self) -> Stats {
        let mut s = *self.stats.lock().unwrap_or_else(|e| e.into_inner());
        s.files = self.lock().by_file.len();
        s
    }
}

/// The leader's start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
fn start_ticks(tgid: u32) -> io::Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{tgid}/stat"))?;
    // comm (field 2) may hold spaces and parentheses: fields resume after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::other("bad stat"))?;
    rest.split_whitespace()
        .nth(19)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other("bad stat"))
}

/// One line of `/proc/<pid>/maps`.
struct MapsLine<'a> {
    start: u64,
    end: u64,
    exec: bool,
    offset: u64,
    inode: u64,
    path: &'a str,
}

impl<'a> MapsLine<'a> {
    fn parse(line: &'a str) -> Option<Self> {
        let mut it = line.splitn(6, ' ');
        let (range, perms, offset, _dev, inode) =
            (it.next()?, it.next()?, it.next()?, it.next()?, it.next()?);
        let path = it.next().unwrap_or("").trim_start();
        let (start, end) = range.split_once('-')?;
        Some(Self {
            start: u64::from_str_radix(start, 16).ok()?,
            end: u64::from_str_radix(end, 16).ok()?,
            exec: perms.as_bytes().get(2) == Some(&b'x'),
            offset: u64::from_str_radix(offset, 16).ok()?,
            inode: inode.parse().ok()?,
            path,
        })
    }
}

/// A build id as the kernel stores it (zero-padded to 20 bytes); None if it cannot fit.
pub fn kernel_key(id: &[u8]) -> Option<[u8; KERNEL_BUILD_ID_LEN]> {
    let mut key = [0; KERNEL_BUILD_ID_LEN];
    key.get_mut(..id.len())?.copy_from_slice(id);
    Some(key)
}

/// Called with each snapshot the snapshot thread takes.
pub type OnSnapshot = Box<dyn FnMut(&ProcMaps) + Send>;

/// Takes snapshots on a thread of its own; requests never wait.
pub struct Snapshotter {
    tx: mpsc::SyncSender<Request>,
    cache: Arc<ModuleCache>,
}

/// One snapshot asked for: the process, its `mm`, and whether it just exec'd (its libraries are
/// still being mapped by the dynamic loader: it is snapshotted again a little later).
#[derive(Clone, Copy, Debug)]
struct Request {
    tgid: u32,
    mm: u64,
    exec: bool,
}

/// When a process that just exec'd is snapshotted again: ld.so has mapped its libraries by then.
const AFTER_EXEC: std::time::Duration = std::time::Duration::from_millis(20);

impl Snapshotter {
    /// Starts the thread. With `scan_all` it also snapshots every running process, between
    /// requests (a request, a process about to OOM, goes first).
    pub fn spawn(cache: Arc<ModuleCache>, scan_all: bool) -> io::Result<Self> {
        Self::spawn_with(cache, scan_all, Box::new(|_| {}))
    }

    /// Like [`Snapshotter::spawn`], calling `hook` with every snapshot taken (on the snapshot
    /// thread), e.g. to tell the kernel where a Python interpreter's state is.
    pub fn spawn_with(cache: Arc<ModuleCache>, scan_all: bool, mut hook: OnSnapshot) -> io::Result<Self> {
        raise_nofile_limit();
        let (tx, rx) = mpsc::sync_channel::<Request>(MAX_PENDING);
        let c = cache.clone();
        thread::Builder::new()
            .name("oomtrace-snapshot".into())
            .spawn(move || snapshot_loop(&c, &rx, scan_all, &mut hook))?;
        Ok(Self { tx, cache })
    }

    /// The kernel asks for a snapshot (a `ProcSeen` record). Cheap and never blocking: the event
    /// loop calls it for each such record it takes from the ring buffer, so the request does not
    /// wait behind the pipeline's work — the process may be OOM-killed within milliseconds.
    pub fn request_seen(&self, seen: &ProcSeen) {
        self.request(seen.tgid, seen.mm, seen.reason == seen_reason::EXEC);
    }

    /// Asks for a snapshot of `tgid` (dropped, and counted, when the thread is behind).
    pub fn request(&self, tgid: u32, mm: u64, exec: bool) {
        if self.tx.try_send(Request { tgid, mm, exec }).is_err() {
            self.cache
                .stats
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .dropped_requests += 1;
        }
    }

    pub fn cache(&self) -> &Arc<ModuleCache> {
        &self.cache
    }
}

fn snapshot_loop(c: &ModuleCache, rx: &mpsc::Receiver<Request>, scan_all: bool, hook: &mut OnSnapshot) {
    use std::time::Instant;
    let mut scan: Vec<u32> = if scan_all {
        let me = std::process::id();
        fs::read_dir("/proc")
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                    .filter(|&p| p != me)
                    .collect()
            })
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let started = Instant::now();
    let mut again: VecDeque<(Instant, Request)> = VecDeque::new();
    // The newest image the kernel named for each process: a request for an older one (a shell
    // that exec'd the real program since) must not label a snapshot of the newer image.
    let mut latest: HashMap<u32, u64> = HashMap::new();
    let mut take = |tgid: u32, mm: Option<u64>, latest: &HashMap<u32, u64>| {
        if let Some(mm) = mm
            && latest.get(&tgid).is_some_and(|&l| l != mm)
        {
            return;
        }
        match c.snapshot(tgid, mm) {
            Ok(maps) => hook(&maps),
            Err(e) => log::debug!("snapshot of {tgid}: {e}"),
        }
    };
    loop {
        // Requests first, then due re-snapshots, then one process of the start-up scan.
        let wait = match (scan.is_empty(), again.front()) {
            (false, _) => std::time::Duration::ZERO,
            (true, Some((due, _))) => due.saturating_duration_since(Instant::now()),
            (true, None) => std::time::Duration::from_secs(3600),
        };
        match rx.recv_timeout(wait) {
            Ok(r) => {
                if latest.len() >= MAX_PROCS {
                    latest.clear();
                }
                latest.insert(r.tgid, r.mm);
                take(r.tgid, Some(r.mm), &latest);
                if r.exec && again.len() < MAX_PENDING {
                    again.push_back((Instant::now() + AFTER_EXEC, r));
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if let Some(&(due, r)) = again.front()
            && due <= Instant::now()
        {
            again.pop_front();
            take(r.tgid, Some(r.mm), &latest);
            continue;
        }
        if let Some(pid) = scan.pop() {
            take(pid, None, &latest);
            if scan.is_empty() {
                log::debug!(
                    "start-up snapshot of running processes took {:?}",
                    started.elapsed()
                );
            }
        }
    }
}

/// The held files need descriptors: raise the soft RLIMIT_NOFILE to the hard limit (often 1024
/// soft, far more hard), as long-running tracers do.
fn raise_nofile_limit() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: r is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0 && r.rlim_cur < r.rlim_max {
        r.rlim_cur = r.rlim_max;
        // SAFETY: as above; raising the soft limit up to the hard one needs no privilege.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) };
    }
}

/// Whether an ELF file is PIE/shared (`ET_DYN`): its load bias is not 0.
pub fn is_dyn(file: &ElfFile) -> bool {
    file.bytes()
        .and_then(|m| object::File::parse(&**m).ok().map(|o| o.kind()))
        == Some(object::ObjectKind::Dynamic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps_lines() {
        let l = MapsLine::parse(
            "55d0c0a1b000-55d0c0a2c000 r-xp 00002000 fe:01 1234567                    /usr/bin/cat (deleted)",
        )
        .unwrap();
        assert_eq!(
            (l.start, l.end, l.offset, l.inode),
            (0x55d0c0a1b000, 0x55d0c0a2c000, 0x2000, 1234567)
        );
        assert!(l.exec);
        assert_eq!(l.path, "/usr/bin/cat (deleted)");
        let anon = MapsLine::parse("7ffd1000-7ffd2000 rw-p 00000000 00:00 0 ").unwrap();
        assert!(!anon.exec && anon.path.is_empty());
        assert!(MapsLine::parse("garbage").is_none());
    }

    #[test]
    fn snapshots_itself_and_keeps_files_by_build_id() {
        let cache = ModuleCache::new();
        let me = std::process::id();
        let pm = cache.snapshot(me, Some(7)).unwrap();
        let ip = snapshots_itself_and_keeps_files_by_build_id as *const () as usize as u64;
        let m = pm.find(ip).expect("own text is mapped");
        let exe = std::env::current_exe().unwrap();
        assert_eq!(m.file.id, FileId::of(&fs::metadata(&exe).unwrap()));
        // The bias maps the ELF vaddr of the function to its address.
        let bias = m.file.bias(m.start, m.offset).unwrap();
        assert!(ip >= bias);
        if let Some(id) = m.file.kernel_build_id() {
            assert_eq!(cache.by_build_id(&id).unwrap().id, m.file.id);
        }
        // libc is there too, and one file per inode.
        let libc_ip = libc::getpid as *const () as usize as u64;
        assert!(pm.find(libc_ip).is_some());
        assert!(pm.matches(7, 0) && !pm.matches(8, 0));
        assert!(cache.stats().files >= 2);
        let again = cache.snapshot(me, None).unwrap();
        assert!(Arc::ptr_eq(&again.find(ip).unwrap().file, &m.file));
        assert!(is_dyn(&m.file), "test binaries are PIE");
    }

    #[test]
    fn start_time_tells_a_reused_tgid() {
        let cache = ModuleCache::new();
        let pm = cache.snapshot(std::process::id(), None).unwrap();
        let ns = pm.start_ticks * (1_000_000_000 / clock_ticks());
        assert!(pm.matches(1, ns) && pm.matches(1, 0));
        assert!(!pm.matches(1, ns + 5_000_000_000));
    }

    #[test]
    fn gone_process_has_no_snapshot() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let cache = ModuleCache::new();
        assert!(cache.snapshot(pid, None).is_err());
        assert!(cache.proc(pid).is_none());
        assert_eq!(cache.stats().failed, 1);
    }
}
