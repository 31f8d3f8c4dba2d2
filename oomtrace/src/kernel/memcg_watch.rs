//! OOMs that killed nothing. A memory cgroup can hit its limit and enter OOM handling without any
//! task being killed: cgroup v1 `oom_kill_disable 1` (the charging task sleeps until memory is
//! freed), a cgroup whose tasks are all unkillable, an allocation that gives up. No tracepoint
//! marks that moment (mem_cgroup_oom() in mm/memcontrol.c, v6.18, has none), so where fentry and
//! kprobes are not available we listen to the kernel's own cgroup notifications instead:
//!
//! - v1: an eventfd registered on each cgroup's `memory.oom_control` through
//!   `cgroup.event_control` fires when the cgroup enters OOM (memcg1_oom_prepare() and
//!   memcg1_oom_synchronize() call mem_cgroup_oom_notify(), mm/memcontrol-v1.c, v6.18). It also
//!   fires for the OOM cgroup's descendants and when a cgroup is removed: both are filtered out.
//! - v2: `memory.events.local` is modified (kernfs notification, seen through inotify) when its
//!   `oom` counter moves (memcg_memory_event(), include/linux/memcontrol.h, v6.18).
//!
//! New cgroups are found with inotify on every directory of the hierarchy. The watcher is a thread
//! of its own with one epoll set; events go to the main loop over a channel.

use std::{
    collections::HashMap,
    ffi::CString,
    fs,
    os::{fd::RawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    event::MemcgOomSource,
    kernel::{cgroup::Hierarchy, clock::Clock},
};

/// One notification that a memory cgroup entered OOM handling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemcgOom {
    pub ts_boot_ns: u64,
    pub id: u64,
    pub path: String,
    /// v1 `memory.oom_control`: `under_oom` / `oom_kill_disable` / `oom_kill`.
    pub under_oom: Option<bool>,
    pub oom_kill_disable: Option<bool>,
    /// The cgroup's own OOM kill counter when the notification was read.
    pub oom_kills: Option<u64>,
    /// v2 `memory.events.local` `oom`: how many OOM events this notification covers.
    pub oom_events: Option<u64>,
    pub source: MemcgOomSource,
}

/// Upper bound on watched cgroups: past it new cgroups are not watched (and a warning says so).
const MAX_CGROUPS: usize = 20_000;
/// A v1 notification for a cgroup whose ancestor was notified this recently belongs to the
/// ancestor's OOM (mem_cgroup_oom_notify() walks the OOM cgroup's whole subtree).
const SUBTREE_WINDOW: Duration = Duration::from_millis(50);

fn last_os_error(what: &str) -> anyhow::Error {
    anyhow::Error::new(std::io::Error::last_os_error()).context(what.to_owned())
}

