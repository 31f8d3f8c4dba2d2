//! Names for the cgroup ids the kernel records carry, and the memory of a memcg read from
//! cgroupfs.

use oomtrace_common::MemcgLevel;

use crate::{
    enrich::memstat,
    event::{Cgroup, Memory},
    kernel::cgroup::Resolver,
};

/// The cgroup hierarchy as the pipeline sees it: id -> path (cached, re-walked on a miss).
pub struct Cgroups {
    resolver: Resolver,
}

impl Cgroups {
    pub fn new(resolver: Resolver) -> Self {
        Self { resolver }
    }

    /// The cgroup of id `id` (0: none), named by a walk of the hierarchy or, for a cgroup created
    /// since the last walk, by `/proc/<pid_hint>/cgroup`.
    pub fn name(&mut self, id: u64, pid_hint: u32) -> Option<Cgroup> {
        if id == 0 {
            return None;
        }
        let mut path = self.resolver.path(id);
        if path.is_none() && pid_hint != 0 {
            path = self
                .resolver
                .hint_pid(pid_hint)
                .filter(|(i, _)| *i == id)
                .map(|(_, p)| p);
        }
        Some(Cgroup { id, path })
    }

    pub fn path(&mut self, id: u64) -> Option<String> {
        self.resolver.path(id)
    }

    /// The memory cgroup of a live process, from procfs.
    pub fn hint_pid(&mut self, pid: u32) -> Option<(u64, String)> {
        self.resolver.hint_pid(pid)
    }

    /// The breakdown of the memcg at `level`, read now (the victim is releasing memory already).
    pub fn memory(&mut self, level: &MemcgLevel, page: u64, kill_ns: u64) -> Memory {
        let version = self.resolver.version().unwrap_or(2);
        let dir = self
            .resolver
            .path(level.id)
            .and_then(|p| self.resolver.dir_of(&p));
        memstat::memory(level, page, version, dir.as_deref(), kill_ns)
    }
}
