//! `cargo xtask bench`: oomtrace side by side with the other ways to see OOM kills, on real OOM
//! kills in a small memory cgroup.
//!
//! Contenders: oomtrace in its best attach mode and in each forced mode that attaches here (and
//! `--no-user-stacks`, to price the user stacks), a bpftrace script on `oom:mark_victim`
//! (bench/oomkill.bt), kubelet/cAdvisor-style `/dev/kmsg` scraping (oomtrace-bench-kmsg), and a
//! minimal C libbpf program on the same hooks (bench/oomfloor*.c: the floor for cost). One that
//! cannot run here is listed with the reason.
//!
//! Each run has four phases:
//! 1. oomtrace's start-up, `--startups` times: exec → its `start` line, nothing else running;
//! 2. every contender alone: exec → ready line, then idle RSS and CPU over `--idle-secs`;
//! 3. every contender alone on the hook for a storm of `--solo-kills`: run_time_ns / run_cnt of
//!    each of its eBPF programs (kernel.bpf_stats_enabled on for the storms only) without other
//!    programs on the hook to warm or cool the caches, and its latency undisturbed; the floor's
//!    variants and oomtrace with its reader stopped price each part of oomtrace's program. Each
//!    storm has a fresh contender process that has never seen the hog: oomtrace's first kills
//!    symbolize the hog's binary cold, and they are in the figures;
//! 4. each storm size of `--storms` with all contenders attached at once (fresh ones per storm):
//!    delivered with full detail vs the kernel's count, and kill (mark_victim) → line read, for
//!    everyone on the same kills.
//!
//! The report gives the median [min–max] over runs; every ratio is taken within one run.

mod build;
mod contender;
mod kernel;
mod lineproc;
mod report;

use std::{
    cell::Cell,
    collections::{BTreeMap, HashMap, HashSet},
    fs,
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use self::{
    build::Binaries,
    contender::{Family, Hook, Spec, Watch},
    kernel::ProgStat,
};
use crate::{
    memcg::{BenchCgroup, Hierarchy},
    stats, sys,
};

pub struct Options {
    pub runs: u32,
    /// OOM kills per shared storm (all contenders at once); one storm of each size per run.
    pub storms: Vec<u32>,
    /// OOM kills of each contender's solo storm (alone on the hook: eBPF cost, latency alone).
    pub solo_kills: u32,
    /// How long each contender idles alone.
    pub idle: Duration,
    /// oomtrace start-ups per run (exec → `start` line).
    pub startups: u32,
    /// Also run the floor variants that only break down where oomtrace's mark_victim time goes
    /// (kernel stack, memcg walk, all stacks); --quick leaves them out.
    pub breakdown: bool,
    /// The command line, for the report.
    pub command: String,
    pub json: PathBuf,
}

const CGROUP_LIMIT: u64 = 8 << 20;
const HOG_STEP_KB: &str = "4096";
/// bpftrace compiles its script with LLVM first: seconds, not milliseconds.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// From the ready line to the start of the idle window (start-up work is not idle time).
const SETTLE: Duration = Duration::from_secs(2);
/// From the last contender's ready line to the first kill of a storm. A tracer is started before
/// the kills it is there for; what it warms right after its `start` line (kernel symbols, the C
/// library's symbols) is warm by then. The hog's own binary is not: no process of a storm has
/// seen it before, so the first kills pay for symbolizing it cold.
pub const FIRST_KILL_GAP: Duration = Duration::from_secs(1);
/// Between two timed start-ups.
const STARTUP_GAP: Duration = Duration::from_millis(250);
/// The first kills of a fresh contender process, reported on their own.
pub const FIRST_KILLS: usize = 5;
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);
/// bpftrace has taken over 10 s to exit on SIGINT on a busy machine.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// The kernel allows 10 full OOM reports per 5 s (`oom_rs` in mm/oom_kill.c, v6.18): a storm the
/// kmsg scraper watches starts this long after the previous one, with a fresh allowance, as an OOM
/// storm after a quiet spell would.
const RATELIMIT_GAP: Duration = Duration::from_secs(5);
/// How long a storm waits for other OOM tracers on the machine to detach.
const FOREIGN_WAIT: Duration = Duration::from_secs(60);

/// One contender alone in one run.
#[derive(Clone, Debug)]
pub struct Alone {
    /// exec → we read its ready line.
    pub startup_read_ms: f64,
    /// exec → the timestamp it put in its ready line (oomtrace: the `start` record's boot_ns).
    pub startup_own_ms: Option<f64>,
    pub idle_rss_kib: u64,
    pub idle_cpu_ticks: u64,
    pub idle_seconds: f64,
    pub idle_cpu_pct: f64,
}

/// One oomtrace start-up, nothing else running.
#[derive(Clone, Copy, Debug)]
pub struct Startup {
    /// exec → we read its `start` line.
    pub read_ms: f64,
    /// exec → the `start` record's own boot_ns.
    pub own_ms: Option<f64>,
}

