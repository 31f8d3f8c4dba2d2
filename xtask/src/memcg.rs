//! Memory cgroups for the benchmark: made under our own memory cgroup, removed when dropped.

use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    thread,
    time::Duration,
};

use anyhow::{Context, Result};

/// The hierarchy that has the memory controller.
#[derive(Clone, Debug)]
pub struct Hierarchy {
    /// 1 or 2.
    pub version: u8,
    pub mount: PathBuf,
}

impl Hierarchy {
    /// Finds the memory controller: a v1 `cgroup` mount with the `memory` option wins, else a
    /// `cgroup2` mount that offers `memory`.
    pub fn detect() -> Option<Self> {
        let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
        let mut v2 = None;
        for line in text.lines() {
            let Some((mount_part, fs_part)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mount) = mount_part.split(' ').nth(4) else {
                continue;
            };
            let mut fields = fs_part.split(' ');
            let (fstype, options) = (fields.next(), fields.nth(1).unwrap_or(""));
            match fstype {
                Some("cgroup") if options.split(',').any(|o| o == "memory") => {
                    return Some(Self {
                        version: 1,
                        mount: mount.into(),
                    });
                }
                Some("cgroup2") if v2.is_none() && offers_memory(Path::new(mount)) => {
                    v2 = Some(Self {
                        version: 2,
                        mount: mount.into(),
                    });
                }
                _ => {}
            }
        }
        v2
    }

    /// Our own memory cgroup, as a directory under the mount.
    pub fn own_dir(&self) -> Result<PathBuf> {
        let text = fs::read_to_string("/proc/self/cgroup").context("failed to read /proc/self/cgroup")?;
        let path = text
            .lines()
            .find_map(|l| {
                let mut it = l.splitn(3, ':');
                let (_, controllers, path) = (it.next()?, it.next()?, it.next()?);
                let ours = if self.version == 1 {
                    controllers.split(',').any(|c| c == "memory")
                } else {
                    controllers.is_empty()
                };
                ours.then_some(path)
            })
            .context("failed to find our memory cgroup in /proc/self/cgroup")?;
        Ok(self.mount.join(path.trim_start_matches('/')))
    }
}

fn offers_memory(mount: &Path) -> bool {
    fs::read_to_string(mount.join("cgroup.controllers"))
        .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"))
}

/// A memory cgroup with a limit; its tasks are killed and the directory removed on drop.
pub struct BenchCgroup {
    dir: PathBuf,
    id: u64,
}

impl BenchCgroup {
    /// Creates `parent/name` limited to `limit` bytes (v2: and no swap).
    pub fn create(hierarchy: &Hierarchy, parent: &Path, name: &str, limit: u64) -> Result<Self> {
        let dir = parent.join(name);
        fs::create_dir(&dir).with_context(|| format!("failed to create cgroup {}", dir.display()))?;
        // From here on, dropping `cg` removes the directory again, whatever fails next.
        let mut cg = Self { dir, id: 0 };
        cg.id = fs::metadata(&cg.dir)
            .with_context(|| format!("failed to stat {}", cg.dir.display()))?
            .ino();
        if hierarchy.version == 1 {
            cg.write("memory.limit_in_bytes", &limit.to_string())?;
        } else {
            cg.write("memory.max", &limit.to_string())?;
            cg.write("memory.swap.max", "0")?;
        }
        Ok(cg)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cgroup id the kernel reports (the cgroupfs inode number).
    pub fn id(&self) -> u64 {
        self.id
    }

    fn write(&self, file: &str, value: &str) -> Result<()> {
        let path = self.dir.join(file);
        fs::write(&path, value).with_context(|| format!("failed to write {value} to {}", path.display()))
    }

    fn procs(&self) -> Vec<i32> {
        fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for BenchCgroup {
    fn drop(&mut self) {
        for _ in 0..100 {
            let procs = self.procs();
            if procs.is_empty() {
                break;
            }
            for pid in procs {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            thread::sleep(Duration::from_millis(20));
        }
        for _ in 0..100 {
            if fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "warning: failed to remove cgroup {} (remove it by hand with rmdir)",
            self.dir.display()
        );
    }
}
