//! The kernel-facing side: resolve layouts, load the eBPF object, attach each hook in the best mode
//! this kernel offers, and hand back the ring buffer and drop counters.

use std::{fmt, path::PathBuf, time::Instant};

use anyhow::{Context, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, FEntry, KProbe, TracePoint},
};
use clap::ValueEnum;
use oomtrace_common::{Config, drop_reason};

use crate::{
    event::{Attach, AttachReport, FeatureName},
    kernel::{btf, layout, tracefs},
};

/// The eBPF object, built by build.rs (see xtask/src/ebpf.rs) and embedded: the binary is one file.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/oomtrace.bpf.o"));

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AttachMode {
    /// Best available: fentry, then kprobe, then tp_btf, then tracepoint.
    Auto,
    /// fentry on oom_kill_process (exact struct oom_control) + tp_btf on mark_victim.
    Fentry,
    /// kprobe on oom_kill_process (exact struct oom_control) + tp_btf on mark_victim.
    Kprobe,
    /// tp_btf on mark_victim (typed task_struct; oom_control fields inferred).
    #[value(name = "tp_btf")]
    TpBtf,
    /// Classic tracepoint oom/mark_victim (layout from tracefs; works without BTF).
    Tracepoint,
}

impl AttachMode {
    pub fn name(self) -> &'static str {
        self.attach().map_or("auto", Attach::as_str)
    }

    /// The one mode asked for, or None for auto.
    pub fn attach(self) -> Option<Attach> {
        match self {
            Self::Auto => None,
            Self::Fentry => Some(Attach::Fentry),
            Self::Kprobe => Some(Attach::Kprobe),
            Self::TpBtf => Some(Attach::TpBtf),
            Self::Tracepoint => Some(Attach::Tracepoint),
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the running kernel offers, resolved once.
pub struct KernelInfo {
    pub cfg: Config,
    /// Where the BTF below was read from.
    pub btf_source: btf::BtfSource,
    pub btf: Option<btf::Btf>,
    pub btf_error: Option<String>,
    pub btf_missing: Vec<String>,
    pub tracefs: Option<PathBuf>,
    pub mark_victim_format: Option<tracefs::Format>,
    pub reclaim_format: Option<tracefs::Format>,
    pub signal_format: Option<tracefs::Format>,
    pub exit_format: Option<tracefs::Format>,
    /// gfp flag bits of the running kernel: its BTF enum (6.9+) or a table for its version.
    pub gfp: crate::kernel::gfp::GfpBits,
}

impl KernelInfo {
    /// Reads what this kernel offers. Fails only for a `--btf` file that is unreadable or not
    /// this kernel's: the kernel's own BTF may be missing (the classic tracepoints still work).
    pub fn probe(btf_source: &btf::BtfSource) -> Result<Self> {
        let mut cfg = Config::ABSENT;
        cfg.page_shift = layout::page_shift();
        let (btf, btf_error, btf_missing) = match btf_source.load() {
            Ok(b) => {
                let missing = layout::from_btf(&b, &mut cfg);
                (Some(b), None, missing)
            }
            Err(e) if matches!(btf_source, btf::BtfSource::File(_)) => return Err(e),
            Err(e) => (None, Some(format!("{e:#}")), Vec::new()),
        };
        let tracefs = tracefs::root();
        let read = |cat, name| {
            let root = tracefs.as_ref()?;
            tracefs::read_format(root, cat, name)
                .map_err(|e| log::debug!("{e:#}"))
                .ok()
        };
        let mark_victim_format = read("oom", "mark_victim");
        if let Some(f) = &mark_victim_format {
            layout::from_mark_victim(f, &mut cfg);
        }
        let reclaim_format = read("vmscan", "mm_vmscan_memcg_reclaim_begin");
        if let Some(f) = &reclaim_format {
            layout::from_reclaim_begin(f, &mut cfg);
        }
        let signal_format = read("signal", "signal_generate");
        if let Some(f) = &signal_format {
            layout::from_signal_generate(f, &mut cfg);
        }
        if let Some(f) = read("oom", "start_task_reaping") {
            layout::from_reaper(&f, &mut cfg);
        }
        if let Some(f) = read("task", "task_newtask") {
            layout::from_task_newtask(&f, &mut cfg);
        }
        if let Some(f) = read("sched", "sched_process_free") {
            layout::from_process_free(&f, &mut cfg);
        }
        let exit_format = read("sched", "sched_process_exit");
        if let Some(f) = &exit_format {
            layout::from_process_exit(f, &mut cfg);
        }
        let gfp = gfp_bits(btf.as_ref());
        Ok(Self {
            gfp,
            cfg,
            btf_source: btf_source.clone(),
            btf,
            btf_error,
            btf_missing,
            tracefs,
            mark_victim_format,
            reclaim_format,
            signal_format,
            exit_format,
        })
    }
}

fn gfp_bits(btf: Option<&btf::Btf>) -> crate::kernel::gfp::GfpBits {
    let from_btf = btf.and_then(|b| {
        let e = b.enumerators("___GFP_");
        crate::kernel::gfp::GfpBits::from_enum(e.iter().map(|(n, v)| (n.as_str(), *v)))
    });
    from_btf.unwrap_or_else(|| {
        let (major, minor) = crate::kernel::gfp::kernel_version(&crate::kernel::release()).unwrap_or((6, 1));
        crate::kernel::gfp::GfpBits::for_version(major, minor)
    })
}

pub struct Attached {
    pub ebpf: Ebpf,
    pub report: AttachReport,
    /// Optional features that could not be had, and why.
    pub off: Vec<(FeatureName, String)>,
}

/// First line of an error chain, for one-line fallback reasons.
fn short(e: &dyn fmt::Display) -> String {
    let s = format!("{e:#}");
    let s = s.lines().next().unwrap_or_default().to_owned();
    if s.len() > 240 {
        format!("{}…", &s[..s.floor_char_boundary(240)])
    } else {
        s
    }
}

/// Threads the tid → tgid map of the classic tracepoints holds (LRU; ~64 bytes of kernel memory
/// each). A miss falls back to /proc, which still answers while the thread lives.
const TGID_MAP_ENTRIES: u32 = 32_768;

pub fn load(info: &KernelInfo, ring_bytes: u32, classic: bool) -> Result<Ebpf> {
    let t = Instant::now();
    let ebpf = EbpfLoader::new()
        .override_global("CONFIG", &info.cfg, true)
        .map_max_entries("EVENTS", ring_bytes)
        .map_max_entries("TGIDS", if classic { TGID_MAP_ENTRIES } else { 1 })
        .load(EBPF_OBJECT)
        .context("failed to load the eBPF object (maps)")?;
    log::debug!("object loaded in {:?}", t.elapsed());
    Ok(ebpf)
}

/// Attaches every hook in the best mode `want` allows, recording why better modes failed.
/// Each step is one hook family; the report is built from what they attached.
pub fn attach(info: &KernelInfo, want: AttachMode, ring_bytes: u32) -> Result<Attached> {
    // Classic tracepoints are the last resort; the tid map they need is only worth its kernel
    // memory when they are asked for or nothing better can work.
    let classic_expected = want == AttachMode::Tracepoint || info.btf.is_none();
    // aya parses the kernel's BTF again for the tp_btf/fentry loads (tens of ms): on a thread of
    // its own while the object loads and its maps are made.
    let aya_btf = (info.btf.is_some() && want != AttachMode::Tracepoint).then(|| {
        let source = info.btf_source.clone();
        std::thread::spawn(move || {
            let t = Instant::now();
            let b = source.load_aya().map_err(|e| log::warn!("{e:#}"));
            log::debug!("aya BTF parsed in {:?}", t.elapsed());
            b.ok()
        })
    });
    let ebpf = load(info, ring_bytes, classic_expected)?;
    let aya_btf = aya_btf.and_then(|h| h.join().ok().flatten());
    let mut a = Attacher {
        ebpf,
        info,
        want,
        btf: aya_btf,
        fallbacks: Vec::new(),
        off: Vec::new(),
    };
    let oom_kill_process = a.exact()?;
    let mark_victim = a.mark_victim()?;
    let reclaim_begin = if oom_kill_process.is_none() {
        a.reclaim()
    } else {
        None
    };
    let signal_generate = a.signal_generate();
    let process_exit = a.process_exit();
    let task_newtask = if mark_victim == Attach::Tracepoint || signal_generate == Some(Attach::Tracepoint) {
        a.task_newtask(classic_expected)
    } else {
        None
    };
    let oom_reaper = a.reaper();
    let report = AttachReport {
        mode: oom_kill_process.unwrap_or(mark_victim),
        oom_kill_process,
        mark_victim,
        reclaim_begin,
        signal_generate,
        process_exit,
        memcg_oom: None,
        oom_reaper,
        task_newtask,
        fallbacks: a.fallbacks,
    };
    Ok(Attached {
        ebpf: a.ebpf,
        report,
        off: a.off,
    })
}

/// The state of one [`attach`] run.
struct Attacher<'a> {
    ebpf: Ebpf,
    info: &'a KernelInfo,
    want: AttachMode,
    btf: Option<aya::Btf>,
    /// Why each better mode was not used.
    fallbacks: Vec<String>,
    off: Vec<(FeatureName, String)>,
}

impl Attacher<'_> {
    fn no_btf(&self) -> anyhow::Error {
        anyhow!(
            "needs kernel BTF ({})",
            self.info.btf_error.as_deref().unwrap_or("not parsed")
        )
    }

    /// 1. The exact hook on oom_kill_process (struct oom_control): fentry, then kprobe.
    fn exact(&mut self) -> Result<Option<Attach>> {
        let want = self.want;
        let exact_ok = self
            .info
            .btf_missing
            .iter()
            .all(|m| !m.starts_with("oom_control."));
        if matches!(want, AttachMode::Auto | AttachMode::Fentry) {
            let r = match (&self.btf, exact_ok) {
                (Some(btf), true) => attach_fentry(&mut self.ebpf, btf),
                (None, _) => Err(self.no_btf()),
                (_, false) => Err(anyhow!("struct oom_control not fully described by BTF")),
            };
            match r {
                Ok(()) => return Ok(Some(Attach::Fentry)),
                Err(e) if want == AttachMode::Fentry => {
                    return Err(e.context("failed to attach fentry to oom_kill_process (try --attach auto)"));
                }
                Err(e) => self.fallbacks.push(format!("fentry: {}", short(&e))),
            }
        }
        if matches!(want, AttachMode::Auto | AttachMode::Kprobe) {
            let r = if self.info.btf.is_some() && exact_ok {
                attach_kprobe(&mut self.ebpf)
            } else {
                Err(anyhow!("needs struct oom_control offsets from kernel BTF"))
            };
            match r {
                Ok(()) => return Ok(Some(Attach::Kprobe)),
                Err(e) if want == AttachMode::Kprobe => {
                    return Err(
                        e.context("failed to attach a kprobe to oom_kill_process (try --attach auto)")
                    );
                }
                Err(e) => self.fallbacks.push(format!("kprobe: {}", short(&e))),
            }
        }
        Ok(None)
    }

    /// 2. The per-victim hook on mark_victim: tp_btf, then the classic tracepoint.
    fn mark_victim(&mut self) -> Result<Attach> {
        if self.want != AttachMode::Tracepoint {
            let r = match &self.btf {
                Some(btf) => attach_btf_tp(&mut self.ebpf, "mark_victim_btf", "mark_victim", btf),
                None => Err(self.no_btf()),
            };
            match r {
                Ok(()) => return Ok(Attach::TpBtf),
                Err(e) if self.want == AttachMode::TpBtf => {
                    return Err(e.context("failed to attach tp_btf/mark_victim (try --attach tracepoint)"));
                }
                Err(e) => self.fallbacks.push(format!("tp_btf: {}", short(&e))),
            }
        }
        if self.info.mark_victim_format.is_none() {
            bail!(
                "no way to attach to oom:mark_victim: {}",
                if self.info.tracefs.is_none() {
                    "tracefs is not mounted (mount -t tracefs tracefs /sys/kernel/tracing)".to_owned()
                } else {
                    "its tracefs format is missing (is CONFIG_TRACEPOINTS on?)".to_owned()
                }
            );
        }
        attach_tracepoint(&mut self.ebpf, "mark_victim_tp", "oom", "mark_victim")
            .context("failed to attach tracepoint oom/mark_victim")?;
        Ok(Attach::Tracepoint)
    }

    /// Attaches each of `hooks` as `tp_btf` where this kernel's BTF allows (typed arguments, no
    /// tracefs needed), else as a classic tracepoint, whose format `classic` says is readable.
    /// Reports `tp_btf` only if every hook got it.
    fn hooks(&mut self, hooks: &[Hook], classic: Result<(), String>) -> Result<Attach> {
        let mut all_btf = true;
        for h in hooks {
            let btf = match (&self.btf, self.want) {
                (_, AttachMode::Tracepoint) => Err(anyhow!("--attach tracepoint")),
                (Some(btf), _) => attach_btf_tp(&mut self.ebpf, h.btf_prog, h.name, btf),
                (None, _) => Err(self.no_btf()),
            };
            if let Err(e) = btf {
                log::debug!("tp_btf/{}: {}", h.name, short(&e));
                all_btf = false;
                classic
                    .clone()
                    .map_err(|why| anyhow!("{why}; tp_btf: {}", short(&e)))?;
                attach_tracepoint(&mut self.ebpf, h.classic_prog, h.category, h.name)?;
            }
        }
        Ok(if all_btf {
            Attach::TpBtf
        } else {
            Attach::Tracepoint
        })
    }

    /// Records an optional feature that could not be had, and says so on stderr.
    fn optional(&mut self, r: Result<Attach>, feature: FeatureName, lost: &str) -> Option<Attach> {
        match r {
            Ok(a) => Some(a),
            Err(e) => {
                let why = short(&e);
                log::warn!("{lost}: {why}");
                self.off.push((feature, why));
                None
            }
        }
    }

    /// 3. Optional: reclaim-begin records for gfp/order where oom_control is not available.
    fn reclaim(&mut self) -> Option<Attach> {
        let classic = if self.info.reclaim_format.is_some() {
            Ok(())
        } else {
            Err(no_tracefs_format(self.info, "vmscan reclaim tracepoints"))
        };
        let r = self.hooks(
            &[
                Hook::new(
                    "memcg_reclaim_begin_btf",
                    "memcg_reclaim_begin",
                    "vmscan",
                    "mm_vmscan_memcg_reclaim_begin",
                ),
                Hook::new(
                    "direct_reclaim_begin_btf",
                    "direct_reclaim_begin",
                    "vmscan",
                    "mm_vmscan_direct_reclaim_begin",
                ),
            ],
            classic,
        );
        self.optional(
            r,
            FeatureName::AllocationGfpOrder,
            "allocation gfp_mask/order will be unknown",
        )
    }

    /// 4. Whodunit: every SIGKILL generated. Optional: without it oom_kill records still flow,
    ///    but no `signal`/`exit` verdicts.
    fn signal_generate(&mut self) -> Option<Attach> {
        let classic = if self.info.signal_format.is_some() {
            Ok(())
        } else {
            Err(no_tracefs_format(self.info, "signal:signal_generate"))
        };
        let r = self.hooks(
            &[Hook::new(
                "signal_generate_btf",
                "signal_generate_tp",
                "signal",
                "signal_generate",
            )],
            classic,
        );
        self.optional(
            r,
            FeatureName::Signals,
            "signal records and kill verdicts are off",
        )
    }

    /// 4b. Every process that died of a fatal signal.
    fn process_exit(&mut self) -> Option<Attach> {
        let cfg = &self.info.cfg;
        let absent = oomtrace_common::ABSENT;
        let r = if cfg.task_exit_code == absent {
            Err(anyhow!("needs task_struct.exit_code from BTF"))
        } else {
            let classic = if self.info.exit_format.is_none() {
                Err(no_tracefs_format(self.info, "sched:sched_process_exit"))
            } else if cfg.tp_exit_group_dead == absent && cfg.signal_live == absent {
                Err("needs sched_process_exit's group_dead or signal_struct.live from BTF".to_owned())
            } else {
                Ok(())
            };
            self.hooks(
                &[Hook::new(
                    "process_exit_btf",
                    "process_exit",
                    "sched",
                    "sched_process_exit",
                )],
                classic,
            )
        };
        self.optional(
            r,
            FeatureName::ExitVerdicts,
            "exit records and kill verdicts are off",
        )
    }

    /// 5. Classic tracepoints name a task by its thread id only: map threads to processes.
    fn task_newtask(&mut self, classic_expected: bool) -> Option<Attach> {
        let r = if classic_expected {
            track_tgids(&mut self.ebpf, self.info)
        } else {
            // The map was sized for tp_btf (1 entry) before the fallback was known.
            Err(anyhow!("tp_btf was expected to attach, so no tid map was made"))
        };
        match r {
            Ok(n) => {
                log::debug!("tid map seeded with {n} threads from /proc");
                Some(Attach::Tracepoint)
            }
            Err(e) => {
                log::warn!(
                    "the pid of a signal's target or an OOM victim that already exited will be unknown: {}",
                    short(&e)
                );
                None
            }
        }
    }

    /// 6. The OOM reaper's progress (optional).
    fn reaper(&mut self) -> Option<Attach> {
        let classic = if self.info.cfg.tp_reap_pid != oomtrace_common::ABSENT {
            Ok(())
        } else {
            Err(no_tracefs_format(self.info, "oom:*_reaping"))
        };
        let r = self.hooks(
            &[
                Hook::new("wake_reaper_btf", "wake_reaper", "oom", "wake_reaper"),
                Hook::new(
                    "start_task_reaping_btf",
                    "start_task_reaping",
                    "oom",
                    "start_task_reaping",
                ),
                Hook::new(
                    "finish_task_reaping_btf",
                    "finish_task_reaping",
                    "oom",
                    "finish_task_reaping",
                ),
                Hook::new(
                    "skip_task_reaping_btf",
                    "skip_task_reaping",
                    "oom",
                    "skip_task_reaping",
                ),
            ],
            classic,
        );
        self.optional(r, FeatureName::OomReaper, "oom_reap records are off")
    }
}

