//! The pipeline: turns a decoded kernel record into a public event (see [`crate::event`]) —
//! names cgroups, symbolizes stacks, reads the memory breakdown, infers what the tracepoint
//! modes cannot read, groups memory.oom.group kills and gives each SIGKILL death its verdict.

pub mod kube;
pub mod memstat;
pub mod oom_kill;
pub mod ustack;
pub mod whodunit;