/// An eBPF program's run statistics over one storm.
#[derive(Clone, Debug)]
pub struct ProgRun {
    pub name: String,
    pub id: u32,
    pub prog_type: u32,
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

/// One contender in one storm.
#[derive(Clone, Debug, Default)]
pub struct Obs {
    /// Victims (of ours) it reported with full detail.
    pub delivered_full: u64,
    /// Victims it reported at all.
    pub delivered_any: u64,
    /// kmsg: victims with a one-line `Killed process` message.
    pub oneline: u64,
    pub lost: u64,
    /// Per victim: line read − mark_victim, in the storm's order.
    pub latencies_ms: Vec<f64>,
    /// The same for the storm's first FIRST_KILLS victims (None: not reported, or no kill time).
    pub first_kills_ms: Vec<Option<f64>>,
    /// kmsg: record timestamp − mark_victim, per victim.
    pub kmsg_ts_minus_kill_ms: Vec<f64>,
    /// oomtrace: records short of full detail, by missing field.
    pub missing: BTreeMap<String, u64>,
    pub progs: Vec<ProgRun>,
    pub rss_after_kib: Option<u64>,
    pub exit: Option<String>,
    pub error: Option<String>,
}

/// One storm, all contenders watching.
#[derive(Clone, Debug)]
pub struct Session {
    pub kills: u32,
    /// The bench cgroup's own OOM-kill counter (v1 memory.oom_control, v2 memory.events).
    pub cgroup_kills: Option<u64>,
    /// /proc/vmstat oom_kill delta (machine-wide).
    pub vmstat_kills: u64,
    /// IRQ-work interrupts on all CPUs during the storm (`IWI` of /proc/interrupts): a ring
    /// buffer's reader wakeup is one (kernel/bpf/ringbuf.c queues an irq_work), so this counts the
    /// wakeups, plus whatever else the machine queued meanwhile.
    pub irq_work: Option<u64>,
    pub seconds: f64,
    /// Spawn (= attach) order.
    pub order: Vec<String>,
    pub obs: BTreeMap<String, Obs>,
    /// OOM tracers' eBPF programs that were not ours, loaded during the storm (another oomtrace,
    /// bpftrace...): they run on the same hooks and disturb the figures.
    pub foreign: Vec<String>,
}

impl Session {
    /// The kernel's count for this storm: the cgroup's own counter (it equals the vmstat delta
    /// unless something else on the machine was OOM-killed meanwhile).
    pub fn kernel_kills(&self) -> u64 {
        self.cgroup_kills.unwrap_or(self.vmstat_kills)
    }
}

#[derive(Clone, Debug, Default)]
pub struct Run {
    /// oomtrace (auto) started `--startups` times.
    pub startups: Vec<Result<Startup, String>>,
    pub alone: BTreeMap<String, Result<Alone, String>>,
    /// One storm per contender, alone on the hook.
    pub solo: Vec<Session>,
    /// The shared storms: every contender at once.
    pub sessions: Vec<Session>,
}

/// Who runs, and who cannot and why.
pub struct Lineup {
    pub specs: Vec<Spec>,
    pub absent: Vec<(String, String)>,
    pub notes: Vec<String>,
    pub auto_mode: String,
    pub auto_fallbacks: Vec<String>,
}

/// Shared by every phase.
struct Ctx<'a> {
    bins: &'a Binaries,
    hierarchy: &'a Hierarchy,
    parent: PathBuf,
    logs: PathBuf,
    mono_offset_ns: i64,
    idle: Duration,
    solo_kills: u32,
    /// When the last storm ended.
    last_kill: Cell<Option<Instant>>,
}

