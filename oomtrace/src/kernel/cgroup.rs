//! Memory cgroups: which hierarchy carries the memory controller (v1 or v2), and turning the
//! kernel's cgroup id (the cgroup directory's inode number) into the path that /proc/<pid>/cgroup
//! and the kernel's OOM report print, relative to the hierarchy root.

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::MetadataExt,
    path::PathBuf,
    time::{Duration, Instant},
};

use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Hierarchy {
    /// 1 or 2.
    pub version: u8,
    /// Where the memory hierarchy is mounted, e.g. /sys/fs/cgroup/memory or /sys/fs/cgroup.
    pub mount: PathBuf,
    /// The mount's root inside the hierarchy (not "/" inside a cgroup namespace).
    pub root: String,
}

/// Finds the hierarchy with the memory controller in /proc/self/mountinfo text.
pub fn find_memory_hierarchy(mountinfo: &str) -> Option<Hierarchy> {
    let mut v2 = None;
    for line in mountinfo.lines() {
        // 36 25 0:31 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 5 || post.len() < 3 {
            continue;
        }
        let (root, mount) = (unescape(pre[3]), PathBuf::from(unescape(pre[4])));
        match post[0] {
            "cgroup" if post[2].split(',').any(|o| o == "memory") => {
                return Some(Hierarchy {
                    version: 1,
                    mount,
                    root,
                });
            }
            "cgroup2" => {
                let controllers = fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default();
                if controllers.split_whitespace().any(|c| c == "memory") && v2.is_none() {
                    v2 = Some(Hierarchy {
                        version: 2,
                        mount,
                        root,
                    });
                }
            }
            _ => {}
        }
    }
    v2
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn detect() -> Option<Hierarchy> {
    find_memory_hierarchy(&fs::read_to_string("/proc/self/mountinfo").ok()?)
}

/// The memory-cgroup path of a process from /proc/<pid>/cgroup text.
pub fn path_from_proc(text: &str, version: u8) -> Option<String> {
    text.lines().find_map(|l| {
        let mut it = l.splitn(3, ':');
        let (_id, ctrls, path) = (it.next()?, it.next()?, it.next()?);
        let hit = match version {
            1 => ctrls.split(',').any(|c| c == "memory"),
            _ => ctrls.is_empty(),
        };
        hit.then(|| path.to_owned())
    })
}

/// Cache from cgroup id to path, filled from /proc/<pid>/cgroup hints and by walking the hierarchy.
#[derive(Debug)]
pub struct Resolver {
    h: Option<Hierarchy>,
    cache: HashMap<u64, String>,
    /// Ids a walk did not find, and when: not walked for again within [`WALK_INTERVAL`].
    missed: HashMap<u64, Instant>,
}

/// Don't re-walk a large hierarchy more often than this for an id that is not there any more.
/// A new id is walked for at once: a container's cgroup can be created and OOM-killed within
/// milliseconds (a pod whose process allocates at start), and its kill must still be named.
const WALK_INTERVAL: Duration = Duration::from_millis(200);
/// Bound on the ids remembered as missed.
const MISSED_MAX: usize = 4096;

impl Resolver {
    pub fn version(&self) -> Option<u8> {
        self.h.as_ref().map(|h| h.version)
    }

    pub fn new(h: Option<Hierarchy>) -> Self {
        Self {
            h,
            cache: HashMap::new(),
            missed: HashMap::new(),
        }
    }

    /// Learns the cgroup of a live process; returns its id and path.
    pub fn hint_pid(&mut self, pid: u32) -> Option<(u64, String)> {
        let h = self.h.as_ref()?;
        let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let path = path_from_proc(&text, h.version)?;
        let dir = self.dir_of(&path)?;
        let ino = fs::metadata(dir).ok()?.ino();
        self.cache.insert(ino, path.clone());
        Some((ino, path))
    }

    /// The cgroupfs directory of a path relative to the hierarchy root.
    pub fn dir_of(&self, path: &str) -> Option<PathBuf> {
        let h = self.h.as_ref()?;
        let root = h.root.trim_end_matches('/');
        let rel = path.strip_prefix(root).unwrap_or(path);
        Some(h.mount.join(rel.trim_start_matches('/')))
    }