/// One tracepoint and its two programs: tp_btf and classic.
struct Hook {
    btf_prog: &'static str,
    classic_prog: &'static str,
    category: &'static str,
    name: &'static str,
}

impl Hook {
    const fn new(
        btf_prog: &'static str,
        classic_prog: &'static str,
        category: &'static str,
        name: &'static str,
    ) -> Self {
        Self {
            btf_prog,
            classic_prog,
            category,
            name,
        }
    }
}

/// Why a classic tracepoint's format is missing.
fn no_tracefs_format(info: &KernelInfo, what: &str) -> String {
    if info.tracefs.is_none() {
        format!("{what}: tracefs is not mounted and oomtrace could not mount it privately")
    } else {
        format!("no {what} in tracefs")
    }
}

fn attach_fentry(ebpf: &mut Ebpf, btf: &aya::Btf) -> Result<()> {
    let p: &mut FEntry = ebpf
        .program_mut("oom_kill_process_fentry")
        .context("program missing from object")?
        .try_into()?;
    p.load("oom_kill_process", btf).map_err(verifier_hint)?;
    p.attach()?;
    Ok(())
}

fn attach_kprobe(ebpf: &mut Ebpf) -> Result<()> {
    let p: &mut KProbe = ebpf
        .program_mut("oom_kill_process_kprobe")
        .context("program missing from object")?
        .try_into()?;
    p.load().map_err(verifier_hint)?;
    p.attach("oom_kill_process", 0)?;
    Ok(())
}

