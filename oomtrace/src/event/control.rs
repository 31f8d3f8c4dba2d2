//! The lines about oomtrace itself: `start`, `lost`, `stop`.

use serde::Serialize;

use super::{Attach, MemcgOomSource, wire_enum};

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Start {
    pub version: &'static str,
    pub kernel: String,
    /// Hook → how it is attached (`fentry`, `kprobe`, `tp_btf`, `tracepoint`), or null when not attached.
    pub attach: AttachReport,
    pub cgroup: CgroupReport,
    pub btf: bool,
    pub ring_buffer_bytes: u32,
    pub pid: u32,
    /// What this run reports and what it cannot, feature by feature (the same list as
    /// `oomtrace check` prints).
    pub features: Vec<Feature>,
}

/// One capability of oomtrace on this kernel: on, or off with why and what would turn it on.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Feature {
    pub name: FeatureName,
    pub on: bool,
    /// Why it is off (null when on).
    pub reason: Option<String>,
    /// What would turn it on (null when on, or when nothing can).
    pub fix: Option<String>,
}

wire_enum! {
    /// The capabilities `start.features` and `oomtrace check` report.
    pub enum FeatureName {
        /// `oom_kill` records (always on when oomtrace runs).
        OomKill = "oom_kill",
        /// `struct oom_control` read exactly (fentry/kprobe): oom_memcg, constraint, totalpages,
        /// points, gfp_mask and order without inference.
        ExactOomControl = "exact_oom_control",
        /// `allocation.gfp_mask` and `order` (exactly, or from the trigger's last reclaim).
        AllocationGfpOrder = "allocation_gfp_order",
        /// `signal` records for every SIGKILL, and telling a kill from a mark without one.
        Signals = "signals",
        /// `exit` records with a verdict per SIGKILL death.
        ExitVerdicts = "exit_verdicts",
        /// `memcg_oom` records: OOMs that kill nothing.
        MemcgOom = "memcg_oom",
        /// `oom_reap` records.
        OomReaper = "oom_reaper",
        /// `allocation.user_stack`.
        UserStacks = "user_stacks",
        /// Kernel stacks with function names (kallsyms).
        KernelSymbols = "kernel_symbols",
        /// Victims' and triggers' cgroups named by id (needs BTF).
        CgroupIds = "cgroup_ids",
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AttachReport {
    /// The mode records are labelled with: fentry | kprobe | tp_btf | tracepoint.
    pub mode: Attach,
    pub oom_kill_process: Option<Attach>,
    pub mark_victim: Attach,
    pub reclaim_begin: Option<Attach>,
    pub signal_generate: Option<Attach>,
    pub process_exit: Option<Attach>,
    /// How OOMs that kill nothing are seen: `cgroup_v1_oom_control`, `cgroup_v2_memory_events`, or null.
    pub memcg_oom: Option<MemcgOomSource>,
    /// How the OOM reaper tracepoints are hooked (`tracepoint`), or null.
    pub oom_reaper: Option<Attach>,
    /// `tracepoint` when task:task_newtask keeps the tid → pid map the classic tracepoints need.
    pub task_newtask: Option<Attach>,
    /// Why each better mode was not used.
    pub fallbacks: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CgroupReport {
    pub version: Option<u8>,
    pub memory_controller: bool,
    pub mount: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Lost {
    /// `ring_buffer_full` (the kernel could not reserve room), `decode_error`, or
    /// `output_backpressure` (the output did not keep up; `count` is the seq hole before this line).
    pub reason: LostReason,
    /// Records lost since the previous `lost` line of this reason.
    pub count: u64,
    /// Records lost for this reason since start.
    pub total: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stop {
    pub reason: StopReason,
    pub oom_kills: u64,
    pub lost: u64,
}

wire_enum! {
    /// Why records were lost.
    pub enum LostReason {
        /// The kernel could not reserve room in the ring buffer.
        RingBufferFull = "ring_buffer_full",
        /// A record from the kernel could not be decoded.
        DecodeError = "decode_error",
        /// The pipeline thread did not keep up with the kernel: records (or memcg OOM
        /// notifications) found its queue full.
        PipelineBackpressure = "pipeline_backpressure",
        /// The output did not keep up; `count` is the seq hole before the line.
        OutputBackpressure = "output_backpressure",
    }
}

wire_enum! {
    /// Why oomtrace stopped.
    pub enum StopReason {
        /// SIGINT or SIGTERM.
        Signal = "signal",
    }
}