pub fn run(workspace: &Path, opts: &Options) -> Result<()> {
    let t_total = Instant::now();
    sys::require_root()?;
    let hierarchy = Hierarchy::detect()
        .context("failed to find a cgroup hierarchy with the memory controller (the benchmark makes OOM kills in a memory cgroup)")?;
    let parent = hierarchy.own_dir()?;
    let out_dir = opts
        .json
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| workspace.join("target").join("bench"), Path::to_owned);
    // Before and after the build: in a shared tree the sources can change while it runs.
    let source_before = source_state(workspace);
    let bins = build::build(workspace, &out_dir)?;
    let build_seconds = t_total.elapsed().as_secs_f64();
    let mut source = source_state(workspace);
    if (&source_before.commit, &source_before.dirty) != (&source.commit, &source.dirty) {
        eprintln!("bench: warning: the tree changed during the build; the report names both states");
        source.before_build = Some(Box::new(source_before));
    }

    let _lock = sys::kill_lock()?;
    let t_bench = Instant::now();
    let (machine0, own0) = (kernel::machine_ticks(), kernel::own_cpu_seconds());
    let ctx = Ctx {
        bins: &bins,
        hierarchy: &hierarchy,
        parent,
        logs: out_dir.join("logs"),
        mono_offset_ns: kernel::boot_minus_mono_ns(),
        idle: opts.idle,
        solo_kills: opts.solo_kills,
        last_kill: Cell::new(None),
    };
    let stats_before = kernel::bpf_stats_sysctl();
    let loadavg_before = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let lineup = lineup(&ctx, opts.breakdown)?;
    eprintln!(
        "bench: contenders: {}",
        lineup
            .specs
            .iter()
            .map(|s| s.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (label, reason) in &lineup.absent {
        eprintln!("bench: not run: {label}: {reason}");
    }
    // ~100 kills/s, plus starting and stopping the contenders.
    let alone_count = lineup.specs.iter().filter(|s| s.alone).count() as u64;
    let solo_count = lineup.specs.len() as u64;
    let storm_kills: u64 = opts.storms.iter().map(|k| u64::from(*k)).sum();
    let estimate = u64::from(opts.runs)
        * (u64::from(opts.startups) / 4
            + alone_count * (opts.idle.as_secs() + 4)
            + solo_count * (u64::from(opts.solo_kills) / 100 + 2)
            + storm_kills / 80
            + 10 * opts.storms.len() as u64);
    eprintln!(
        "bench: {} runs; expect about {} min",
        opts.runs,
        estimate.div_ceil(60)
    );

    let mut runs = Vec::new();
    for r in 0..opts.runs {
        let mut run = Run::default();
        let auto = lineup.specs.iter().find(|s| s.plain_oomtrace);
        for i in 0..opts.startups {
            let Some(spec) = auto else { break };
            let res = measure_startup(&ctx, spec, r, i).map_err(|e| format!("{e:#}"));
            if let Err(e) = &res {
                eprintln!("bench:   start-up {} failed: {e}", i + 1);
            }
            run.startups.push(res);
        }
        let ms: Vec<f64> = run.startups.iter().flatten().map(|s| s.read_ms).collect();
        if let Some(st) = stats::Stats::new(ms.iter().copied()) {
            eprintln!(
                "bench: run {}/{}: oomtrace start-up, median of {}: {:.1} ms [{:.1}–{:.1}]",
                r + 1,
                opts.runs,
                ms.len(),
                st.median(),
                st.min(),
                st.max()
            );
        }
        for spec in lineup.specs.iter().filter(|s| s.alone) {
            eprintln!(
                "bench: run {}/{}: {} alone ({} s idle)",
                r + 1,
                opts.runs,
                spec.id,
                opts.idle.as_secs()
            );
            let res = measure_alone(&ctx, spec, r).map_err(|e| format!("{e:#}"));
            match &res {
                Ok(a) => eprintln!(
                    "bench:   start-up {:.1} ms, idle RSS {:.1} MiB, idle CPU {:.3} %",
                    a.startup_read_ms,
                    a.idle_rss_kib as f64 / 1024.0,
                    a.idle_cpu_pct
                ),
                Err(e) => eprintln!("bench:   failed: {e}"),
            }
            run.alone.insert(spec.id.clone(), res);
        }
        // Alone on the hook: no other program warms (or cools) the caches for it.
        for spec in &lineup.specs {
            eprintln!(
                "bench: run {}/{}: {} alone, {} OOM kills",
                r + 1,
                opts.runs,
                spec.id,
                opts.solo_kills
            );
            let s = storm_session(&ctx, &[spec], r, opts.solo_kills, "solo")
                .with_context(|| format!("failed the solo storm of {} in run {}", spec.id, r + 1))?;
            progress(&s);
            run.solo.push(s);
        }
        // Rotate the attach order: programs on one hook run in attach order, and the first one
        // takes the cache misses on the victim's task_struct, stacks and ELF build ids.
        let mut order: Vec<&Spec> = lineup.specs.iter().filter(|s| s.shared).collect();
        let shift = r as usize % order.len().max(1);
        order.rotate_left(shift);
        for &kills in &opts.storms {
            eprintln!(
                "bench: run {}/{}: storm of {kills} OOM kills, {} contenders watching",
                r + 1,
                opts.runs,
                order.len()
            );
            let s = storm_session(&ctx, &order, r, kills, "shared")
                .with_context(|| format!("failed the {kills}-kill storm of run {}", r + 1))?;
            progress(&s);
            run.sessions.push(s);
        }
        runs.push(run);
    }

    let sizes = lineup
        .specs
        .iter()
        .filter_map(|s| {
            let path = match s.family {
                Family::Oomtrace => &bins.oomtrace,
                Family::Bpftrace => bins.bpftrace.as_ref().ok()?,
                Family::Kmsg => bins.kmsg.as_ref().ok()?,
                Family::Floor => bins.floor.as_ref().ok()?,
            };
            Some((s.id.clone(), kernel::binary_size(path).ok()?))
        })
        .collect();
    // What else the machine did meanwhile (other people's builds, VMs, tests): CPU time that was
    // neither ours nor our children's.
    let others_cpu_pct = machine0.zip(kernel::machine_ticks()).map(|((b0, a0), (b1, a1))| {
        let hz = kernel::ticks_per_second() as f64;
        let busy = (b1 - b0) as f64 / hz;
        let all = (a1 - a0) as f64 / hz;
        ((busy - (kernel::own_cpu_seconds() - own0)).max(0.0) / all * 100.0).min(100.0)
    });
    let report = report::Report {
        date: sys::utc_now(),
        kernel: sys::kernel_release()?,
        cpus: thread::available_parallelism().map_or(0, usize::from),
        hierarchy_version: hierarchy.version,
        cgroup_limit: CGROUP_LIMIT,
        hog_step_kb: HOG_STEP_KB,
        storms: opts.storms.clone(),
        solo_kills: opts.solo_kills,
        idle_seconds: opts.idle.as_secs(),
        lineup: &lineup,
        runs: &runs,
        sizes,
        mono_offset_ns: ctx.mono_offset_ns,
        bpf_stats_sysctl: (stats_before, kernel::bpf_stats_sysctl()),
        loadavg: (
            loadavg_before.trim().to_owned(),
            fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .trim()
                .to_owned(),
        ),
        build_seconds,
        bench_seconds: t_bench.elapsed().as_secs_f64(),
        others_cpu_pct,
        startups: opts.startups,
        command: opts.command.clone(),
        source,
    };
    print!("{}", report.markdown());
    report::write_json(&opts.json, &report.to_json())
}

fn progress(s: &Session) {
    for (id, o) in &s.obs {
        eprintln!(
            "bench:   {id}: {}/{} full{}{}",
            o.delivered_full,
            s.kernel_kills(),
            report::latency_note(o),
            o.error
                .as_deref()
                .map(|e| format!(", ERROR: {e}"))
                .unwrap_or_default()
        );
    }
}

/// Starts each contender once: which run here, which mode oomtrace's auto picks, and why the
/// others cannot run.
fn lineup(ctx: &Ctx<'_>, breakdown: bool) -> Result<Lineup> {
    let bins = ctx.bins;
    let probe = |spec: &Spec| {
        contender::probe(
            spec,
            &ctx.logs.join(format!("probe-{}.stderr", spec.id)),
            START_TIMEOUT,
            STOP_TIMEOUT,
            ctx.mono_offset_ns,
        )
    };
    let oomtrace = |id: &str, args: &[&str], hook: Hook, alone: bool| Spec {
        id: id.to_owned(),
        label: String::new(),
        family: Family::Oomtrace,
        program: bins.oomtrace.clone(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        hook,
        alone,
        shared: true,
        freeze: false,
        plain_oomtrace: false,
    };

    let mut auto = oomtrace("oomtrace", &["run"], Hook::TpBtf, true);
    auto.plain_oomtrace = true;
    let seen = probe(&auto).context("failed to start oomtrace (`oomtrace run`); nothing to benchmark")?;
    let auto_mode = seen.attach_mode.clone().unwrap_or_else(|| "unknown".to_owned());
    auto.hook = Hook::from_mode(&auto_mode);
    auto.label = format!("oomtrace (auto: {auto_mode})");
    let mut lineup = Lineup {
        specs: vec![auto],
        absent: Vec::new(),
        notes: Vec::new(),
        auto_mode: auto_mode.clone(),
        auto_fallbacks: seen.fallbacks,
    };

    for mode in ["fentry", "kprobe", "tp_btf", "tracepoint"] {
        let label = format!("oomtrace --attach {mode}");
        if mode == auto_mode {
            lineup.notes.push(format!(
                "`{label}` is what auto chose here: measured once, as auto."
            ));
            continue;
        }
        // fentry and kprobe modes hook mark_victim with tp_btf too.
        let hook = if mode == "tracepoint" {
            Hook::Tracepoint
        } else {
            Hook::TpBtf
        };
        let mut spec = oomtrace(
            &format!("oomtrace-{mode}"),
            &["run", "--attach", mode],
            hook,
            true,
        );
        spec.label = label.clone();
        match probe(&spec) {
            Ok(_) => lineup.specs.push(spec),
            Err(e) => lineup.absent.push((label, format!("{e:#}"))),
        }
    }
    let mut nus = oomtrace(
        "oomtrace-no-user-stacks",
        &["run", "--no-user-stacks"],
        Hook::from_mode(&auto_mode),
        false,
    );
    nus.label = format!("oomtrace --no-user-stacks ({auto_mode})");
    match probe(&nus) {
        Ok(_) => lineup.specs.push(nus),
        Err(e) => lineup.absent.push((nus.label, format!("{e:#}"))),
    }

    // Reader stopped during the storm: the programs' cost without any ring-buffer wakeup, held
    // against the floors that do not wake theirs (which program of a kill pays the wakeup varies). The
    // ring buffer holds the whole storm meanwhile (about 3 KiB of records per kill).
    let ring = (u64::from(ctx.solo_kills) * (8 << 10))
        .next_power_of_two()
        .clamp(4 << 20, 1 << 30);
    let ring = ring.to_string();
    for (id, label, extra) in [
        (
            "oomtrace-frozen",
            format!("oomtrace ({auto_mode}), reader stopped"),
            None,
        ),
        (
            "oomtrace-no-user-stacks-frozen",
            format!("oomtrace --no-user-stacks ({auto_mode}), reader stopped"),
            Some("--no-user-stacks"),
        ),
    ] {
        let mut args = vec!["run", "--ring-size", ring.as_str()];
        args.extend(extra);
        let mut spec = oomtrace(id, &args, Hook::from_mode(&auto_mode), false);
        spec.label = label;
        spec.shared = false;
        spec.freeze = true;
        match probe(&spec) {
            Ok(_) => lineup.specs.push(spec),
            Err(e) => lineup.absent.push((spec.label, format!("{e:#}"))),
        }
    }

    let mut other =
        |id: &str, label: &str, family, program: &Result<PathBuf, String>, args: &[String], hook, flags| {
            let (alone, shared): (bool, bool) = flags;
            let program = match program {
                Ok(p) => p.clone(),
                Err(reason) => {
                    lineup.absent.push((label.to_owned(), reason.clone()));
                    return;
                }
            };
            let spec = Spec {
                id: id.to_owned(),
                label: label.to_owned(),
                family,
                program,
                args: args.to_vec(),
                hook,
                alone,
                shared,
                freeze: false,
                plain_oomtrace: false,
            };
            match probe(&spec) {
                Ok(_) => lineup.specs.push(spec),
                Err(e) => lineup.absent.push((label.to_owned(), format!("{e:#}"))),
            }
        };
    let script = bins.bpftrace_script.to_string_lossy().into_owned();
    other(
        "bpftrace",
        "bpftrace (tracepoint)",
        Family::Bpftrace,
        &bins.bpftrace,
        &[script],
        Hook::Tracepoint,
        (true, true),
    );
    other(
        "kmsg",
        "/dev/kmsg scraper (kubelet)",
        Family::Kmsg,
        &bins.kmsg,
        &[],
        Hook::Kmsg,
        (true, true),
    );
    let floor = |attach: &str, variant: &str| {
        ["--attach", attach, "--variant", variant]
            .iter()
            .map(|s| (*s).to_owned())
            .collect::<Vec<_>>()
    };
    other(
        "floor-tp_btf",
        "C floor (tp_btf)",
        Family::Floor,
        &bins.floor,
        &floor("tp_btf", "plain"),
        Hook::TpBtf,
        (true, true),
    );
    other(
        "floor-tracepoint",
        "C floor (tracepoint)",
        Family::Floor,
        &bins.floor,
        &floor("tracepoint", "plain"),
        Hook::Tracepoint,
        (false, true),
    );
    // The like-for-like floor: what oomtrace captures at mark_victim (kernel stack, one user
    // stack, the memcg walk), waking its reader. The target compares oomtrace's mark_victim with it.
    other(
        "floor-like",
        "C floor, like for like: + kernel stack + user stack + memcg walk, waking (tp_btf)",
        Family::Floor,
        &bins.floor,
        &floor("tp_btf", "like"),
        Hook::TpBtf,
        (false, false),
    );
    // Both floors without the wakeup, against oomtrace with its reader stopped.
    other(
        "floor-like-nowake",
        "C floor, like for like, without the reader's wakeup (tp_btf)",
        Family::Floor,
        &bins.floor,
        &floor("tp_btf", "like-nowake"),
        Hook::TpBtf,
        (false, false),
    );
    other(
        "floor-nowake",
        "C floor without the reader's wakeup (tp_btf)",
        Family::Floor,
        &bins.floor,
        &floor("tp_btf", "nowake"),
        Hook::TpBtf,
        (false, false),
    );
    if !breakdown {
        return Ok(lineup);
    }
    // The floor plus oomtrace's captures, one at a time: where oomtrace's eBPF time goes.
    other(
        "floor-kstack",
        "C floor + kernel stack (tp_btf)",
        Family::Floor,
        &bins.floor,
        &floor("tp_btf", "kstack"),
        Hook::TpBtf,
        (false, false),
    );
    other(
        "floor-memcg",
        "C floor + kernel stack + memcg walk (tp_btf)",
        Family::Floor,
        &bins.floor,
        &floor("tp_btf", "memcg"),
        Hook::TpBtf,
        (false, false),
    );
    other(
        "floor-stacks",
        "C floor + kernel, user and build-id stacks (tp_btf)",
        Family::Floor,
        &bins.floor,
        &floor("tp_btf", "stacks"),
        Hook::TpBtf,
        (false, false),
    );
    Ok(lineup)
}

/// One start-up: exec → the `start` line, then a stop.
fn measure_startup(ctx: &Ctx<'_>, spec: &Spec, run: u32, i: u32) -> Result<Startup> {
    let log = ctx.logs.join(format!("startup-{}-{run}-{i}.stderr", spec.id));
    let mut w = Watch::spawn(spec, &log, ctx.mono_offset_ns)?;
    let ready = w.wait_ready(START_TIMEOUT)?;
    let spawned = w.spawned_ns();
    stop_or_note(&mut w)?;
    // The kernel frees a closed program's maps and links after an RCU grace period, off this
    // thread: let the last start-up's teardown finish before the next one is timed.
    thread::sleep(STARTUP_GAP);
    Ok(Startup {
        read_ms: ms_between(spawned, ready.read_ns),
        own_ms: ready.own_ns.map(|o| ms_between(spawned, o)),
    })
}

/// The commit the binaries were built from, and the files of the built crates that differed
/// from it (other engineers' work in progress in a shared tree).
pub struct SourceState {
    pub commit: Option<String>,
    pub subject: Option<String>,
    pub dirty: Vec<String>,
    /// The state when the build started, if it differed.
    pub before_build: Option<Box<SourceState>>,
}

fn source_state(workspace: &Path) -> SourceState {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(workspace)
            .args(args)
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    SourceState {
        commit: git(&["rev-parse", "--short=12", "HEAD"]),
        subject: git(&["log", "-1", "--format=%s"]).map(|s| s.chars().take(100).collect()),
        dirty: git(&[
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            "oomtrace",
            "oomtrace-ebpf",
            "oomtrace-common",
            "bench",
            "xtask",
        ])
        .map(|s| s.lines().map(|l| l.trim().to_owned()).collect())
        .unwrap_or_default(),
        before_build: None,
    }
}

/// One contender alone: exec → ready, then idle RSS and CPU.
fn measure_alone(ctx: &Ctx<'_>, spec: &Spec, run: u32) -> Result<Alone> {
    let log = ctx.logs.join(format!("alone-{}-{run}.stderr", spec.id));
    let mut w = Watch::spawn(spec, &log, ctx.mono_offset_ns)?;
    let ready = w.wait_ready(START_TIMEOUT)?;
    let spawned = w.spawned_ns();
    let pump_for = |w: &mut Watch, d: Duration| -> Result<()> {
        let until = Instant::now() + d;
        while Instant::now() < until {
            w.pump(
                until
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(500)),
            )?;
        }
        Ok(())
    };
    pump_for(&mut w, SETTLE)?;
    let pid = w.pid();
    let ticks0 = kernel::cpu_ticks(pid)?;
    let t0 = Instant::now();
    pump_for(&mut w, ctx.idle)?;
    let ticks1 = kernel::cpu_ticks(pid)?;
    let idle_seconds = t0.elapsed().as_secs_f64();
    let idle_rss_kib = sys::vm_rss_kib(pid)?;
    stop_or_note(&mut w)?;
    let idle_cpu_ticks = ticks1.saturating_sub(ticks0);
    Ok(Alone {
        startup_read_ms: ms_between(spawned, ready.read_ns),
        startup_own_ms: ready.own_ns.map(|o| ms_between(spawned, o)),
        idle_rss_kib,
        idle_cpu_ticks,
        idle_seconds,
        idle_cpu_pct: idle_cpu_ticks as f64 / kernel::ticks_per_second() as f64 / idle_seconds * 100.0,
    })
}

/// One storm with every contender attached: fresh contenders, fresh cgroup.
fn storm_session(ctx: &Ctx<'_>, order: &[&Spec], run: u32, kills: u32, tag: &str) -> Result<Session> {
    let name = format!("oomtrace-bench-{}-{tag}-{run}-{kills}", std::process::id());
    let cg = BenchCgroup::create(ctx.hierarchy, &ctx.parent, &name, CGROUP_LIMIT)?;
    let mut obs: BTreeMap<String, Obs> = BTreeMap::new();
    let mut watches: Vec<Watch> = Vec::new();
    // One after the other, each ready before the next starts: no start-up contention, and the
    // attach order is the spawn order.
    for spec in order {
        let log = ctx.logs.join(format!("{tag}-{}-{run}-{kills}.stderr", spec.id));
        let started = Watch::spawn(spec, &log, ctx.mono_offset_ns).and_then(|mut w| {
            w.wait_ready(START_TIMEOUT)?;
            Ok(w)
        });
        match started {
            Ok(w) => watches.push(w),
            Err(e) => {
                obs.insert(
                    spec.id.clone(),
                    Obs {
                        error: Some(format!("failed to start: {e:#}")),
                        ..Obs::default()
                    },
                );
            }
        }
    }
    // The others may fail and be reported; without oomtrace itself there is no benchmark.
    if let Some(e) = order
        .iter()
        .filter(|s| s.plain_oomtrace)
        .find_map(|s| obs.get(&s.id)?.error.clone())
    {
        bail!("oomtrace (auto) did not start: {e}");
    }

    if order.iter().any(|s| s.family == Family::Kmsg) {
        let quiet = ctx.last_kill.get().map_or(Duration::ZERO, |t| t.elapsed());
        thread::sleep(RATELIMIT_GAP.saturating_sub(quiet));
    }
    let mut errors: HashMap<String, String> = HashMap::new();
    // FIRST_KILL_GAP before the storm, bpf_stats still off (other processes' exits and signals
    // would count), reading meanwhile: a contender must not block on a full pipe.
    let gap_until = Instant::now() + FIRST_KILL_GAP;
    while Instant::now() < gap_until {
        for w in &mut watches {
            if !errors.contains_key(&w.spec.id)
                && let Err(e) = w.pump(Duration::from_millis(20))
            {
                errors.insert(w.spec.id.clone(), format!("{e:#}"));
            }
        }
    }
    let before: Vec<Vec<ProgStat>> = watches
        .iter()
        .map(|w| kernel::bpf_progs(w.pid()).unwrap_or_default())
        .collect();
    let ours: HashSet<u32> = before.iter().flatten().map(|p| p.id).collect();
    let foreign = wait_for_foreign_tracers(&ours);
    let stats = kernel::BpfStats::enable()?;

    let frozen: Vec<u32> = watches.iter().filter(|w| w.spec.freeze).map(Watch::pid).collect();
    for pid in &frozen {
        // SAFETY: kill has no memory-safety preconditions; the contender is our unreaped child.
        unsafe { libc::kill(*pid as i32, libc::SIGSTOP) };
    }
    let storm = storm(&ctx.bins.hog, &cg, kills);
    for pid in &frozen {
        // SAFETY: as above.
        unsafe { libc::kill(*pid as i32, libc::SIGCONT) };
    }
    let storm = storm?;
    ctx.last_kill.set(Some(Instant::now()));
    let want: HashSet<u32> = storm.pids.iter().copied().collect();
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    loop {
        let mut all = true;
        for w in &mut watches {
            if errors.contains_key(&w.spec.id) {
                continue;
            }
            if let Err(e) = w.pump(Duration::from_millis(5)) {
                errors.insert(w.spec.id.clone(), format!("{e:#}"));
                continue;
            }
            all &= want.iter().all(|p| w.seen.kills.contains_key(p));
        }
        if all || Instant::now() >= deadline {
            break;
        }
    }
    // A moment for trailing lines (kmsg's one-liners come after its full reports).
    for w in &mut watches {
        if !errors.contains_key(&w.spec.id)
            && let Err(e) = w.pump(Duration::from_millis(200))
        {
            errors.insert(w.spec.id.clone(), format!("{e:#}"));
        }
    }
    let after: Vec<Vec<ProgStat>> = watches
        .iter()
        .map(|w| kernel::bpf_progs(w.pid()).unwrap_or_default())
        .collect();
    drop(stats);
    let names = kernel::prog_names().unwrap_or_else(|e| {
        eprintln!("bench: warning: eBPF program names unknown: {e:#}");
        HashMap::new()
    });
    let rss: Vec<Option<u64>> = watches.iter().map(|w| sys::vm_rss_kib(w.pid()).ok()).collect();
    let mut exits: Vec<Option<String>> = Vec::new();
    for w in &mut watches {
        match stop_or_note(w) {
            Ok(s) => exits.push(Some(s)),
            Err(e) => {
                errors.entry(w.spec.id.clone()).or_insert(format!("{e:#}"));
                exits.push(None);
            }
        }
    }
    let cgroup_kills = cgroup_oom_kills(ctx.hierarchy, cg.dir());
    let cgroup_id = cg.id();
    drop(cg);

    // The kernel's mark_victim time of each victim, from whichever contender printed one.
    let mut kill_ns: HashMap<u32, u64> = HashMap::new();
    for w in &watches {
        for (pid, k) in &w.seen.kills {
            if let Some(ns) = k.kill_ns {
                let e = kill_ns.entry(*pid).or_insert(ns);
                *e = (*e).min(ns);
            }
        }
    }
    for (i, w) in watches.iter().enumerate() {
        let mine = storm
            .pids
            .iter()
            .filter_map(|p| w.seen.kills.get(p).map(|k| (p, k)));
        let first_kills_ms = storm
            .pids
            .iter()
            .take(FIRST_KILLS)
            .map(|p| {
                let k = w.seen.kills.get(p)?;
                let kill = k.kill_ns.or_else(|| kill_ns.get(p).copied())?;
                Some(ms_between(kill, k.read_ns))
            })
            .collect();
        let mut o = Obs {
            first_kills_ms,
            lost: w.seen.lost,
            rss_after_kib: rss[i],
            exit: exits[i].clone(),
            error: errors.get(&w.spec.id).cloned(),
            ..Obs::default()
        };
        for (pid, k) in mine {
            o.delivered_any += 1;
            // oomtrace's detail must also be right: the victim in the storm's cgroup.
            let right_cgroup = w.spec.family != Family::Oomtrace || k.cgroup_id == Some(cgroup_id);
            o.delivered_full += u64::from(k.full && right_cgroup);
            for field in &k.missing {
                *o.missing.entry((*field).to_owned()).or_default() += 1;
            }
            if k.full && !right_cgroup {
                *o.missing
                    .entry("victim.cgroup.id (not the storm's)".to_owned())
                    .or_default() += 1;
            }
            o.oneline += u64::from(k.oneline);
            if let Some(kill) = k.kill_ns.or_else(|| kill_ns.get(pid).copied()) {
                o.latencies_ms.push(ms_between(kill, k.read_ns));
                if let Some(us) = k.kmsg_us {
                    let ts = (us * 1000) as i64 + ctx.mono_offset_ns;
                    o.kmsg_ts_minus_kill_ms.push((ts - kill as i64) as f64 / 1e6);
                }
            }
        }
        o.progs = prog_deltas(&before[i], &after[i], &names);
        obs.insert(w.spec.id.clone(), o);
    }
    Ok(Session {
        kills,
        cgroup_kills,
        vmstat_kills: storm.vmstat_kills,
        irq_work: storm.irq_work,
        seconds: storm.seconds,
        order: order.iter().map(|s| s.id.clone()).collect(),
        obs,
        foreign,
    })
}

/// eBPF programs of OOM tracers that are not ours (by name: oomtrace's, bpftrace's, the floor's).
fn foreign_tracers(ours: &HashSet<u32>) -> Vec<String> {
    let Ok(names) = kernel::prog_names() else {
        return Vec::new();
    };
    let mut found: Vec<String> = names
        .into_iter()
        .filter(|(id, name)| {
            !ours.contains(id)
                && (name.contains("mark_victim") || name.starts_with("floor_") || name.contains("oom"))
        })
        .map(|(id, name)| format!("{name} (id {id})"))
        .collect();
    found.sort();
    found
}

/// Waits (up to a minute) for other OOM tracers on this machine to go away: their programs on
/// the same hooks would be measured with ours. Returns those still there.
fn wait_for_foreign_tracers(ours: &HashSet<u32>) -> Vec<String> {
    let deadline = Instant::now() + FOREIGN_WAIT;
    let mut said = false;
    loop {
        let found = foreign_tracers(ours);
        if found.is_empty() || Instant::now() >= deadline {
            if !found.is_empty() {
                eprintln!(
                    "bench: warning: measuring with other OOM tracers attached: {}",
                    found.join(", ")
                );
            }
            return found;
        }
        if !said {
            eprintln!(
                "bench: waiting up to {} s for other OOM tracers to detach: {}",
                FOREIGN_WAIT.as_secs(),
                found.join(", ")
            );
            said = true;
        }
        thread::sleep(Duration::from_secs(1));
    }
}

/// Stops a contender once its figures are taken. oomtrace must stop cleanly (exit 0 on SIGINT);
/// another contender that is slow to stop or exits otherwise keeps its figures, with a note.
fn stop_or_note(w: &mut Watch) -> Result<String> {
    match w.stop(STOP_TIMEOUT) {
        Ok(s) => Ok(s),
        Err(e) if w.spec.family != Family::Oomtrace => {
            eprintln!("bench: warning: {} did not stop cleanly: {e:#}", w.spec.id);
            Ok(format!("did not stop cleanly: {e:#}"))
        }
        Err(e) => Err(e),
    }
}

fn prog_deltas(before: &[ProgStat], after: &[ProgStat], names: &HashMap<u32, String>) -> Vec<ProgRun> {
    after
        .iter()
        .map(|a| {
            let b = before.iter().find(|b| b.id == a.id);
            ProgRun {
                name: names
                    .get(&a.id)
                    .cloned()
                    .unwrap_or_else(|| format!("id {}", a.id)),
                id: a.id,
                prog_type: a.prog_type,
                run_time_ns: a.run_time_ns - b.map_or(0, |b| b.run_time_ns.min(a.run_time_ns)),
                run_cnt: a.run_cnt - b.map_or(0, |b| b.run_cnt.min(a.run_cnt)),
            }
        })
        .collect()
}

/// `oom_kill N` of the cgroup's memory.oom_control (v1) or memory.events (v2).
fn cgroup_oom_kills(hierarchy: &Hierarchy, dir: &Path) -> Option<u64> {
    let file = if hierarchy.version == 1 {
        "memory.oom_control"
    } else {
        "memory.events"
    };
    fs::read_to_string(dir.join(file))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
}

struct Storm {
    pids: Vec<u32>,
    vmstat_kills: u64,
    irq_work: Option<u64>,
    seconds: f64,
}

/// Runs `kills` hogs one after the other in the cgroup; each must be OOM-killed.
fn storm(hog: &Path, cg: &BenchCgroup, kills: u32) -> Result<Storm> {
    let before = sys::vmstat_oom_kills()?;
    let iwi0 = kernel::irq_work_interrupts();
    let t0 = Instant::now();
    let mut pids = Vec::with_capacity(kills as usize);
    for i in 0..kills {
        let pid =
            run_hog(hog, cg.dir()).with_context(|| format!("failed to run hog {} of {kills}", i + 1))?;
        pids.push(pid);
    }
    let seconds = t0.elapsed().as_secs_f64();
    let after = sys::vmstat_oom_kills()?;
    let irq_work = iwi0
        .zip(kernel::irq_work_interrupts())
        .map(|(a, b)| b.saturating_sub(a));
    Ok(Storm {
        pids,
        vmstat_kills: after.saturating_sub(before),
        irq_work,
        seconds,
    })
}

fn run_hog(hog: &Path, cgroup: &Path) -> Result<u32> {
    let mut child = Command::new(hog)
        .arg("--cgroup")
        .arg(cgroup)
        .args(["--step-kb", HOG_STEP_KB])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("failed to start {}", hog.display()))?;
    let pid = child.id();
    let status = child.wait().context("failed to wait for oomtrace-hog")?;
    if status.signal() != Some(libc::SIGKILL) {
        bail!("oomtrace-hog exited with {status} instead of being OOM-killed (SIGKILL)");
    }
    Ok(pid)
}

/// `to - from` in ms (negative if the clocks disagree, which would be worth seeing).
fn ms_between(from_ns: u64, to_ns: u64) -> f64 {
    (i128::from(to_ns) - i128::from(from_ns)) as f64 / 1e6
}
