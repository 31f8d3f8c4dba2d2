//! `cargo xtask bench`: oomtrace measured against real OOM kills.
//!
//! Each run starts a fresh `oomtrace run` and a fresh memory cgroup (8 MiB) under our own, then
//! measures start-up, idle RSS, a storm of N kills (delivered vs the kernel's count, and the delay
//! from the kernel's mark_victim to the line reaching us), RSS after the storm, and a clean stop.
//! The summary is the median (min, max) over runs, next to the project's targets.

use std::{
    fmt::Write as _,
    fs,
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{
    memcg::{BenchCgroup, Hierarchy},
    stats::Stats,
    sys,
    tracer::{Stamped, Tracer},
};

pub struct Options {
    pub kills: u32,
    pub runs: u32,
    pub json: PathBuf,
}

const CGROUP_LIMIT: u64 = 8 << 20;
const HOG_STEP_KB: &str = "4096";
const START_TIMEOUT: Duration = Duration::from_secs(20);
const IDLE_WAIT: Duration = Duration::from_secs(2);
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

const TARGET_STARTUP_MS: f64 = 100.0;
const TARGET_IDLE_RSS_MIB: f64 = 12.0;
const TARGET_P99_MS: f64 = 5.0;

struct Binaries {
    oomtrace: PathBuf,
    hog: PathBuf,
}

/// What one run measured.
struct RunResult {
    /// The `start` record's boot_ns minus the spawn time.
    startup_ms: f64,
    /// From the spawn until we had read the `start` line.
    startup_line_ms: f64,
    attach_mode: String,
    idle_rss_kib: u64,
    /// `oom_kill` lines for the run's cgroup that arrived within the delivery timeout.
    delivered: u64,
    /// /proc/vmstat `oom_kill` delta over the storm.
    kernel_kills: u64,
    /// `oom_kill` lines for a victim pid already seen.
    duplicates: u64,
    lost_lines: u64,
    /// Sum of the `count` of the `lost` lines.
    lost_records: u64,
    /// Per kill: when we read the line minus the record's boot_ns.
    latencies_ms: Vec<f64>,
    rss_after_kib: u64,
    storm_seconds: f64,
}

impl RunResult {
    fn latency(&self) -> Option<Stats> {
        Stats::new(self.latencies_ms.iter().copied())
    }

    fn delivered_all(&self) -> bool {
        self.delivered == self.kernel_kills
    }

    fn to_json(&self) -> Value {
        let lat = self.latency();
        json!({
            "startup_ms": self.startup_ms,
            "startup_line_ms": self.startup_line_ms,
            "attach_mode": self.attach_mode,
            "idle_rss_kib": self.idle_rss_kib,
            "delivered": self.delivered,
            "kernel_kills": self.kernel_kills,
            "duplicates": self.duplicates,
            "lost_lines": self.lost_lines,
            "lost_records": self.lost_records,
            "latency_ms": {
                "p50": lat.as_ref().map(|s| s.percentile(50.0)),
                "p99": lat.as_ref().map(|s| s.percentile(99.0)),
                "max": lat.as_ref().map(Stats::max),
            },
            "latencies_ms": self.latencies_ms,
            "rss_after_kib": self.rss_after_kib,
            "storm_seconds": self.storm_seconds,
        })
    }
}

pub fn run(workspace: &Path, opts: &Options) -> Result<()> {
    sys::require_root()?;
    let hierarchy = Hierarchy::detect()
        .context("failed to find a cgroup hierarchy with the memory controller (the benchmark makes OOM kills in a memory cgroup)")?;
    let parent = hierarchy.own_dir()?;
    let bins = build(workspace)?;
    let binary_bytes = fs::metadata(&bins.oomtrace)
        .with_context(|| format!("failed to stat {}", bins.oomtrace.display()))?
        .len();

    let _lock = sys::kill_lock()?;
    let mut runs = Vec::new();
    for run in 0..opts.runs {
        eprintln!(
            "bench: run {}/{}: {} OOM kills in an 8 MiB cgroup",
            run + 1,
            opts.runs,
            opts.kills
        );
        let result = measure_run(&bins, &hierarchy, &parent, run, opts.kills)
            .with_context(|| format!("failed to complete run {} of {}", run + 1, opts.runs))?;
        eprintln!(
            "bench: run {}: start-up {:.1} ms, delivered {}/{}, p99 {}",
            run + 1,
            result.startup_ms,
            result.delivered,
            result.kernel_kills,
            result
                .latency()
                .map_or("n/a".to_owned(), |s| format!("{:.2} ms", s.percentile(99.0)))
        );
        runs.push(result);
    }

    let report = Report {
        date: sys::utc_now(),
        kernel: sys::kernel_release()?,
        hierarchy_version: hierarchy.version,
        kills: opts.kills,
        binary_bytes,
        runs: &runs,
    };
    print!("{}", report.markdown());
    write_json(&opts.json, &report.to_json())
}

/// Builds the two binaries the benchmark runs, in release mode.
fn build(workspace: &Path) -> Result<Binaries> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = workspace.join("target");
    eprintln!("bench: building oomtrace and oomtrace-hog (release)");
    let status = Command::new(&cargo)
        .current_dir(workspace)
        .args([
            "build",
            "--release",
            "-p",
            "oomtrace",
            "-p",
            "oomtrace-tests",
            "--target-dir",
        ])
        .arg(&target_dir)
        .status()
        .with_context(|| format!("failed to run {}", Path::new(&cargo).display()))?;
    if !status.success() {
        bail!("failed to build oomtrace and oomtrace-hog: cargo build exited with {status}");
    }
    let release = target_dir.join("release");
    let bins = Binaries {
        oomtrace: release.join("oomtrace"),
        hog: release.join("oomtrace-hog"),
    };
    for bin in [&bins.oomtrace, &bins.hog] {
        if !bin.is_file() {
            bail!("failed to find {} after the build", bin.display());
        }
    }
    Ok(bins)
}