fn attach_btf_tp(ebpf: &mut Ebpf, prog: &str, tracepoint: &str, btf: &aya::Btf) -> Result<()> {
    let p: &mut BtfTracePoint = ebpf
        .program_mut(prog)
        .with_context(|| format!("program {prog} missing from object"))?
        .try_into()?;
    p.load(tracepoint, btf).map_err(verifier_hint)?;
    p.attach()?;
    Ok(())
}

fn attach_tracepoint(ebpf: &mut Ebpf, prog: &str, category: &str, name: &str) -> Result<()> {
    let p: &mut TracePoint = ebpf
        .program_mut(prog)
        .with_context(|| format!("program {prog} missing from object"))?
        .try_into()?;
    p.load().map_err(verifier_hint)?;
    p.attach(category, name)?;
    Ok(())
}

/// Attaches sched:sched_process_free (removes released tasks) and task:task_newtask, then seeds the
/// tid → tgid map with the threads that existed before (in that order, so no thread falls between
/// the two; a seeded thread released meanwhile stays until the LRU drops it).
/// Returns how many were seeded.
fn track_tgids(ebpf: &mut Ebpf, info: &KernelInfo) -> Result<usize> {
    let absent = oomtrace_common::ABSENT;
    if info.cfg.tp_nt_pid == absent || info.cfg.tp_nt_clone_flags == absent {
        bail!("no task:task_newtask in tracefs");
    }
    if info.cfg.tp_free_pid == absent {
        bail!("no sched:sched_process_free in tracefs");
    }
    attach_tracepoint(ebpf, "task_free", "sched", "sched_process_free")?;
    attach_tracepoint(ebpf, "task_newtask", "task", "task_newtask")?;
    let mut map: aya::maps::HashMap<_, u32, u32> =
        aya::maps::HashMap::try_from(ebpf.map_mut("TGIDS").context("TGIDS map missing")?)?;
    let mut n = 0;
    for (tid, tgid) in proc_threads() {
        // BPF_NOEXIST: a thread task_newtask has seen since is newer than what /proc said.
        if map.insert(&tid, &tgid, 1).is_ok() {
            n += 1;
        }
    }
    Ok(n)
}