fn parse_kv(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

struct Cg {
    id: u64,
    path: String,
    /// v2: last seen `oom` and `oom_kill` counters of memory.events.local.
    last: (u64, u64),
}

struct Watcher {
    h: Hierarchy,
    epfd: RawFd,
    inotify: RawFd,
    /// inotify watch descriptor → directory (IN_CREATE) or cgroup dir (v2 IN_MODIFY on events).
    dirs: HashMap<i32, PathBuf>,
    events_wd: HashMap<i32, PathBuf>,
    /// v1 eventfd → cgroup dir.
    eventfds: HashMap<RawFd, PathBuf>,
    cgroups: HashMap<PathBuf, Cg>,
    recent: HashMap<String, Instant>,
    warned_full: bool,
}

impl Watcher {
    fn rel_path(&self, dir: &Path) -> String {
        let rel = dir.strip_prefix(&self.h.mount).unwrap_or(dir);
        let root = if self.h.root == "/" {
            ""
        } else {
            self.h.root.trim_end_matches('/')
        };
        let rel = rel.to_string_lossy();
        if rel.is_empty() && root.is_empty() {
            "/".to_owned()
        } else {
            format!("{root}/{rel}")
        }
    }

    fn epoll_add(&self, fd: RawFd) -> Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: fd as u64,
        };
        // SAFETY: valid epoll fd and event struct.
        if unsafe { libc::epoll_ctl(self.epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
            return Err(last_os_error("epoll_ctl"));
        }
        Ok(())
    }

    fn add_watch(&self, path: &Path, mask: u32) -> Option<i32> {
        let c = CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
        // SAFETY: valid inotify fd and NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(self.inotify, c.as_ptr(), mask) };
        (wd >= 0).then_some(wd)
    }

    /// Watches `dir` and everything below it.
    fn add_tree(&mut self, dir: &Path) {
        let mut stack = vec![dir.to_owned()];
        while let Some(d) = stack.pop() {
            if self.cgroups.contains_key(&d) {
                continue;
            }
            if self.cgroups.len() >= MAX_CGROUPS {
                if !self.warned_full {
                    log::warn!(
                        "watching {MAX_CGROUPS} memory cgroups; OOMs that kill nothing go unseen in newer ones"
                    );
                    self.warned_full = true;
                }
                return;
            }
            self.add_one(&d);
            if let Ok(rd) = fs::read_dir(&d) {
                stack.extend(
                    rd.flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
        }
    }

    fn add_one(&mut self, dir: &Path) {
        let Ok(md) = fs::metadata(dir) else { return };
        if let Some(wd) = self.add_watch(dir, libc::IN_CREATE | libc::IN_ONLYDIR) {
            self.dirs.insert(wd, dir.to_owned());
        }
        let mut cg = Cg {
            id: md.ino(),
            path: self.rel_path(dir),
            last: (0, 0),
        };
        if self.h.version == 1 {
            // The root cgroup has no memory.oom_control to register on.
            if let Err(e) = self.register_v1(dir) {
                log::debug!("no OOM notifications for {}: {e:#}", cg.path);
            }
        } else {
            let events = dir.join("memory.events.local");
            if let Ok(text) = fs::read_to_string(&events) {
                cg.last = (
                    parse_kv(&text, "oom").unwrap_or(0),
                    parse_kv(&text, "oom_kill").unwrap_or(0),
                );
                if let Some(wd) = self.add_watch(&events, libc::IN_MODIFY) {
                    self.events_wd.insert(wd, dir.to_owned());
                }
            }
        }
        self.cgroups.insert(dir.to_owned(), cg);
    }

    fn register_v1(&mut self, dir: &Path) -> Result<()> {
        let ctl = fs::File::open(dir.join("memory.oom_control")).context("open memory.oom_control")?;
        // SAFETY: plain syscall.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if efd < 0 {
            return Err(last_os_error("eventfd"));
        }
        use std::os::fd::AsRawFd;
        let line = format!("{} {}", efd, ctl.as_raw_fd());
        if let Err(e) = fs::write(dir.join("cgroup.event_control"), line) {
            // SAFETY: efd is ours.
            unsafe { libc::close(efd) };
            return Err(anyhow::Error::new(e).context("register on cgroup.event_control"));
        }
        self.epoll_add(efd)?;
        self.eventfds.insert(efd, dir.to_owned());
        Ok(())
    }

    fn forget(&mut self, dir: &Path) {
        self.cgroups.remove(dir);
        let efds: Vec<RawFd> = self
            .eventfds
            .iter()
            .filter(|(_, d)| *d == dir)
            .map(|(f, _)| *f)
            .collect();
        for fd in efds {
            self.eventfds.remove(&fd);
            // SAFETY: fd is ours; closing it also removes it from the epoll set.
            unsafe { libc::close(fd) };
        }
    }

    /// A v1 eventfd fired for `dir`.
    fn on_v1(&mut self, dir: &Path, out: &mut Vec<MemcgOom>) {
        let Ok(text) = fs::read_to_string(dir.join("memory.oom_control")) else {
            // The cgroup was removed: the kernel signals registered eventfds on removal.
            self.forget(dir);
            return;
        };
        let Some(cg) = self.cgroups.get(dir) else { return };
        let now = Instant::now();
        let inherited = self.recent.iter().any(|(p, t)| {
            now.duration_since(*t) < SUBTREE_WINDOW
                && cg
                    .path
                    .strip_prefix(p.as_str())
                    .is_some_and(|r| r.starts_with('/'))
        });
        self.recent.retain(|_, t| now.duration_since(*t) < SUBTREE_WINDOW);
        self.recent.insert(cg.path.clone(), now);
        if inherited {
            return;
        }
        out.push(MemcgOom {
            ts_boot_ns: Clock::now_boot_ns(),
            id: cg.id,
            path: cg.path.clone(),
            under_oom: parse_kv(&text, "under_oom").map(|v| v != 0),
            oom_kill_disable: parse_kv(&text, "oom_kill_disable").map(|v| v != 0),
            oom_kills: parse_kv(&text, "oom_kill"),
            oom_events: None,
            source: MemcgOomSource::CgroupV1OomControl,
        });
    }

    /// v2: memory.events.local of `dir` changed.
    fn on_v2(&mut self, dir: &Path, out: &mut Vec<MemcgOom>) {
        let Ok(text) = fs::read_to_string(dir.join("memory.events.local")) else {
            self.forget(dir);
            return;
        };
        let Some(cg) = self.cgroups.get_mut(dir) else {
            return;
        };
        let oom = parse_kv(&text, "oom").unwrap_or(0);
        let kills = parse_kv(&text, "oom_kill").unwrap_or(0);
        let (last_oom, _) = cg.last;
        cg.last = (oom, kills);
        if oom > last_oom {
            out.push(MemcgOom {
                ts_boot_ns: Clock::now_boot_ns(),
                id: cg.id,
                path: cg.path.clone(),
                under_oom: None,
                oom_kill_disable: None,
                oom_kills: Some(kills),
                oom_events: Some(oom - last_oom),
                source: MemcgOomSource::CgroupV2MemoryEvents,
            });
        }
    }

    fn on_inotify(&mut self, out: &mut Vec<MemcgOom>) {
        let mut buf = [0u8; 8192];
        loop {
            // SAFETY: buf is valid for its length.
            let n = unsafe { libc::read(self.inotify, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return;
            }
            let mut off = 0usize;
            let hdr = std::mem::size_of::<libc::inotify_event>();
            while off + hdr <= n as usize {
                // SAFETY: the kernel wrote whole inotify_event records; read_unaligned copes with alignment.
                let ev: libc::inotify_event = unsafe {
                    buf.as_ptr()
                        .add(off)
                        .cast::<libc::inotify_event>()
                        .read_unaligned()
                };
                let name_bytes = &buf[off + hdr..(off + hdr + ev.len as usize).min(n as usize)];
                let name_end = name_bytes
                    .iter()
                    .position(|&b| b == 0)
                    .unwrap_or(name_bytes.len());
                let name = String::from_utf8_lossy(&name_bytes[..name_end]).into_owned();
                off += hdr + ev.len as usize;
                if ev.mask & libc::IN_CREATE != 0 {
                    if let Some(parent) = self.dirs.get(&ev.wd).cloned() {
                        self.add_tree(&parent.join(name));
                    }
                } else if ev.mask & libc::IN_MODIFY != 0 {
                    if let Some(dir) = self.events_wd.get(&ev.wd).cloned() {
                        self.on_v2(&dir, out);
                    }
                } else if ev.mask & libc::IN_IGNORED != 0 {
                    if let Some(dir) = self.dirs.remove(&ev.wd) {
                        self.forget(&dir);
                    }
                    self.events_wd.remove(&ev.wd);
                }
            }
        }
    }

    fn run(mut self, mut deliver: impl FnMut(MemcgOom) -> bool) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
        loop {
            // SAFETY: valid epoll fd and buffer.
            let n = unsafe { libc::epoll_wait(self.epfd, events.as_mut_ptr(), events.len() as i32, -1) };
            if n < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                log::warn!("memcg OOM watcher stopped: {}", std::io::Error::last_os_error());
                return;
            }
            let mut out = Vec::new();
            // Parents before children, so the subtree filter sees the OOM cgroup first.
            let mut ready: Vec<RawFd> = events[..n as usize].iter().map(|e| e.u64 as RawFd).collect();
            ready.sort_by_key(|fd| self.eventfds.get(fd).map_or(0, |d| d.components().count()));
            for fd in ready {
                if fd == self.inotify {
                    self.on_inotify(&mut out);
                } else if let Some(dir) = self.eventfds.get(&fd).cloned() {
                    let mut v = [0u8; 8];
                    // SAFETY: reading the 8-byte eventfd counter into a valid buffer.
                    unsafe { libc::read(fd, v.as_mut_ptr().cast(), 8) };
                    self.on_v1(&dir, &mut out);
                }
            }
            for ev in out {
                if !deliver(ev) {
                    return;
                }
            }
        }
    }
}