/// One run: fresh cgroup, fresh oomtrace; both are cleaned up on every path out of here.
fn measure_run(
    bins: &Binaries,
    hierarchy: &Hierarchy,
    parent: &Path,
    run: u32,
    kills: u32,
) -> Result<RunResult> {
    let name = format!("oomtrace-bench-{}-{run}", std::process::id());
    let cg = BenchCgroup::create(hierarchy, parent, &name, CGROUP_LIMIT)?;
    let mut tracer = Tracer::spawn(&bins.oomtrace)?;

    let Start {
        startup_ms,
        startup_line_ms,
        attach_mode,
    } = wait_for_start(&mut tracer)?;

    thread::sleep(IDLE_WAIT);
    let idle_rss_kib = sys::vm_rss_kib(tracer.pid())?;

    let storm = storm(&bins.hog, &cg, kills)?;
    let id = cg.id();
    let want = kills as usize;
    tracer.wait_until(DELIVERY_TIMEOUT, |lines| kills_in(lines, id).count() >= want)?;
    let delivered = kills_in(tracer.lines(), id).count() as u64;
    let rss_after_kib = sys::vm_rss_kib(tracer.pid())?;

    let status = tracer.stop(STOP_TIMEOUT)?;
    if !status.success() {
        bail!("failed to stop oomtrace cleanly: it exited with {status} on SIGINT, expected exit 0");
    }
    let lines = tracer.lines();
    let lost: Vec<&Stamped> = lines.iter().filter(|l| l.kind() == "lost").collect();
    Ok(RunResult {
        startup_ms,
        startup_line_ms,
        attach_mode,
        idle_rss_kib,
        delivered,
        kernel_kills: storm.kernel_kills,
        duplicates: duplicates(kills_in(lines, id)),
        lost_lines: lost.len() as u64,
        lost_records: lost.iter().filter_map(|l| l.value["count"].as_u64()).sum(),
        latencies_ms: kills_in(lines, id)
            .filter_map(|l| Some(ms_between(l.boot_ns()?, l.read_ns)))
            .collect(),
        rss_after_kib,
        storm_seconds: storm.seconds,
    })
}

/// What the `start` record tells about start-up.
struct Start {
    startup_ms: f64,
    startup_line_ms: f64,
    attach_mode: String,
}

