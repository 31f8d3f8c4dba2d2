//! `--pid` and `--cgroup`.

use crate::event::Cgroup;

/// `--pid` / `--cgroup`: what a user watching one workload wants to see. The pid filter also runs
/// in the kernel for signals and exits; everything is checked again here.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub pid: Option<u32>,
    pub cgroup: Option<String>,
}

impl Filter {
    pub fn active(&self) -> bool {
        self.pid.is_some() || self.cgroup.is_some()
    }

    fn in_cgroup(&self, c: Option<&Cgroup>) -> bool {
        let (Some(want), Some(path)) = (&self.cgroup, c.and_then(|c| c.path.as_deref())) else {
            return false;
        };
        want == "/"
            || path == want
            || path
                .strip_prefix(want.as_str())
                .is_some_and(|r| r.starts_with('/'))
    }

    /// True if the record concerns one of `pids` or one of `cgroups`.
    pub fn matches(&self, pids: &[Option<u32>], cgroups: &[Option<&Cgroup>]) -> bool {
        let pid_ok = self.pid.is_none_or(|p| pids.contains(&Some(p)));
        let cg_ok = self.cgroup.is_none() || cgroups.iter().any(|c| self.in_cgroup(*c));
        pid_ok && cg_ok
    }
}