/// Every (tid, tgid) in /proc.
fn proc_threads() -> impl Iterator<Item = (u32, u32)> {
    fn numeric(e: std::fs::DirEntry) -> Option<u32> {
        e.file_name().to_str()?.parse().ok()
    }
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().and_then(numeric))
        .flat_map(move |tgid| {
            std::fs::read_dir(format!("/proc/{tgid}/task"))
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok().and_then(numeric))
                .map(move |tid| (tid, tgid))
        })
}

/// Keeps aya's error but logs the verifier's full output at debug level.
fn verifier_hint(e: aya::programs::ProgramError) -> anyhow::Error {
    if let aya::programs::ProgramError::LoadError {
        io_error,
        verifier_log,
    } = &e
    {
        log::debug!("verifier log:\n{verifier_log}");
        return anyhow!("program load refused: {io_error}");
    }
    e.into()
}

pub fn take_maps(ebpf: &mut Ebpf) -> Result<(RingBuf<MapData>, PerCpuArray<MapData, u64>)> {
    let ring = RingBuf::try_from(ebpf.take_map("EVENTS").context("EVENTS map missing")?)?;
    let drops = PerCpuArray::try_from(ebpf.take_map("DROPS").context("DROPS map missing")?)?;
    Ok((ring, drops))
}

/// Total records the kernel side could not reserve room for, summed over CPUs.
pub fn ring_drops(drops: &PerCpuArray<MapData, u64>) -> u64 {
    drops
        .get(&drop_reason::RINGBUF_FULL, 0)
        .map(|v| v.iter().sum())
        .unwrap_or(0)
}