/// Waits for the `start` record and times it against the spawn.
fn wait_for_start(tracer: &mut Tracer) -> Result<Start> {
    let is_start = |l: &Stamped| l.kind() == "start";
    if !tracer.wait_until(START_TIMEOUT, |lines| lines.iter().any(is_start))? {
        bail!(
            "failed to start oomtrace: no start record within {} s (run `target/release/oomtrace run` by hand to see why)",
            START_TIMEOUT.as_secs()
        );
    }
    let spawned_ns = tracer.spawned_ns();
    let start = tracer
        .lines()
        .iter()
        .find(|l| is_start(l))
        .context("failed to find the start record")?;
    let boot_ns = start
        .boot_ns()
        .context("failed to read boot_ns from the start record")?;
    Ok(Start {
        startup_ms: ms_between(spawned_ns, boot_ns),
        startup_line_ms: ms_between(spawned_ns, start.read_ns),
        attach_mode: start.value["attach"]["mode"]
            .as_str()
            .unwrap_or("unknown")
            .to_owned(),
    })
}

struct Storm {
    kernel_kills: u64,
    seconds: f64,
}

/// Runs `kills` hogs one after the other in the cgroup; each should be OOM-killed.
fn storm(hog: &Path, cg: &BenchCgroup, kills: u32) -> Result<Storm> {
    let before = sys::vmstat_oom_kills()?;
    let t0 = Instant::now();
    for i in 0..kills {
        run_hog(hog, cg.dir()).with_context(|| format!("failed to run hog {} of {kills}", i + 1))?;
    }
    let seconds = t0.elapsed().as_secs_f64();
    let after = sys::vmstat_oom_kills()?;
    Ok(Storm {
        kernel_kills: after.saturating_sub(before),
        seconds,
    })
}

fn run_hog(hog: &Path, cgroup: &Path) -> Result<()> {
    let status = Command::new(hog)
        .arg("--cgroup")
        .arg(cgroup)
        .args(["--step-kb", HOG_STEP_KB])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("failed to start {}", hog.display()))?;
    if status.signal() != Some(libc::SIGKILL) {
        bail!("oomtrace-hog exited with {status} instead of being OOM-killed (SIGKILL)");
    }
    Ok(())
}

/// The `oom_kill` lines whose victim sat in cgroup `id`.
fn kills_in(lines: &[Stamped], id: u64) -> impl Iterator<Item = &Stamped> {
    lines
        .iter()
        .filter(move |l| l.kind() == "oom_kill" && l.value["victim"]["cgroup"]["id"].as_u64() == Some(id))
}

/// How many of the kill lines name a victim pid an earlier line already named.
fn duplicates<'a>(kills: impl Iterator<Item = &'a Stamped>) -> u64 {
    let mut seen = std::collections::HashSet::new();
    kills
        .filter(|l| !seen.insert(l.value["victim"]["pid"].as_u64()))
        .count() as u64
}

/// `to - from` in ms (negative if the clocks disagree, which would be worth seeing).
fn ms_between(from_ns: u64, to_ns: u64) -> f64 {
    (i128::from(to_ns) - i128::from(from_ns)) as f64 / 1e6
}

fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("failed to create directory {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(value).context("failed to serialize the results")?;
    fs::write(path, text + "\n").with_context(|| format!("failed to write {}", path.display()))?;
    eprintln!("bench: raw numbers in {}", path.display());
    Ok(())
}

/// A metric with one value per run and, maybe, a target its median must meet.
struct Row {
    key: &'static str,
    label: &'static str,
    values: Vec<f64>,
    decimals: usize,
    target: Option<Target>,
}

struct Target {
    label: String,
    met: fn(f64) -> bool,
}

impl Row {
    fn new(key: &'static str, label: &'static str, values: Vec<f64>, decimals: usize) -> Self {
        Self {
            key,
            label,
            values,
            decimals,
            target: None,
        }
    }

    fn below(mut self, limit: f64, unit: &str, met: fn(f64) -> bool) -> Self {
        self.target = Some(Target {
            label: format!("< {limit} {unit}"),
            met,
        });
        self
    }

    fn stats(&self) -> Option<Stats> {
        Stats::new(self.values.iter().copied())
    }

