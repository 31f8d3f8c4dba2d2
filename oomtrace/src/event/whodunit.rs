//! Who killed it: `signal`, `exit`, `oom_reap` and `memcg_oom`.

use serde::Serialize;

use super::{Cgroup, Constraint, MemcgOomSource, wire_enum};

/// A process, as a signal sender or target, or as the one that exited.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Process {
    pub pid: Option<u32>,
    pub tid: u32,
    pub comm: String,
    pub cgroup: Option<Cgroup>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sender {
    #[serde(flatten)]
    pub process: Process,
    pub uid: u32,
    /// Basename of the executable, read in the kernel at send time (null for kernel threads).
    pub exe: Option<String>,
    /// Full path and command line, read from /proc when the record arrived (null if the sender had exited).
    pub exe_path: Option<String>,
    pub cmdline: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SignalEv {
    pub sig: i32,
    pub signal: String,
    pub sender: Sender,
    pub target: Process,
    /// `si_code` name: SI_USER, SI_KERNEL, SI_QUEUE, SI_TKILL, ... (or the number).
    pub code: String,
    pub code_value: i32,
    /// true: sent to the whole process; false: to one thread (tgkill).
    pub group: bool,
    /// delivered | ignored | already_pending | overflow_fail | lose_info
    pub result: SignalResult,
    /// The OOM kill this signal belongs to (the OOM killer's SIGKILL to the victim or to a process
    /// sharing its memory), or null.
    pub kill_id: Option<u64>,
}

/// Why an OOM-killed process died: the kill it belongs to.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OomCause {
    pub kill_id: u64,
    /// `seq` of the oom_kill record (null when the process only shared the victim's memory).
    pub oom_kill_seq: Option<u64>,
    pub oom_memcg: Option<Cgroup>,
    pub constraint: Constraint,
    pub trigger: Option<Process>,
    /// true when this process was killed because it shared the victim's mm (no oom_kill record of its own).
    pub shared_mm: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExitEv {
    pub process: Process,
    pub exit_signal: i32,
    pub signal: String,
    pub core_dumped: bool,
    /// As a shell prints it: 128 + the signal (137 for SIGKILL).
    pub exit_code: i32,
    pub runtime_ns: Option<u64>,
    /// kernel_oom | process | kernel_other | unknown
    pub verdict: Verdict,
    pub oom: Option<OomCause>,
    /// For `process` and `kernel_other`: who generated the fatal signal.
    pub killer: Option<Sender>,
    pub signal_code: Option<String>,
    /// `seq` of the signal record the verdict rests on.
    pub signal_seq: Option<u64>,
    /// Why the verdict is `unknown` or `kernel_other`, in words.
    pub reason: Option<String>,
}

/// A memory cgroup entered OOM handling (with or without killing anything).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MemcgOomEv {
    pub memcg: Cgroup,
    /// `cgroup_v1_oom_control` or `cgroup_v2_memory_events`: which kernel notification said so.
    pub source: MemcgOomSource,
    /// v1: the cgroup is in OOM right now (tasks wait, e.g. with oom_kill_disable).
    pub under_oom: Option<bool>,
    /// v1: the OOM killer is disabled for this cgroup: OOM means waiting, not killing.
    pub oom_kill_disable: Option<bool>,
    /// The cgroup's own count of OOM kills when the notification was read.
    pub oom_kills: Option<u64>,
    /// v2: OOM events this notification covers.
    pub oom_events: Option<u64>,
}

/// The OOM reaper's progress on a victim.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OomReap {
    /// The victim's thread id, as the kernel's tracepoint gives it.
    pub tid: u32,
    /// The victim's pid (tgid) and comm, when its `oom_kill` record was seen.
    pub pid: Option<u32>,
    pub comm: Option<String>,
    /// `wake` (queued for reaping), `start`, `finish` (anonymous memory freed), `skip` (could not reap).
    pub phase: ReapPhase,
    pub kill_id: Option<u64>,
}

wire_enum! {
    /// What the kernel did with a generated signal (`enum trace_signal_deliver_result`,
    /// include/trace/events/signal.h, v6.18).
    pub enum SignalResult {
        Delivered = "delivered",
        Ignored = "ignored",
        AlreadyPending = "already_pending",
        OverflowFail = "overflow_fail",
        LoseInfo = "lose_info",
    }
}

wire_enum! {
    /// Why a process died of SIGKILL.
    pub enum Verdict {
        /// The OOM killer.
        KernelOom = "kernel_oom",
        /// Another process sent it.
        Process = "process",
        /// The kernel, not for an OOM.
        KernelOther = "kernel_other",
        Unknown = "unknown",
    }
}

wire_enum! {
    /// The OOM reaper's step.
    pub enum ReapPhase {
        Wake = "wake",
        Start = "start",
        Finish = "finish",
        Skip = "skip",
    }
}
