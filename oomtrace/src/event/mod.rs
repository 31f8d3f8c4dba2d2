//! The JSON Lines wire types: the public contract documented in docs/events.md and
//! docs/events.schema.json. Fields are only ever added, never renamed or removed.

use serde::Serialize;

/// Bumped only if a field ever changes meaning (it never should; additions keep the version).
pub const SCHEMA_VERSION: u32 = 1;

/// Every line: the envelope fields, then the type's own fields.
#[derive(Debug, Serialize)]
pub struct Line<'a, T: Serialize> {
    pub schema: u32,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub seq: u64,
    pub time: String,
    pub boot_ns: u64,
    pub host: &'a str,
    #[serde(flatten)]
    pub body: &'a T,
}

#[derive(Debug, Serialize)]
pub struct Start {
    pub version: &'static str,
    pub kernel: String,
    /// Hook → how it is attached (`fentry`, `kprobe`, `tp_btf`, `tracepoint`), or null when not attached.
    pub attach: AttachReport,
    pub cgroup: CgroupReport,
    pub btf: bool,
    pub ring_buffer_bytes: u32,
    pub pid: u32,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct AttachReport {
    /// The mode records are labelled with: fentry | kprobe | tp_btf | tracepoint.
    pub mode: &'static str,
    pub oom_kill_process: Option<&'static str>,
    pub mark_victim: &'static str,
    pub reclaim_begin: Option<&'static str>,
    pub signal_generate: Option<&'static str>,
    pub process_exit: Option<&'static str>,
    /// How OOMs that kill nothing are seen: `cgroup_v1_oom_control`, `cgroup_v2_memory_events`, or null.
    pub memcg_oom: Option<&'static str>,
    /// How the OOM reaper tracepoints are hooked (`tracepoint`), or null.
    pub oom_reaper: Option<&'static str>,
    /// `tracepoint` when task:task_newtask keeps the tid → pid map the classic tracepoints need.
    pub task_newtask: Option<&'static str>,
    /// Why each better mode was not used.
    pub fallbacks: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct CgroupReport {
    pub version: Option<u8>,
    pub memory_controller: bool,
    pub mount: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cgroup {
    pub id: u64,
    pub path: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Victim {
    pub pid: Option<u32>,
    pub tid: u32,
    pub comm: String,
    pub uid: Option<u32>,
    pub oom_score_adj: Option<i32>,
    pub points: Option<i64>,
    pub total_vm_kb: Option<u64>,
    pub anon_rss_kb: Option<u64>,
    pub file_rss_kb: Option<u64>,
    pub shmem_rss_kb: Option<u64>,
    pub pgtables_kb: Option<u64>,
    pub swap_kb: Option<u64>,
    pub hiwater_rss_kb: Option<u64>,
    pub cgroup: Option<Cgroup>,
    /// The victim's memory in one object (the flat `*_kb` fields above, plus `anon_thp_kb`).
    pub mm: Option<VictimMm>,
    /// The victim's cgroup memory, when it is not the `oom_memcg` (e.g. a child of it).
    pub cgroup_memory: Option<crate::enrich::memstat::Memory>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VictimMm {
    pub total_vm_kb: u64,
    pub hiwater_rss_kb: Option<u64>,
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    pub shmem_rss_kb: u64,
    pub swap_kb: Option<u64>,
    pub pgtables_kb: u64,
    /// Transparent huge pages mapped (/proc/<pid>/smaps_rollup AnonHugePages, read on arrival;
    /// null once the victim has released its memory).
    pub anon_thp_kb: Option<u64>,
    /// total_vm / (anon + file + shmem rss): far above 1 means reserved but untouched memory.
    pub overcommit_ratio: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Trigger {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub cgroup: Option<Cgroup>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OomMemcg {
    pub id: u64,
    pub path: Option<String>,
    /// `oom_control` (read from the kernel's struct) or `inferred` (the trigger's nearest ancestor at its limit).
    pub source: &'static str,
    pub limit_bytes: Option<u64>,
    pub usage_bytes: Option<u64>,
    /// The cgroup's memory at the kill: page counters from the kernel, `memory.stat` from cgroupfs.
    pub memory: Option<crate::enrich::memstat::Memory>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Allocation {
    /// Hex, e.g. "0x140cca".
    pub gfp_mask: Option<String>,
    pub order: Option<i32>,
    /// `oom_control`, `memcg_reclaim`, `direct_reclaim`, or null when unknown.
    pub source: Option<&'static str>,
    pub kernel_stack: Vec<String>,
    /// The mask in the running kernel's flag names, e.g. ["GFP_HIGHUSER_MOVABLE", "__GFP_COMP"].
    pub gfp_flags: Option<Vec<String>>,
    /// PAGE_SIZE << order (null for order -1, a sysrq-forced OOM).
    pub size_bytes: Option<u64>,
    /// Where the allocation came from, read from the kernel stack: page_fault, thp_fault, slab,
    /// page_cache, memcg_charge, sysrq, other.
    pub path: &'static str,
    /// For page_fault: `anonymous` or `file`.
    pub path_detail: Option<&'static str>,
    /// The trigger's user stack, symbolized against the trigger's own process.
    pub user_stack: Option<crate::enrich::ustack::UserStack>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OomKill {
    pub kill_id: u64,
    pub attach: &'static str,
    pub victim: Victim,
    pub trigger: Trigger,
    pub oom_memcg: Option<OomMemcg>,
    pub constraint: &'static str,
    pub totalpages: Option<u64>,
    pub allocation: Allocation,
    /// Fields whose value was derived rather than read from `struct oom_control`.
    pub inferred: Vec<&'static str>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Lost {
    /// `ring_buffer_full` (the kernel could not reserve room), `decode_error`, or
    /// `output_backpressure` (the output did not keep up; `count` is the seq hole before this line).
    pub reason: &'static str,
    /// Records lost since the previous `lost` line of this reason.
    pub count: u64,
    /// Records lost for this reason since start.
    pub total: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stop {
    pub reason: &'static str,
    pub oom_kills: u64,
    pub lost: u64,
}

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
    pub result: &'static str,
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
    pub constraint: &'static str,
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
    pub verdict: &'static str,
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
    pub source: &'static str,
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
    pub phase: &'static str,
    pub kill_id: Option<u64>,
}