    fn met(&self) -> Option<bool> {
        Some((self.target.as_ref()?.met)(self.stats()?.median()))
    }

    fn runs_meeting(&self) -> usize {
        self.target
            .as_ref()
            .map_or(0, |t| self.values.iter().filter(|v| (t.met)(**v)).count())
    }

    fn markdown(&self) -> String {
        let fmt = |v: f64| format!("{v:.*}", self.decimals);
        let (median, min, max) = match self.stats() {
            Some(s) => (fmt(s.median()), fmt(s.min()), fmt(s.max())),
            None => ("n/a".to_owned(), "n/a".to_owned(), "n/a".to_owned()),
        };
        let (target, met) = match (&self.target, self.met()) {
            (Some(t), Some(met)) => (
                t.label.clone(),
                format!(
                    "{} ({}/{} runs)",
                    yes_no(met),
                    self.runs_meeting(),
                    self.values.len()
                ),
            ),
            (Some(t), None) => (t.label.clone(), "n/a".to_owned()),
            (None, _) => ("–".to_owned(), "–".to_owned()),
        };
        format!(
            "| {} | {median} | {min} | {max} | {target} | {met} |\n",
            self.label
        )
    }

    fn to_json(&self) -> Value {
        let s = self.stats();
        json!({
            "median": s.as_ref().map(Stats::median),
            "min": s.as_ref().map(Stats::min),
            "max": s.as_ref().map(Stats::max),
            "target": self.target.as_ref().map(|t| t.label.clone()),
            "met": self.met(),
        })
    }
}

fn yes_no(met: bool) -> &'static str {
    if met { "yes" } else { "**no**" }
}

struct Report<'a> {
    date: String,
    kernel: String,
    hierarchy_version: u8,
    kills: u32,
    binary_bytes: u64,
    runs: &'a [RunResult],
}

