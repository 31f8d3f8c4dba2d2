//! `oom_kill`: one victim of the OOM killer, its trigger, the memcg whose limit fired, the
//! allocation and the memory it was made of.

use serde::Serialize;

use super::{Attach, Cgroup, Constraint, Kubernetes, Scope, wire_enum};

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OomKill {
    pub kill_id: u64,
    pub attach: Attach,
    pub victim: Victim,
    pub trigger: Trigger,
    pub oom_memcg: Option<OomMemcg>,
    pub constraint: Constraint,
    pub totalpages: Option<u64>,
    pub allocation: Allocation,
    /// Fields whose value was derived rather than read from `struct oom_control`.
    pub inferred: Vec<&'static str>,
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
    pub cgroup_memory: Option<Memory>,
    /// The victim's pod and container, when its cgroup is one's.
    pub kubernetes: Option<Kubernetes>,
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
    /// The trigger's pod and container, when its cgroup is one's.
    pub kubernetes: Option<Kubernetes>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OomMemcg {
    pub id: u64,
    pub path: Option<String>,
    /// `oom_control` (read from the kernel's struct) or `inferred` (the trigger's nearest ancestor at its limit).
    pub source: MemcgSource,
    pub limit_bytes: Option<u64>,
    pub usage_bytes: Option<u64>,
    /// The cgroup's memory at the kill: page counters from the kernel, `memory.stat` from cgroupfs.
    pub memory: Option<Memory>,
    /// Which limit fired, from the path's place in kubelet's cgroup tree.
    pub scope: Option<Scope>,
    /// The pod and container whose limit fired, when the memcg is one's.
    pub kubernetes: Option<Kubernetes>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Allocation {
    /// Hex, e.g. "0x140cca".
    pub gfp_mask: Option<String>,
    pub order: Option<i32>,
    /// `oom_control`, `memcg_reclaim`, `direct_reclaim`, or null when unknown.
    pub source: Option<AllocSource>,
    pub kernel_stack: Vec<String>,
    /// The mask in the running kernel's flag names, e.g. ["GFP_HIGHUSER_MOVABLE", "__GFP_COMP"].
    pub gfp_flags: Option<Vec<String>>,
    /// PAGE_SIZE << order (null for order -1, a sysrq-forced OOM).
    pub size_bytes: Option<u64>,
    /// Where the allocation came from, read from the kernel stack: page_fault, thp_fault, slab,
    /// page_cache, memcg_charge, sysrq, other.
    pub path: AllocPath,
    /// For page_fault: `anonymous` or `file`.
    pub path_detail: Option<FaultKind>,
    /// The trigger's user stack, symbolized against the trigger's own process.
    pub user_stack: Option<UserStack>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Memory {
    /// The `memory` page counter at the kill (kernel).
    pub limit_bytes: Option<u64>,
    pub usage_bytes: u64,
    /// v1 `max_usage_in_bytes` / v2 `memory.peak`: the counter's watermark.
    pub peak_bytes: Option<u64>,
    /// v2 `memory.swap.max` / `memory.swap.current`.
    pub swap_limit_bytes: Option<u64>,
    pub swap_usage_bytes: Option<u64>,
    /// v1 `memory.memsw.limit_in_bytes` / `memory.memsw.usage_in_bytes` (memory + swap).
    pub memsw_limit_bytes: Option<u64>,
    pub memsw_usage_bytes: Option<u64>,
    /// Bytes (and event counts) from `memory.stat`; hierarchical (v1 `total_*`).
    pub stat: Option<Stat>,
    /// `cgroupfs` (read after the record arrived), or null when it could not be read (the cgroup is gone).
    pub stat_source: Option<StatSource>,
    pub stat_read_after_kill_ns: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Stat {
    pub anon: Option<u64>,
    pub file: Option<u64>,
    /// Transparent huge pages (v2 `anon_thp`, v1 `rss_huge`).
    pub anon_thp: Option<u64>,
    pub shmem: Option<u64>,
    pub file_mapped: Option<u64>,
    /// v2 `kernel`; v1 `memory.kmem.usage_in_bytes`.
    pub kernel: Option<u64>,
    pub slab: Option<u64>,
    pub sock: Option<u64>,
    pub pagetables: Option<u64>,
    /// Event counters (not bytes).
    pub pgfault: Option<u64>,
    pub pgmajfault: Option<u64>,
    pub thp_fault_alloc: Option<u64>,
}

/// The trigger's user stack at the kill.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UserStack {
    pub frames: Vec<UserFrame>,
    /// Frames captured by the kernel.
    pub depth: usize,
    /// True when the kernel's capture filled the whole buffer (USTACK_DEPTH frames; the build-id
    /// capture's USTACK_BUILD_ID_DEPTH when only that one worked): deeper frames were cut.
    pub truncated: bool,
    /// "process" (symbolized against the live trigger's own memory map), "build_id" (process gone:
    /// module/offset/build id from the kernel's build-id capture, names only where the module path
    /// could be resolved from a build-id cache of modules seen earlier), "none" (no symbolization
    /// possible: raw addresses only).
    pub symbolized: Symbolized,
    /// Why symbolization was partial or impossible (e.g. "the trigger had exited: /proc/4242/maps is
    /// gone"), or the capture error ("bpf_get_stack: -14").
    pub note: Option<String>,
    /// Which walk produced `frames`: `dwarf` (the kernel's copy of the stack unwound with the
    /// modules' call frame information) or `frame_pointer` (the kernel's own walk).
    pub unwinder: UnwinderKind,
    /// With a `dwarf` stack: how many frames the kernel's frame-pointer walk captured, and how
    /// many of the innermost ones both walks have in common (the cross-check). Null with a
    /// `frame_pointer` stack, or when that walk captured nothing.
    pub frame_pointer_depth: Option<usize>,
    pub frame_pointer_common_frames: Option<usize>,
    /// The Python stacks of the trigger's thread and of the thread holding the GIL, when the
    /// trigger is a CPython 3.10-3.13 process; null otherwise.
    pub python_stacks: Option<Vec<PyThread>>,
}

/// One Python frame in the stream.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PythonFrame {
    /// The code object's qualified name (3.11+; its name on 3.10).
    pub function: Option<String>,
    pub file: Option<String>,
    /// The line being run; null when the copied line table did not reach the instruction.
    pub line: Option<u32>,
    pub first_line: Option<u32>,
}

/// One thread's Python stack.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PyThread {
    /// Kernel thread id (null on 3.10 for a thread other than the trigger).
    pub tid: Option<u32>,
    pub trigger: bool,
    pub holds_gil: bool,
    /// "3.12.1".
    pub version: String,
    pub truncated: bool,
    /// Innermost first.
    pub frames: Vec<PythonFrame>,
    /// How many frames each `_PyEval_EvalFrameDefault` call ran, innermost first (for
    /// interleaving with the native stack).
    #[serde(skip)]
    pub eval_groups: Vec<usize>,
}

/// One user frame.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UserFrame {
    /// Instruction pointer, hex "0x55d0c0a1b2c3". Empty when only the kernel's build-id capture has
    /// this frame and it reported a file offset rather than the IP.
    pub addr: String,
    /// Demangled symbol name.
    pub function: Option<String>,
    /// `addr` - symbol start.
    pub function_offset: Option<u64>,
    /// Source file (with its directory when known). For code inlined into `function`, the line in
    /// `function` that the inlined call came from.
    pub file: Option<String>,
    pub line: Option<u32>,
    /// Path of the mapped ELF file, as the kernel shows it (with " (deleted)" for a removed file).
    pub module: Option<String>,
    /// File offset of `addr` within `module`.
    pub module_offset: Option<u64>,
    /// Lowercase hex. From the kernel's capture alone, it is the kernel's 20-byte field (a shorter
    /// id is followed by zeros).
    pub build_id: Option<String>,
    /// On a frame of the interpreter's `_PyEval_EvalFrameDefault`: the Python frames that call
    /// was running, innermost first (from the trigger thread's `python_stacks` entry).
    pub python: Option<Vec<PythonFrame>>,
}