/// The notifications a watcher of `h` reads.
pub fn source(h: &Hierarchy) -> MemcgOomSource {
    if h.version == 1 {
        MemcgOomSource::CgroupV1OomControl
    } else {
        MemcgOomSource::CgroupV2MemoryEvents
    }
}

/// Starts watching the memory hierarchy on a thread of its own. `deliver` takes each notification
/// and returns false once nobody takes them any more (the watcher then ends).
pub fn spawn(h: Hierarchy, deliver: impl FnMut(MemcgOom) -> bool + Send + 'static) -> Result<()> {
    // SAFETY: plain syscalls.
    let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epfd < 0 {
        return Err(last_os_error("epoll_create1"));
    }
    // SAFETY: plain syscall.
    let inotify = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
    if inotify < 0 {
        return Err(last_os_error("inotify_init1"));
    }
    let mount = h.mount.clone();
    if !mount.is_dir() {
        bail!("{} is not a directory", mount.display());
    }
    let mut w = Watcher {
        h,
        epfd,
        inotify,
        dirs: HashMap::new(),
        events_wd: HashMap::new(),
        eventfds: HashMap::new(),
        cgroups: HashMap::new(),
        recent: HashMap::new(),
        warned_full: false,
    };
    w.epoll_add(inotify)?;
    w.add_tree(&mount);
    log::debug!(
        "watching {} memory cgroups for OOM notifications",
        w.cgroups.len()
    );
    thread::Builder::new()
        .name("memcg-oom".into())
        .spawn(move || w.run(deliver))
        .context("failed to start the memcg OOM watcher")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_oom_control_and_events() {
        let v1 = "oom_kill_disable 1\nunder_oom 1\noom_kill 3\n";
        assert_eq!(parse_kv(v1, "oom_kill_disable"), Some(1));
        assert_eq!(parse_kv(v1, "under_oom"), Some(1));
        assert_eq!(parse_kv(v1, "oom_kill"), Some(3));
        let v2 = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(parse_kv(v2, "oom"), Some(2));
        assert_eq!(parse_kv(v2, "oom_kill"), Some(1));
        assert_eq!(parse_kv(v2, "oom_group"), None);
    }
}