impl Report<'_> {
    fn attach_modes(&self) -> Vec<&str> {
        let mut modes: Vec<&str> = Vec::new();
        for r in self.runs {
            if !modes.contains(&r.attach_mode.as_str()) {
                modes.push(&r.attach_mode);
            }
        }
        modes
    }

    fn per_run(&self, f: impl Fn(&RunResult) -> Option<f64>) -> Vec<f64> {
        self.runs.iter().filter_map(f).collect()
    }

    fn latency_row(&self, key: &'static str, label: &'static str, f: fn(&Stats) -> f64) -> Row {
        Row::new(key, label, self.per_run(|r| r.latency().as_ref().map(f)), 2)
    }

    fn rows(&self) -> Vec<Row> {
        vec![
            Row::new(
                "startup_ms",
                "Start-up to `start` record (ms)",
                self.per_run(|r| Some(r.startup_ms)),
                1,
            )
            .below(TARGET_STARTUP_MS, "ms", |v| v < TARGET_STARTUP_MS),
            Row::new(
                "startup_line_ms",
                "Start-up to `start` line read (ms)",
                self.per_run(|r| Some(r.startup_line_ms)),
                1,
            ),
            Row::new(
                "idle_rss_mib",
                "Idle RSS (MiB)",
                self.per_run(|r| Some(kib_to_mib(r.idle_rss_kib))),
                1,
            )
            .below(TARGET_IDLE_RSS_MIB, "MiB", |v| v < TARGET_IDLE_RSS_MIB),
            self.latency_row("latency_p50_ms", "Latency p50 (ms)", |s| s.percentile(50.0)),
            self.latency_row("latency_p99_ms", "Latency p99 (ms)", |s| s.percentile(99.0))
                .below(TARGET_P99_MS, "ms", |v| v < TARGET_P99_MS),
            self.latency_row("latency_max_ms", "Latency max (ms)", Stats::max),
            Row::new(
                "rss_after_storm_mib",
                "RSS after storm (MiB)",
                self.per_run(|r| Some(kib_to_mib(r.rss_after_kib))),
                1,
            ),
            Row::new(
                "storm_kills_per_s",
                "Storm rate (kills/s)",
                self.per_run(|r| (r.storm_seconds > 0.0).then(|| r.kernel_kills as f64 / r.storm_seconds)),
                0,
            ),
            Row::new(
                "binary_mib",
                "Binary size, release (MiB)",
                vec![self.binary_bytes as f64 / f64::from(1 << 20)],
                1,
            ),
        ]
    }

    /// Delivered/kernel per run, ordered by ratio: the (lower) median run, the worst and the best.
    fn delivered_markdown(&self) -> String {
        let mut by_ratio: Vec<&RunResult> = self.runs.iter().collect();
        by_ratio.sort_by(|a, b| ratio(a).total_cmp(&ratio(b)));
        let cell = |r: &RunResult| format!("{}/{}", r.delivered, r.kernel_kills);
        let (Some(worst), Some(best)) = (by_ratio.first(), by_ratio.last()) else {
            return String::new();
        };
        let median = by_ratio[(by_ratio.len() - 1) / 2];
        let (delivered, kernel) = self.delivered_totals();
        let all = self.runs.iter().all(RunResult::delivered_all);
        let runs_ok = self.runs.iter().filter(|r| r.delivered_all()).count();
        format!(
            "| Delivered / kernel kills | {} | {} | {} | 100% | {} ({runs_ok}/{} runs; {delivered}/{kernel} in all) |\n",
            cell(median),
            cell(worst),
            cell(best),
            yes_no(all),
            self.runs.len(),
        )
    }

    fn delivered_totals(&self) -> (u64, u64) {
        (
            self.runs.iter().map(|r| r.delivered).sum(),
            self.runs.iter().map(|r| r.kernel_kills).sum(),
        )
    }

    fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "## oomtrace benchmark\n");
        let _ = writeln!(out, "- date: {}", self.date);
        let _ = writeln!(out, "- kernel (`uname -r`): {}", self.kernel);
        let _ = writeln!(out, "- attach mode: {}", self.attach_modes().join(", "));
        let _ = writeln!(
            out,
            "- {} runs × {} OOM kills (oomtrace-hog, {HOG_STEP_KB} KiB steps) in an 8 MiB cgroup v{} memory cgroup; \
             median, min and max over runs\n",
            self.runs.len(),
            self.kills,
            self.hierarchy_version,
        );
        out.push_str("| Metric | Median | Min | Max | Target | Met |\n");
        out.push_str("|---|---:|---:|---:|---|---|\n");
        let rows = self.rows();
        for (i, row) in rows.iter().enumerate() {
            out.push_str(&row.markdown());
            // Delivery goes after the resource rows, before the latencies.
            if i == 2 {
                out.push_str(&self.delivered_markdown());
            }
        }
        let lost: u64 = self.runs.iter().map(|r| r.lost_records).sum();
        let lost_lines: u64 = self.runs.iter().map(|r| r.lost_lines).sum();
        let dups: u64 = self.runs.iter().map(|r| r.duplicates).sum();
        let _ = writeln!(
            out,
            "\nLatency: time we read the `oom_kill` line minus its `boot_ns` (the kernel's mark_victim), CLOCK_BOOTTIME. \
             Lost records reported by oomtrace: {lost} (in {lost_lines} `lost` lines); duplicate kill lines: {dups}."
        );
        out
    }

    fn to_json(&self) -> Value {
        let (delivered, kernel) = self.delivered_totals();
        let mut summary = serde_json::Map::new();
        for row in self.rows() {
            summary.insert(row.key.to_owned(), row.to_json());
        }
        summary.insert(
            "delivered".to_owned(),
            json!({
                "delivered": delivered,
                "kernel_kills": kernel,
                "target": "100%",
                "met": self.runs.iter().all(RunResult::delivered_all),
            }),
        );
        json!({
            "date": self.date,
            "kernel": self.kernel,
            "attach_modes": self.attach_modes(),
            "cgroup_version": self.hierarchy_version,
            "cgroup_limit_bytes": CGROUP_LIMIT,
            "hog_step_kb": HOG_STEP_KB.parse::<u64>().ok(),
            "kills_per_run": self.kills,
            "binary_bytes": self.binary_bytes,
            "summary": summary,
            "runs": self.runs.iter().map(RunResult::to_json).collect::<Vec<_>>(),
        })
    }
}

fn ratio(r: &RunResult) -> f64 {
    r.delivered as f64 / r.kernel_kills.max(1) as f64
}