wire_enum! {
    /// Where `oom_memcg` comes from.
    pub enum MemcgSource {
        /// Read from the kernel's `struct oom_control`.
        OomControl = "oom_control",
        /// The trigger's nearest ancestor at its limit.
        Inferred = "inferred",
    }
}

wire_enum! {
    /// Where `allocation.gfp_mask` and `order` come from.
    pub enum AllocSource {
        OomControl = "oom_control",
        MemcgReclaim = "memcg_reclaim",
        DirectReclaim = "direct_reclaim",
    }
}

wire_enum! {
    /// Where the allocation came from, read from the kernel stack.
    pub enum AllocPath {
        PageFault = "page_fault",
        ThpFault = "thp_fault",
        Slab = "slab",
        PageCache = "page_cache",
        MemcgCharge = "memcg_charge",
        Sysrq = "sysrq",
        Other = "other",
    }
}

wire_enum! {
    /// What a page fault touched.
    pub enum FaultKind {
        Anonymous = "anonymous",
        File = "file",
    }
}

wire_enum! {
    /// Where `memory.stat` was read.
    pub enum StatSource {
        /// From cgroupfs, after the record arrived.
        Cgroupfs = "cgroupfs",
    }
}

wire_enum! {
    /// How a user stack was symbolized.
    pub enum Symbolized {
        /// Against the live trigger's own memory map.
        Process = "process",
        /// The process was gone: module, offset and build id from the kernel's build-id capture.
        BuildId = "build_id",
        /// The process was gone: against its mappings and files as oomtrace saw them while it
        /// lived (at its exec or its first memcg reclaim), matched to the same process image.
        Snapshot = "snapshot",
        /// Raw addresses only.
        None = "none",
    }
}

wire_enum! {
    /// Which walk produced a user stack.
    pub enum UnwinderKind {
        /// The kernel's copy of the stack, unwound with DWARF call frame information.
        Dwarf = "dwarf",
        /// The kernel's frame-pointer walk (`bpf_get_stack`).
        FramePointer = "frame_pointer",
    }
}