    /// The path of cgroup `id`, or None if it is not (or no longer) in the hierarchy.
    pub fn path(&mut self, id: u64) -> Option<String> {
        if id == 0 {
            return None;
        }
        if let Some(p) = self.cache.get(&id) {
            return Some(p.clone());
        }
        if self.missed.get(&id).is_some_and(|t| t.elapsed() < WALK_INTERVAL) {
            return None;
        }
        self.walk();
        let found = self.cache.get(&id).cloned();
        if found.is_none() {
            if self.missed.len() >= MISSED_MAX {
                self.missed.clear();
            }
            self.missed.insert(id, Instant::now());
        }
        found
    }

    /// Rebuilds the cache from the whole hierarchy.
    pub fn walk(&mut self) {
        let Some(h) = self.h.clone() else { return };
        let root = if h.root == "/" {
            String::new()
        } else {
            h.root.trim_end_matches('/').to_owned()
        };
        let mut stack = vec![(h.mount.clone(), root)];
        while let Some((dir, rel)) = stack.pop() {
            if let Ok(md) = fs::metadata(&dir) {
                let path = if rel.is_empty() {
                    "/".to_owned()
                } else {
                    rel.clone()
                };
                self.cache.insert(md.ino(), path);
            }
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let name = e.file_name().to_string_lossy().into_owned();
                    stack.push((e.path(), format!("{rel}/{name}")));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_v1_memory_hierarchy() {
        let mi = "25 30 0:22 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n\
                  36 25 0:31 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory\n\
                  37 25 0:32 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu,cpuacct\n";
        let h = find_memory_hierarchy(mi).unwrap();
        assert_eq!(h.version, 1);
        assert_eq!(h.mount, PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(h.root, "/");
    }

    #[test]
    fn escaped_mount_points() {
        let mi = "36 25 0:31 /a\\040b /mnt/my\\040cg rw - cgroup cgroup rw,memory\n";
        let h = find_memory_hierarchy(mi).unwrap();
        assert_eq!(h.mount, PathBuf::from("/mnt/my cg"));
        assert_eq!(h.root, "/a b");
    }

    #[test]
    fn proc_cgroup_lines() {
        let v1 = "12:memory:/user.slice/oomdemo\n11:cpu,cpuacct:/x\n0::/unified\n";
        assert_eq!(path_from_proc(v1, 1).as_deref(), Some("/user.slice/oomdemo"));
        assert_eq!(path_from_proc(v1, 2).as_deref(), Some("/unified"));
        let v2 = "0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-ab:cd.scope\n";
        assert_eq!(
            path_from_proc(v2, 2).as_deref(),
            Some("/kubepods.slice/kubepods-pod1.slice/cri-containerd-ab:cd.scope")
        );
        assert_eq!(path_from_proc("3:cpu:/x\n", 1), None);
    }

    #[test]
    fn resolves_ids_by_walking_a_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let weird = "we ird\n\"name\"";
        fs::create_dir_all(tmp.path().join("a/b")).unwrap();
        fs::create_dir_all(tmp.path().join(weird)).unwrap();
        let h = Hierarchy {
            version: 2,
            mount: tmp.path().to_owned(),
            root: "/".into(),
        };
        let mut r = Resolver::new(Some(h));
        let id = |p: &str| fs::metadata(tmp.path().join(p)).unwrap().ino();
        assert_eq!(r.path(id("a/b")).as_deref(), Some("/a/b"));
        assert_eq!(r.path(id(weird)).as_deref(), Some(format!("/{weird}").as_str()));
        assert_eq!(r.path(id(".")).as_deref(), Some("/"));
        assert_eq!(r.path(0), None);
        assert_eq!(r.path(u64::MAX), None); // and does not re-walk right away
        // A cgroup made right after a walk is found at once (not 200 ms later).
        fs::create_dir_all(tmp.path().join("a/new")).unwrap();
        assert_eq!(r.path(id("a/new")).as_deref(), Some("/a/new"));
    }
}
