//! The benchmark's report: a Markdown table with one column per contender (median [min–max] over
//! runs), the targets, where oomtrace's eBPF time goes, and the raw numbers as JSON.

use std::{collections::BTreeMap, fmt::Write as _, fs, path::Path};

use anyhow::{Context, Result};
use serde_json::{Value, json};

use super::{
    Alone, FIRST_KILLS, Lineup, Obs, Run, Session, SourceState,
    contender::{Family, Hook, Spec},
    kernel::BinarySize,
};
use crate::stats::Stats;

const TARGET_STARTUP_MS: f64 = 100.0;
const TARGET_IDLE_RSS_MIB: f64 = 12.0;
const TARGET_IDLE_CPU_PCT: f64 = 0.1;
const TARGET_P99_MS: f64 = 5.0;
/// oomtrace's mark_victim over the like-for-like floor's (issue 10).
const TARGET_LIKE_RATIO: f64 = 1.2;
/// oomtrace --no-user-stacks' mark_victim over the plain floor's.
const TARGET_PLAIN_RATIO: f64 = 1.5;
/// All of oomtrace's programs per kill over the plain floor's.
const TARGET_PER_KILL_RATIO: f64 = 2.5;

/// The floors the targets name.
const FLOOR_PLAIN: &str = "floor-tp_btf";
const FLOOR_LIKE: &str = "floor-like";
const FLOOR_NOWAKE: &str = "floor-nowake";
const FLOOR_LIKE_NOWAKE: &str = "floor-like-nowake";
const NO_USER_STACKS: &str = "oomtrace-no-user-stacks";
/// oomtrace with its reader stopped during the storm: no ring-buffer wakeups.
const FROZEN: &str = "oomtrace-frozen";
const NO_USER_STACKS_FROZEN: &str = "oomtrace-no-user-stacks-frozen";

/// A metric row: JSON key, label, one cell per contender, and per contender the per-run values
/// (None: does not apply).
struct MetricRow {
    key: String,
    label: String,
    cells: Vec<String>,
    values: Vec<Option<Vec<f64>>>,
}

/// One of the per-kill figures: oomtrace's value and the floor's (cells), and per run the value
/// held against the limit (a ratio, or oomtrace's own figure in ms).
struct PerKill {
    key: String,
    figure: String,
    oomtrace: String,
    floor: String,
    /// Per run: the ratio to the floor (unit ×) or oomtrace's figure (unit ms).
    values: Vec<f64>,
    limit: f64,
    unit: &'static str,
    /// ≤ (ratios) or < (times).
    inclusive: bool,
    /// One of issue 10's targets; the others detail one.
    target: bool,
    /// Why the figure does not measure what it says this time (then it meets nothing).
    void: Option<String>,
}

/// A reader-stopped oomtrace whose storm had more IRQ-work interrupts per kill than this still
/// woke its reader (e.g. with BPF_RB_FORCE_WAKEUP): its run is not wakeup-free.
const WAKEUP_FREE_MAX_IRQ_PER_KILL: f64 = 0.5;

/// The contender the targets are about.
const AUTO: &str = "oomtrace";

pub struct Report<'a> {
    pub date: String,
    pub kernel: String,
    pub cpus: usize,
    pub hierarchy_version: u8,
    pub cgroup_limit: u64,
    pub hog_step_kb: &'static str,
    pub storms: Vec<u32>,
    pub solo_kills: u32,
    pub idle_seconds: u64,
    pub lineup: &'a Lineup,
    pub runs: &'a [Run],
    pub sizes: BTreeMap<String, BinarySize>,
    pub mono_offset_ns: i64,
    pub bpf_stats_sysctl: (Option<u8>, Option<u8>),
    pub loadavg: (String, String),
    pub build_seconds: f64,
    pub bench_seconds: f64,
    /// Share of the machine's CPU time used by other work (not the bench's processes) meanwhile.
    pub others_cpu_pct: Option<f64>,
    /// oomtrace start-ups per run.
    pub startups: u32,
    /// How the bench was started (`cargo xtask bench ...`).
    pub command: String,
    pub source: SourceState,
}

/// ", p99 1.23 ms" for the progress lines.
pub fn latency_note(o: &Obs) -> String {
    Stats::new(o.latencies_ms.iter().copied())
        .map(|s| format!(", p99 {:.2} ms", s.percentile(99.0)))
        .unwrap_or_default()
}

/// The program of a contender that runs on mark_victim (oomtrace: mark_victim_btf/_tp; bpftrace
/// names it after the tracepoint; the floor has one program, floor_<variant>).
fn is_hook_prog(family: Family, name: &str) -> bool {
    match family {
        Family::Floor => name.starts_with("floor_"),
        _ => name.contains("mark_victim"),
    }
}

/// Which storms a figure comes from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Storms {
    /// Each contender alone on the hook.
    Solo,
    /// All contenders at once.
    Shared,
}

fn fmt(v: f64, decimals: usize) -> String {
    format!("{v:.decimals$}")
}

/// "median [min–max]", or "n/a".
fn cell(values: &[f64], decimals: usize) -> String {
    match Stats::new(values.iter().copied()) {
        None => "n/a".to_owned(),
        Some(s) if values.len() == 1 || s.min() == s.max() => fmt(s.median(), decimals),
        Some(s) => format!(
            "{} [{}–{}]",
            fmt(s.median(), decimals),
            fmt(s.min(), decimals),
            fmt(s.max(), decimals)
        ),
    }
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

fn thousands(n: u32) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn yes_no(met: bool) -> &'static str {
    if met { "yes" } else { "**no**" }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

impl Report<'_> {
    fn specs(&self) -> &[Spec] {
        &self.lineup.specs
    }

    /// The table's columns: the contenders of the shared storms.
    fn columns(&self) -> Vec<&Spec> {
        self.specs().iter().filter(|s| s.shared).collect()
    }

    fn spec(&self, id: &str) -> Option<&Spec> {
        self.specs().iter().find(|s| s.id == id)
    }

    fn alone(&self, id: &str, f: impl Fn(&Alone) -> Option<f64>) -> Vec<f64> {
        self.runs
            .iter()
            .filter_map(|r| r.alone.get(id)?.as_ref().ok())
            .filter_map(f)
            .collect()
    }

    /// The storms of one run that `id` took part in without error.
    fn sessions<'r>(
        &self,
        run: &'r Run,
        id: &'r str,
        which: Storms,
    ) -> impl Iterator<Item = (&'r Session, &'r Obs)> {
        let list = if which == Storms::Solo {
            &run.solo
        } else {
            &run.sessions
        };
        list.iter()
            .filter_map(move |s| Some((s, s.obs.get(id).filter(|o| o.error.is_none())?)))
    }

    /// Per run: latency percentile over all kills of its storms.
    fn latency(&self, id: &str, which: Storms, f: fn(&Stats) -> f64) -> Vec<f64> {
        self.runs
            .iter()
            .filter_map(|r| {
                let all: Vec<f64> = self
                    .sessions(r, id, which)
                    .flat_map(|(_, o)| o.latencies_ms.iter().copied())
                    .collect();
                Stats::new(all).as_ref().map(f)
            })
            .collect()
    }

    /// Per run: ns per run of the contender's mark_victim program.
    fn hook_ns_run(&self, run: &Run, id: &str, which: Storms) -> Option<f64> {
        let family = self.spec(id)?.family;
        let (mut ns, mut cnt) = (0u64, 0u64);
        for (_, o) in self.sessions(run, id, which) {
            for p in o.progs.iter().filter(|p| is_hook_prog(family, &p.name)) {
                ns += p.run_time_ns;
                cnt += p.run_cnt;
            }
        }
        (cnt > 0).then(|| ns as f64 / cnt as f64)
    }

    fn hook_ns(&self, id: &str, which: Storms) -> Vec<f64> {
        self.runs
            .iter()
            .filter_map(|r| self.hook_ns_run(r, id, which))
            .collect()
    }

    /// The floor on the same hook as `id`.
    fn floor_for(&self, id: &str) -> Option<&'static str> {
        match self.spec(id)?.hook {
            Hook::TpBtf => Some("floor-tp_btf"),
            Hook::Tracepoint => Some("floor-tracepoint"),
            Hook::Kmsg => None,
        }
    }

    /// Per run: the contender's mark_victim ns/run over the floor's on the same hook.
    fn ratio(&self, id: &str, which: Storms) -> Vec<f64> {
        let Some(floor) = self.floor_for(id) else {
            return Vec::new();
        };
        self.runs
            .iter()
            .filter_map(|r| Some(self.hook_ns_run(r, id, which)? / self.hook_ns_run(r, floor, which)?))
            .collect()
    }

    /// One run: all of its programs' run time per kill.
    fn ns_per_kill_run(&self, run: &Run, id: &str, which: Storms) -> Option<f64> {
        let (mut ns, mut kills) = (0u64, 0u64);
        for (s, o) in self.sessions(run, id, which) {
            ns += o.progs.iter().map(|p| p.run_time_ns).sum::<u64>();
            kills += s.kernel_kills();
        }
        (kills > 0 && ns > 0).then(|| ns as f64 / kills as f64)
    }

    fn ns_per_kill(&self, id: &str, which: Storms) -> Vec<f64> {
        self.runs
            .iter()
            .filter_map(|r| self.ns_per_kill_run(r, id, which))
            .collect()
    }

    /// Per program of a contender, alone on the hook: (name, ns per run, runs per kill) per run.
    fn programs(&self, id: &str) -> Vec<(String, Vec<f64>, Vec<f64>)> {
        let mut names: Vec<String> = Vec::new();
        for r in self.runs {
            for (_, o) in self.sessions(r, id, Storms::Solo) {
                for p in &o.progs {
                    if !names.contains(&p.name) {
                        names.push(p.name.clone());
                    }
                }
            }
        }
        names
            .into_iter()
            .map(|name| {
                let (mut per_run, mut per_kill) = (Vec::new(), Vec::new());
                for r in self.runs {
                    let (mut ns, mut cnt, mut kills) = (0u64, 0u64, 0u64);
                    for (s, o) in self.sessions(r, id, Storms::Solo) {
                        kills += s.kernel_kills();
                        for p in o.progs.iter().filter(|p| p.name == name) {
                            ns += p.run_time_ns;
                            cnt += p.run_cnt;
                        }
                    }
                    if cnt > 0 {
                        per_run.push(ns as f64 / cnt as f64);
                    }
                    if kills > 0 {
                        per_kill.push(cnt as f64 / kills as f64);
                    }
                }
                (name, per_run, per_kill)
            })
            .collect()
    }

    /// Per run, for the storms of one size: (delivered, kernel).
    fn delivered(&self, id: &str, kills: u32, full: bool) -> Vec<(u64, u64)> {
        self.runs
            .iter()
            .filter_map(|r| {
                let s = r.sessions.iter().find(|s| s.kills == kills)?;
                let o = s.obs.get(id)?;
                Some((
                    if full { o.delivered_full } else { o.delivered_any },
                    s.kernel_kills(),
                ))
            })
            .collect()
    }

    fn delivered_cell(&self, id: &str, kills: u32, full: bool) -> String {
        let mut d = self.delivered(id, kills, full);
        if d.is_empty() {
            return "n/a".to_owned();
        }
        d.sort_by(|a, b| pct(a.0, a.1).total_cmp(&pct(b.0, b.1)));
        let (lo, hi, mid) = (d[0], d[d.len() - 1], d[(d.len() - 1) / 2]);
        let p = |x: (u64, u64)| {
            let v = pct(x.0, x.1);
            if v == 100.0 || v == 0.0 {
                fmt(v, 0)
            } else {
                fmt(v, 1)
            }
        };
        if pct(lo.0, lo.1) == pct(hi.0, hi.1) {
            format!("{}/{} ({} %)", mid.0, mid.1, p(mid))
        } else {
            format!("{}/{} [{}–{} %]", mid.0, mid.1, p(lo), p(hi))
        }
    }

    fn rss_after(&self, id: &str) -> Vec<f64> {
        let biggest = self.storms.iter().copied().max().unwrap_or(0);
        self.runs
            .iter()
            .filter_map(|r| {
                let s = r.sessions.iter().find(|s| s.kills == biggest)?;
                s.obs.get(id)?.rss_after_kib.map(mib)
            })
            .collect()
    }

    fn kmsg_ts_offset(&self) -> Vec<f64> {
        self.runs
            .iter()
            .filter_map(|r| {
                let all: Vec<f64> = self
                    .sessions(r, "kmsg", Storms::Shared)
                    .flat_map(|(_, o)| o.kmsg_ts_minus_kill_ms.iter().copied())
                    .collect();
                Stats::new(all).map(|s| s.median())
            })
            .collect()
    }

    /// Per run: `a`'s mark_victim ns/run over `b`'s, each alone on the hook.
    fn hook_ratio(&self, a: &str, b: &str) -> Vec<f64> {
        self.runs
            .iter()
            .filter_map(|r| {
                Some(self.hook_ns_run(r, a, Storms::Solo)? / self.hook_ns_run(r, b, Storms::Solo)?)
            })
            .collect()
    }

    /// Per run: `a`'s eBPF ns per kill (all programs) over `b`'s, each alone on the hook.
    fn per_kill_ratio(&self, a: &str, b: &str) -> Vec<f64> {
        self.runs
            .iter()
            .filter_map(|r| {
                Some(self.ns_per_kill_run(r, a, Storms::Solo)? / self.ns_per_kill_run(r, b, Storms::Solo)?)
            })
            .collect()
    }

    /// Per run: kill → line of the first kill of the contender's solo storm (a fresh process
    /// that has never seen the hog), or the worst of its first `n` kills.
    fn first_kills(&self, id: &str, n: usize) -> Vec<f64> {
        self.runs
            .iter()
            .filter_map(|r| {
                self.sessions(r, id, Storms::Solo)
                    .filter_map(|(_, o)| {
                        let first = o.first_kills_ms.iter().take(n).flatten().copied();
                        Stats::new(first).map(|s| s.max())
                    })
                    .reduce(f64::max)
            })
            .collect()
    }

    /// Per run: the median of oomtrace's start-ups (exec → `start` line read).
    fn startup_medians(&self, own: bool) -> Vec<f64> {
        self.runs
            .iter()
            .filter_map(|r| {
                let ms = r
                    .startups
                    .iter()
                    .flatten()
                    .filter_map(|s| if own { s.own_ms } else { Some(s.read_ms) });
                Stats::new(ms).map(|s| s.median())
            })
            .collect()
    }

    /// Per run: IRQ-work interrupts per kill during the contender's solo storm (reader wakeups,
    /// machine-wide).
    fn irq_work_per_kill(&self, id: &str) -> Vec<f64> {
        self.runs
            .iter()
            .filter_map(|r| {
                let (mut irq, mut kills) = (0u64, 0u64);
                for (s, _) in self.sessions(r, id, Storms::Solo) {
                    irq += s.irq_work?;
                    kills += s.kernel_kills();
                }
                (kills > 0).then(|| irq as f64 / kills as f64)
            })
            .collect()
    }

    /// Why a reader-stopped contender's figures are not wakeup-free, if they are not.
    fn not_wakeup_free(&self, id: &str) -> Option<String> {
        if !self.spec(id)?.freeze {
            return None;
        }
        let irq = Stats::new(self.irq_work_per_kill(id))?.median();
        (irq > WAKEUP_FREE_MAX_IRQ_PER_KILL).then(|| {
            format!(
                "n/a: not wakeup-free, {irq:.2} irq_work interrupts per kill with oomtrace's reader stopped"
            )
        })
    }

    /// Every start-up of every run.
    fn startup_all(&self) -> Vec<f64> {
        self.runs
            .iter()
            .flat_map(|r| r.startups.iter().flatten().map(|s| s.read_ms))
            .collect()
    }

    /// The figures issue 10's targets are about, each with the floor it is held against.
    fn per_kill(&self) -> Vec<PerKill> {
        let solo = thousands(self.solo_kills);
        let auto_mode = &self.lineup.auto_mode;
        let ns = |id: &str| cell(&self.hook_ns(id, Storms::Solo), 0);
        let per_kill = |id: &str| cell(&self.ns_per_kill(id, Storms::Solo), 0);
        let ratio = |figure: String, (a, b): (&str, &str), limit, target| PerKill {
            key: format!("{a}_over_{b}"),
            figure,
            oomtrace: ns(a),
            floor: ns(b),
            values: self.hook_ratio(a, b),
            limit,
            unit: "×",
            inclusive: true,
            target,
            void: self.not_wakeup_free(a),
        };
        let mut out = vec![
            ratio(
                format!(
                    "`mark_victim` ns per run, oomtrace ({auto_mode}), reader running / like-for-like C floor (kernel \
                     stack + user stack + memcg walk), waking its reader"
                ),
                (AUTO, FLOOR_LIKE),
                TARGET_LIKE_RATIO,
                true,
            ),
            ratio(
                "… both without ring-buffer wakeups: oomtrace with its reader stopped / the like-for-like floor \
                 submitting with BPF_RB_NO_WAKEUP (the captures alone, whichever program pays the wakeup)"
                    .to_owned(),
                (FROZEN, FLOOR_LIKE_NOWAKE),
                TARGET_LIKE_RATIO,
                true,
            ),
            ratio(
                "`mark_victim` ns per run, `oomtrace --no-user-stacks`, reader running / plain C floor (pid, tgid, \
                 comm, boot time), waking its reader"
                    .to_owned(),
                (NO_USER_STACKS, FLOOR_PLAIN),
                TARGET_PLAIN_RATIO,
                true,
            ),
            ratio(
                "… both without wakeups: `--no-user-stacks` with its reader stopped / the plain floor not waking"
                    .to_owned(),
                (NO_USER_STACKS_FROZEN, FLOOR_NOWAKE),
                TARGET_PLAIN_RATIO,
                // Not the target: the plain floor captures no kernel stack, and without its wakeup
                // it is little more than a ring-buffer reserve; this shows what the captures cost.
                false,
            ),
            PerKill {
                key: "all_programs_per_kill_over_plain_floor".to_owned(),
                figure: "eBPF ns per kill, all of oomtrace's programs (run_time_ns summed over the storm / the \
                         kernel's kill count), reader running / the plain C floor's one program"
                    .to_owned(),
                oomtrace: per_kill(AUTO),
                floor: per_kill(FLOOR_PLAIN),
                values: self.per_kill_ratio(AUTO, FLOOR_PLAIN),
                limit: TARGET_PER_KILL_RATIO,
                unit: "×",
                inclusive: true,
                target: true,
                void: None,
            },
            PerKill {
                key: "all_programs_per_kill_over_like_floor".to_owned(),
                figure: "… / the like-for-like floor's one program".to_owned(),
                oomtrace: per_kill(AUTO),
                floor: per_kill(FLOOR_LIKE),
                values: self.per_kill_ratio(AUTO, FLOOR_LIKE),
                limit: TARGET_PER_KILL_RATIO,
                unit: "×",
                inclusive: true,
                target: false,
                void: None,
            },
        ];
        let below = |key: &str, figure: String, values: Vec<f64>, floor: Vec<f64>, limit, target| PerKill {
            key: key.to_owned(),
            figure,
            oomtrace: cell(&values, 2),
            floor: cell(&floor, 2),
            values,
            limit,
            unit: " ms",
            inclusive: false,
            target,
            void: None,
        };
        let p99 = |id: &str| self.latency(id, Storms::Solo, |s| s.percentile(99.0));
        out.push(below(
            "p99_kill_to_line_solo_ms",
            format!(
                "p99 kill (mark_victim) → line read, alone on the hook: a fresh oomtrace, {solo} kills, first kills \
                 included"
            ),
            p99(AUTO),
            p99(FLOOR_PLAIN),
            TARGET_P99_MS,
            true,
        ));
        out.push(below(
            "first_kill_to_line_solo_ms",
            "… its first kill (the hog's binary never symbolized by that process)".to_owned(),
            self.first_kills(AUTO, 1),
            self.first_kills(FLOOR_PLAIN, 1),
            TARGET_P99_MS,
            false,
        ));
        out.push(below(
            "first_kills_worst_solo_ms",
            format!("… the worst of its first {FIRST_KILLS} kills"),
            self.first_kills(AUTO, FIRST_KILLS),
            self.first_kills(FLOOR_PLAIN, FIRST_KILLS),
            TARGET_P99_MS,
            false,
        ));
        out.push(below(
            "p99_kill_to_line_solo_no_user_stacks_ms",
            "… `oomtrace --no-user-stacks`, p99".to_owned(),
            p99(NO_USER_STACKS),
            p99(FLOOR_PLAIN),
            TARGET_P99_MS,
            false,
        ));
        out.push(below(
            "startup_ms",
            format!(
                "Start-up: exec → `start` line read, release build, median of {} per run",
                self.startups
            ),
            self.startup_medians(false),
            self.alone(FLOOR_PLAIN, |a| Some(a.startup_read_ms)),
            TARGET_STARTUP_MS,
            true,
        ));
        for (id, what) in [
            (AUTO, "oomtrace, reader running"),
            (FROZEN, "oomtrace, reader stopped"),
        ] {
            let irq = self.irq_work_per_kill(id);
            if irq.is_empty() {
                continue;
            }
            let floor = if id == AUTO { FLOOR_LIKE } else { FLOOR_LIKE_NOWAKE };
            out.push(PerKill {
                key: format!("irq_work_per_kill_{id}"),
                figure: format!(
                    "IRQ-work interrupts per kill (reader wakeups; `IWI` of /proc/interrupts, machine-wide) during \
                     the solo storm: {what} / {floor}"
                ),
                oomtrace: cell(&irq, 2),
                floor: cell(&self.irq_work_per_kill(floor), 2),
                values: irq,
                limit: f64::NAN,
                unit: "",
                inclusive: true,
                target: false,
                void: Some("–".to_owned()),
            });
        }
        out
    }

    fn rows(&self) -> Vec<MetricRow> {
        let mut rows = Vec::new();
        let specs = self.columns();
        let numeric = |key: &str, label: String, decimals: usize, f: &dyn Fn(&Spec) -> Option<Vec<f64>>| {
            let values: Vec<Option<Vec<f64>>> = specs.iter().map(|s| f(s)).collect();
            let cells = values
                .iter()
                .map(|v| v.as_ref().map_or("–".to_owned(), |v| cell(v, decimals)))
                .collect();
            MetricRow {
                key: key.to_owned(),
                label,
                cells,
                values,
            }
        };
        let percents = |key: String, label: String, k: u32, full: bool| MetricRow {
            key,
            label,
            cells: specs
                .iter()
                .map(|s| self.delivered_cell(&s.id, k, full))
                .collect(),
            values: specs
                .iter()
                .map(|s| {
                    Some(
                        self.delivered(&s.id, k, full)
                            .iter()
                            .map(|d| pct(d.0, d.1))
                            .collect(),
                    )
                })
                .collect(),
        };
        for &k in &self.storms {
            rows.push(percents(
                format!("delivered_full_pct_{k}"),
                format!("Delivered with full detail, {}-kill storm", thousands(k)),
                k,
                true,
            ));
        }
        for &k in &self.storms {
            rows.push(percents(
                format!("delivered_any_pct_{k}"),
                format!("Any line about the kill, {}-kill storm", thousands(k)),
                k,
                false,
            ));
        }
        for (key, label, f) in [
            (
                "latency_p50_ms",
                "p50",
                (|s: &Stats| s.percentile(50.0)) as fn(&Stats) -> f64,
            ),
            ("latency_p99_ms", "p99", |s: &Stats| s.percentile(99.0)),
            ("latency_max_ms", "max", Stats::max),
        ] {
            rows.push(numeric(key, format!("Latency {label} (ms)"), 2, &|s| {
                Some(self.latency(&s.id, Storms::Shared, f))
            }));
        }
        let solo = thousands(self.solo_kills);
        rows.push(numeric(
            "latency_p99_ms_solo",
            format!("Latency p99 (ms), alone on the hook ({solo}-kill storm)"),
            2,
            &|s| Some(self.latency(&s.id, Storms::Solo, |st| st.percentile(99.0))),
        ));
        let ebpf = |s: &Spec| s.hook != Hook::Kmsg;
        let tp_btf_oomtrace = |s: &Spec| s.family == Family::Oomtrace && s.hook == Hook::TpBtf;
        rows.push(numeric(
            "bpf_ns_per_run_solo",
            format!("eBPF ns per run of its mark_victim program, alone on the hook ({solo}-kill storm)"),
            0,
            &|s| ebpf(s).then(|| self.hook_ns(&s.id, Storms::Solo)),
        ));
        rows.push(numeric(
            "bpf_ratio_to_floor_solo",
            "… × the C floor on the same hook, same run".into(),
            2,
            &|s| ebpf(s).then(|| self.ratio(&s.id, Storms::Solo)),
        ));
        rows.push(numeric(
            "bpf_ratio_to_like_floor_solo",
            "… × the like-for-like C floor (kernel + user stack + memcg walk, waking), same run".into(),
            2,
            &|s| tp_btf_oomtrace(s).then(|| self.hook_ratio(&s.id, FLOOR_LIKE)),
        ));
        rows.push(numeric(
            "bpf_ns_per_run_shared",
            "eBPF ns per run of its mark_victim program, all attached at once".into(),
            0,
            &|s| ebpf(s).then(|| self.hook_ns(&s.id, Storms::Shared)),
        ));
        rows.push(numeric(
            "bpf_ratio_to_floor_shared",
            "… × the C floor on the same hook, same storms".into(),
            2,
            &|s| ebpf(s).then(|| self.ratio(&s.id, Storms::Shared)),
        ));
        rows.push(numeric(
            "bpf_ns_per_kill_all_programs_solo",
            "eBPF ns per kill, all its programs, alone".into(),
            0,
            &|s| ebpf(s).then(|| self.ns_per_kill(&s.id, Storms::Solo)),
        ));
        rows.push(numeric(
            "idle_rss_mib",
            format!("Idle RSS (MiB), alone, after {} s", self.idle_seconds),
            1,
            &|s| s.alone.then(|| self.alone(&s.id, |a| Some(mib(a.idle_rss_kib)))),
        ));
        rows.push(numeric(
            "idle_cpu_pct",
            format!("Idle CPU (%), alone, over {} s", self.idle_seconds),
            3,
            &|s| s.alone.then(|| self.alone(&s.id, |a| Some(a.idle_cpu_pct))),
        ));
        let biggest = self.storms.iter().copied().max().unwrap_or(0);
        rows.push(numeric(
            "rss_after_storm_mib",
            format!("RSS after the {}-kill storm (MiB)", thousands(biggest)),
            1,
            &|s| Some(self.rss_after(&s.id)),
        ));
        rows.push(numeric(
            "first_kill_ms_solo",
            format!("First kill → line (ms), a fresh process alone on the hook ({solo}-kill storm)"),
            2,
            &|s| ebpf(s).then(|| self.first_kills(&s.id, 1)),
        ));
        rows.push(numeric(
            "startup_ms",
            "Start-up: exec → ready line read (ms), alone, once per run".into(),
            1,
            &|s| s.alone.then(|| self.alone(&s.id, |a| Some(a.startup_read_ms))),
        ));
        rows.push(numeric("binary_mib", "Executable (MiB)".into(), 1, &|s| {
            let b = self.sizes.get(&s.id)?;
            Some(vec![b.bytes as f64 / f64::from(1 << 20)])
        }));
        rows.push(numeric(
            "shared_libs_mib",
            "+ shared libraries beyond libc (MiB)".into(),
            1,
            &|s| {
                let b = self.sizes.get(&s.id)?;
                Some(vec![b.libs_bytes as f64 / f64::from(1 << 20)])
            },
        ));
        rows
    }

    /// (target, measured, met, runs meeting) for oomtrace auto.
    fn targets(&self) -> Vec<(String, String, Option<bool>, String)> {
        let mut out = Vec::new();
        let n = self.runs.len();
        for &k in &self.storms {
            let d = self.delivered(AUTO, k, true);
            let ok = d
                .iter()
                .filter(|(got, kernel)| got == kernel && *kernel > 0)
                .count();
            out.push((
                format!("100 % delivered with full detail, {}-kill storm", thousands(k)),
                self.delivered_cell(AUTO, k, true),
                Some(ok == n && !d.is_empty()),
                format!("{ok}/{n} runs"),
            ));
        }
        let below = |label: String, values: Vec<f64>, limit: f64, decimals: usize, inclusive: bool| {
            let meets = |v: f64| if inclusive { v <= limit } else { v < limit };
            let met = Stats::new(values.iter().copied()).map(|s| meets(s.median()));
            let ok = values.iter().filter(|v| meets(**v)).count();
            (
                label,
                cell(&values, decimals),
                met,
                format!("{ok}/{} runs", values.len()),
            )
        };
        out.push(below(
            format!("p99 latency < {TARGET_P99_MS} ms, all contenders attached (ms)"),
            self.latency(AUTO, Storms::Shared, |s| s.percentile(99.0)),
            TARGET_P99_MS,
            2,
            false,
        ));
        for p in self.per_kill().into_iter().filter(|p| p.target) {
            let (values, decimals) = (p.values, 2);
            if let Some(why) = &p.void {
                out.push((
                    p.figure.clone(),
                    format!("{} ({why})", cell(&values, decimals)),
                    None,
                    String::new(),
                ));
                continue;
            }
            out.push(below(
                format!(
                    "{} {} {}{}",
                    p.figure,
                    if p.inclusive { "≤" } else { "<" },
                    p.limit,
                    p.unit
                ),
                values,
                p.limit,
                decimals,
                p.inclusive,
            ));
        }
        out.push(below(
            format!("idle RSS < {TARGET_IDLE_RSS_MIB} MiB (MiB)"),
            self.alone(AUTO, |a| Some(mib(a.idle_rss_kib))),
            TARGET_IDLE_RSS_MIB,
            1,
            false,
        ));
        out.push(below(
            format!("idle CPU < {TARGET_IDLE_CPU_PCT} % (%)"),
            self.alone(AUTO, |a| Some(a.idle_cpu_pct)),
            TARGET_IDLE_CPU_PCT,
            3,
            false,
        ));
        out
    }

    /// Where oomtrace's time on tp_btf/mark_victim goes: each program alone on the hook, without
    /// ring-buffer wakeups, one capture added at a time. (label, ns per run, Δ ns per run vs the
    /// row it builds on.)
    fn breakdown(&self) -> Vec<(String, Vec<f64>, Option<Vec<f64>>)> {
        let per_run = |id: &str| -> Vec<Option<f64>> {
            self.runs
                .iter()
                .map(|r| self.hook_ns_run(r, id, Storms::Solo))
                .collect()
        };
        let diff = |a: &[Option<f64>], b: &[Option<f64>]| -> Vec<Option<f64>> {
            a.iter().zip(b).map(|(a, b)| Some((*a)? - (*b)?)).collect()
        };
        let some = |v: &[Option<f64>]| v.iter().flatten().copied().collect::<Vec<f64>>();
        let tp_btf = |id: &str| self.spec(id).is_some_and(|s| s.hook == Hook::TpBtf);
        if !tp_btf("floor-nowake") {
            return Vec::new();
        }
        let nowake = per_run("floor-nowake");
        let plain = per_run("floor-tp_btf");
        let kstack = per_run("floor-kstack");
        let memcg = per_run("floor-memcg");
        let stacks = per_run("floor-stacks");
        let nus = per_run("oomtrace-no-user-stacks-frozen");
        let frozen = per_run("oomtrace-frozen");
        let auto = per_run(AUTO);
        let mut rows = vec![(
            "C floor, no wakeup: ring-buffer reserve, pid, tgid, comm, boot time, submit".to_owned(),
            some(&nowake),
            None,
        )];
        let mut push = |ok: bool, label: &str, values: &[Option<f64>], base: &[Option<f64>]| {
            if ok {
                rows.push((label.to_owned(), some(values), Some(some(&diff(values, base)))));
            }
        };
        push(
            tp_btf("floor-tp_btf"),
            "C floor, waking its reader (Δ: the wakeup, an irq_work self-IPI)",
            &plain,
            &nowake,
        );
        push(
            tp_btf("floor-kstack"),
            "C floor + the trigger's kernel stack (32 frames), 1.5 KiB record, no wakeup (Δ: the kernel stack)",
            &kstack,
            &nowake,
        );
        push(
            tp_btf("floor-memcg"),
            "… + the trigger's memcg ancestry: 8 levels of page counters (Δ: the memcg walk)",
            &memcg,
            &kstack,
        );
        let like = per_run(FLOOR_LIKE);
        push(
            tp_btf(FLOOR_LIKE),
            "C floor, like for like: kernel stack + one user stack (32) + memcg walk, waking its reader (Δ vs floor \
             + kernel stack + memcg walk: the user stack and the wakeup)",
            &like,
            &memcg,
        );
        push(
            tp_btf("floor-stacks"),
            "C floor + kernel stack + user (32) and build-id (16) stacks, no wakeup (Δ vs kernel stack: user + \
             build-id stacks)",
            &stacks,
            &kstack,
        );
        push(
            tp_btf("oomtrace-no-user-stacks-frozen"),
            "oomtrace --no-user-stacks, reader stopped (Δ vs floor + kernel stack + memcg walk: the rest — victim \
             ids, comm, mm counters, oom_score_adj, stash lookups, the 1.6 KiB record zeroed)",
            &nus,
            &memcg,
        );
        push(
            tp_btf("oomtrace-frozen"),
            "oomtrace, reader stopped (Δ: its user + build-id stacks)",
            &frozen,
            &nus,
        );
        push(
            tp_btf(AUTO),
            "oomtrace, reader running (Δ: the wakeups its mark_victim pays; mostly its signal_generate \
             program, which runs first, pays them)",
            &auto,
            &frozen,
        );
        rows
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let specs = self.columns();
        let _ = writeln!(out, "## oomtrace benchmark\n");
        let _ = writeln!(
            out,
            "- {}; Linux {} (`uname -r`), {} CPUs; cgroup v{} memory controller",
            self.date, self.kernel, self.cpus, self.hierarchy_version
        );
        let storms: Vec<String> = self.storms.iter().map(|k| thousands(*k)).collect();
        let _ = writeln!(
            out,
            "- {} runs. Each run: every contender alone (exec → ready, then {} s idle); every contender alone on the \
             hook for a storm of {} OOM kills; then storms of {} OOM kills with all contenders attached at once \
             (fresh contenders per storm). Storms: oomtrace-hog, {} KiB steps, in a {} MiB memory cgroup, one after \
             the other. Cells: median over runs [min–max]; ratios are taken within a run.",
            self.runs.len(),
            self.idle_seconds,
            thousands(self.solo_kills),
            storms.join(" and "),
            self.hog_step_kb,
            self.cgroup_limit >> 20,
        );
        let _ = writeln!(
            out,
            "- Runtime: {:.0} min ({:.0} s of building before that). Other work on the machine meanwhile: {} of its \
             CPU time.\n",
            self.bench_seconds / 60.0,
            self.build_seconds,
            self.others_cpu_pct
                .map_or("unknown".to_owned(), |p| format!("{p:.0} %")),
        );
        let _ = writeln!(
            out,
            "- Command: `{}`. Built from commit {}{}. Load average (1/5/15 min) before: {}; after: {}.\n",
            self.command,
            self.source
                .commit
                .as_deref()
                .map_or("unknown".to_owned(), |c| format!(
                    "`{c}` ({})",
                    self.source.subject.as_deref().unwrap_or("")
                )),
            if self.source.dirty.is_empty() {
                String::new()
            } else {
                format!(
                    ", with uncommitted changes in the built crates: {}",
                    self.source.dirty.join(", ")
                )
            },
            loadavg3(&self.loadavg.0),
            loadavg3(&self.loadavg.1),
        );
        if let Some(b) = &self.source.before_build {
            let _ = writeln!(
                out,
                "- **The tree changed during the build**: it started at commit `{}`{}; the binaries hold whichever \
                 state each crate's build read.\n",
                b.commit.as_deref().unwrap_or("unknown"),
                if b.dirty.is_empty() {
                    " with no uncommitted changes in the built crates".to_owned()
                } else {
                    format!(" with uncommitted {}", b.dirty.join(", "))
                }
            );
        }

        let _ = writeln!(
            out,
            "### Per kill, against the C floors (oomtrace {}, each alone on the hook, {}-kill storms)\n",
            self.lineup.auto_mode,
            thousands(self.solo_kills)
        );
        out.push_str(
            "| Figure | oomtrace | C floor | Ratio or figure | Target | Met |\n|---|---|---|---|---|---|\n",
        );
        for p in self.per_kill() {
            let decimals = 2;
            let met = Stats::new(p.values.iter().copied()).map(|st| {
                if p.inclusive {
                    st.median() <= p.limit
                } else {
                    st.median() < p.limit
                }
            });
            let target = if p.limit.is_nan() {
                "–".to_owned()
            } else {
                format!(
                    "{} {}{}{}",
                    if p.inclusive { "≤" } else { "<" },
                    p.limit,
                    p.unit,
                    if p.target { "" } else { " (detail)" }
                )
            };
            let met = match &p.void {
                Some(why) => why.clone(),
                None => met.map_or("n/a", yes_no).to_owned(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {}{} | {target} | {met} |",
                p.figure,
                p.oomtrace,
                p.floor,
                cell(&p.values, decimals),
                if p.unit == "×" { "×" } else { "" },
            );
        }
        let all = Stats::new(self.startup_all());
        if let Some(st) = all {
            let _ = writeln!(
                out,
                "\nStart-ups, all {} of them: median {:.1} ms, min {:.1}, max {:.1} (exec → the `start` record's own \
                 timestamp: {} ms, median of the run medians).",
                self.startup_all().len(),
                st.median(),
                st.min(),
                st.max(),
                cell(&self.startup_medians(true), 1)
            );
        }
        out.push('\n');
        let _ = write!(out, "| |");
        for s in &specs {
            let _ = write!(out, " {} |", s.label);
        }
        let _ = write!(out, "\n|---|");
        for _ in specs {
            let _ = write!(out, "---|");
        }
        out.push('\n');
        for row in self.rows() {
            let _ = writeln!(out, "| {} | {} |", row.label, row.cells.join(" | "));
        }

        let _ = writeln!(
            out,
            "\n### Targets: {}\n",
            self.spec(AUTO).map_or(AUTO, |s| s.label.as_str())
        );
        out.push_str("| Target | Measured | Met |\n|---|---|---|\n");
        for (target, measured, met, runs) in self.targets() {
            let met = met.map_or("n/a".to_owned(), |m| format!("{} ({runs})", yes_no(m)));
            let _ = writeln!(out, "| {target} | {measured} | {met} |");
        }

        let breakdown = self.breakdown();
        if !breakdown.is_empty() {
            let _ = writeln!(
                out,
                "\n### Where oomtrace's time on tp_btf/mark_victim goes (each alone on the hook, {}-kill storms)\n",
                thousands(self.solo_kills)
            );
            out.push_str("| Program | ns per run | Δ ns |\n|---|---|---|\n");
            for (label, values, delta) in breakdown {
                let d = delta.map_or("–".to_owned(), |d| cell(&d, 0));
                let _ = writeln!(out, "| {label} | {} | {d} |", cell(&values, 0));
            }
        }

        let programs = self.programs(AUTO);
        if !programs.is_empty() {
            let _ = writeln!(
                out,
                "\n### oomtrace's eBPF programs, alone ({}-kill storms)\n",
                thousands(self.solo_kills)
            );
            out.push_str("| Program | ns per run | runs per kill |\n|---|---|---|\n");
            for (name, per_run, per_kill) in programs {
                let _ = writeln!(
                    out,
                    "| `{name}` | {} | {} |",
                    cell(&per_run, 0),
                    cell(&per_kill, 2)
                );
            }
        }

        if !self.lineup.absent.is_empty() || !self.lineup.notes.is_empty() {
            out.push_str("\n### Not run here\n\n");
            for (label, reason) in &self.lineup.absent {
                let _ = writeln!(out, "- `{label}`: {reason}");
            }
            for note in &self.lineup.notes {
                let _ = writeln!(out, "- {note}");
            }
        }

        let errors: Vec<String> = self
            .runs
            .iter()
            .enumerate()
            .flat_map(|(i, r)| {
                let alone = r.alone.iter().filter_map(move |(id, a)| {
                    Some(format!("run {}: {id} alone: {}", i + 1, a.as_ref().err()?))
                });
                let storms = r.solo.iter().chain(&r.sessions).flat_map(move |s| {
                    let kind = if s.order.len() == 1 { "solo" } else { "shared" };
                    s.obs.iter().filter_map(move |(id, o)| {
                        Some(format!(
                            "run {}: {id} in the {}-kill {kind} storm: {}",
                            i + 1,
                            s.kills,
                            o.error.as_ref()?
                        ))
                    })
                });
                alone.chain(storms)
            })
            .collect();
        if !errors.is_empty() {
            out.push_str("\n### Failures (left out of the figures)\n\n");
            for e in errors {
                let _ = writeln!(out, "- {e}");
            }
        }

        let disturbed: Vec<&Session> = self
            .runs
            .iter()
            .flat_map(|r| r.solo.iter().chain(&r.sessions))
            .filter(|s| !s.foreign.is_empty())
            .collect();
        if !disturbed.is_empty() {
            let mut names: Vec<&str> = disturbed
                .iter()
                .flat_map(|s| &s.foreign)
                .map(String::as_str)
                .collect();
            names.sort_unstable();
            names.dedup();
            let _ = writeln!(
                out,
                "\n**Disturbed:** {} of the storms ran while other OOM tracers on this machine had eBPF programs \
                 loaded ({}); their programs run on the same hooks as the contenders'.",
                disturbed.len(),
                names.join(", ")
            );
        }

        out.push_str("\n### How to read it\n\n");
        let foreign: u64 = self
            .runs
            .iter()
            .flat_map(|r| r.solo.iter().chain(&r.sessions))
            .map(|s| s.vmstat_kills.saturating_sub(s.kernel_kills()))
            .sum();
        let _ = writeln!(
            out,
            "- Delivered: victims of the storm a contender reported, over the kernel's count (the storm cgroup's \
             `oom_kill` counter, equal to the `/proc/vmstat` `oom_kill` delta{}). Full detail: oomtrace's `oom_kill` \
             record names the victim (pid, comm, cgroup), the trigger and the OOM memcg; the kmsg scraper's full \
             report is cAdvisor's (the `invoked oom-killer` header through the `oom-kill:` line), which is all \
             kubelet turns into an event: the kernel rate-limits those reports (10 per 5 s) but not its one-line \
             `Killed process` message (\"any line\"); bpftrace and the floor print one line per kill.",
            if foreign > 0 {
                format!("; {foreign} kills elsewhere on the machine during the storms were left out")
            } else {
                String::new()
            }
        );
        let mut missing: BTreeMap<String, u64> = BTreeMap::new();
        for s in self.runs.iter().flat_map(|r| r.solo.iter().chain(&r.sessions)) {
            if let Some(o) = s.obs.get(AUTO) {
                for (field, n) in &o.missing {
                    *missing.entry(field.clone()).or_default() += n;
                }
            }
        }
        if !missing.is_empty() {
            let list: Vec<String> = missing
                .iter()
                .map(|(f, n)| format!("`{f}` null in {n}"))
                .collect();
            let _ = writeln!(
                out,
                "- oomtrace (auto) records short of full detail, all storms: {}.",
                list.join(", ")
            );
        }
        let offset = self.kmsg_ts_offset();
        let _ = writeln!(
            out,
            "- Latency: when the bench read the line (CLOCK_BOOTTIME, stamped by a reader thread per contender) \
             minus the kernel's mark_victim time: oomtrace's `boot_ns`, the floor's `bpf_ktime_get_boot_ns()`, \
             bpftrace's `nsecs` (CLOCK_MONOTONIC; BOOTTIME − MONOTONIC is {:.3} ms here). kmsg lines carry no \
             mark_victim time, so its latency uses the other contenders' for the same victim, to its first line \
             (full report or one-liner), and it has no figure alone on the hook; the kmsg record's own timestamp (printk's local_clock, µs) lies {} ms \
             from mark_victim. In the shared storms all contenders and the hog share the CPUs; their attach order \
             rotates between runs. Every storm has fresh contender processes and starts {} s after the last of them \
             printed its ready line: what a tracer warms right after start is warm, the hog's binary is new to it \
             (its first kills symbolize it cold). \"First kill\": the storm's first victim; \"first kills included\": \
             nothing is left out of the percentiles.",
            self.mono_offset_ns as f64 / 1e6,
            cell(&offset, 3),
            super::FIRST_KILL_GAP.as_secs(),
        );
        let _ = writeln!(
            out,
            "- eBPF: `run_time_ns / run_cnt` from `/proc/PID/fdinfo` of each program fd, with \
             kernel.bpf_stats_enabled switched on for the storms only (BPF_ENABLE_STATS; {} before, {} after). \
             Programs on one hook run one after the other and share the caches warmed by the ones before: \
             \"alone on the hook\" is what a tracer costs when it is the only one (cold caches, as after a quiet \
             spell), \"all attached\" shows how sharing the hook moves it. \"All its programs\": every program of the \
             contender (oomtrace also hooks signals, exits, reclaim and the OOM reaper) per kill.",
            self.bpf_stats_sysctl.0.map_or("?".to_owned(), |v| v.to_string()),
            self.bpf_stats_sysctl.1.map_or("?".to_owned(), |v| v.to_string()),
        );
        let _ = writeln!(
            out,
            "- Idle: utime + stime from `/proc/PID/stat` and VmRSS, each contender alone, from {} s after its ready \
             line. Variants that only differ in their eBPF programs are measured in the storms only (–). Start-up: \
             exec to the bench reading the ready line (oomtrace `start`, bpftrace `BEGIN`, the floor's and the \
             scraper's `start`). Load average before/after: {} / {}.",
            super::SETTLE.as_secs(),
            self.loadavg.0,
            self.loadavg.1
        );
        out
    }

    pub fn to_json(&self) -> Value {
        let specs = self.columns();
        let mut summary = serde_json::Map::new();
        for row in self.rows() {
            let mut per = serde_json::Map::new();
            for (s, v) in specs.iter().zip(row.values) {
                let Some(v) = v else { continue };
                let st = Stats::new(v.iter().copied());
                per.insert(
                    s.id.clone(),
                    json!({
                        "median": st.as_ref().map(Stats::median),
                        "min": st.as_ref().map(Stats::min),
                        "max": st.as_ref().map(Stats::max),
                        "per_run": v,
                    }),
                );
            }
            summary.insert(row.key, json!({ "label": row.label, "contenders": per }));
        }
        let targets: Vec<Value> = self
            .targets()
            .into_iter()
            .map(|(t, m, met, runs)| json!({ "target": t, "measured": m, "met": met, "runs_meeting": runs }))
            .collect();
        let breakdown: Vec<Value> = self
            .breakdown()
            .into_iter()
            .map(|(label, v, d)| json!({ "program": label, "ns_per_run": v, "delta_ns": d }))
            .collect();
        json!({
            "date": self.date,
            "kernel": self.kernel,
            "cpus": self.cpus,
            "cgroup_version": self.hierarchy_version,
            "cgroup_limit_bytes": self.cgroup_limit,
            "hog_step_kb": self.hog_step_kb.parse::<u64>().ok(),
            "storms": self.storms,
            "solo_kills": self.solo_kills,
            "idle_seconds": self.idle_seconds,
            "runs_count": self.runs.len(),
            "bench_seconds": self.bench_seconds,
            "others_cpu_pct": self.others_cpu_pct,
            "build_seconds": self.build_seconds,
            "boot_minus_mono_ns": self.mono_offset_ns,
            "bpf_stats_enabled": { "before": self.bpf_stats_sysctl.0, "after": self.bpf_stats_sysctl.1 },
            "loadavg": { "before": self.loadavg.0, "after": self.loadavg.1 },
            "command": self.command,
            "source": {
                "commit": self.source.commit,
                "subject": self.source.subject,
                "dirty": self.source.dirty,
                "before_build": self.source.before_build.as_ref().map(|b| json!({
                    "commit": b.commit, "subject": b.subject, "dirty": b.dirty,
                })),
            },
            "startups_per_run": self.startups,
            "per_kill": self.per_kill().into_iter().map(|p| json!({
                "key": p.key,
                "figure": p.figure,
                "oomtrace": p.oomtrace,
                "floor": p.floor,
                "per_run": p.values,
                "limit": p.limit,
                "unit": p.unit.trim(),
                "target": p.target,
                "void": p.void,
            })).collect::<Vec<_>>(),
            "oomtrace_auto": { "mode": self.lineup.auto_mode, "fallbacks": self.lineup.auto_fallbacks },
            "contenders": self.specs().iter().map(|s| json!({
                "id": s.id,
                "label": s.label,
                "family": format!("{:?}", s.family),
                "hook": s.hook.name(),
                "program": s.program,
                "args": s.args,
                "measured_alone": s.alone,
                "in_shared_storms": s.shared,
                "binary": self.sizes.get(&s.id).map(|b| json!({
                    "path": b.path, "bytes": b.bytes, "shared_libs_bytes": b.libs_bytes, "shared_libs": b.libs,
                })),
            })).collect::<Vec<_>>(),
            "not_run": self.lineup.absent.iter().map(|(l, r)| json!({ "contender": l, "reason": r })).collect::<Vec<_>>(),
            "notes": self.lineup.notes,
            "targets": targets,
            "bpf_breakdown_tp_btf": breakdown,
            "oomtrace_programs_solo": self.programs(AUTO).into_iter().map(|(n, r, k)| json!({
                "name": n, "ns_per_run": r, "runs_per_kill": k,
            })).collect::<Vec<_>>(),
            "summary": summary,
            "runs": self.runs.iter().map(run_json).collect::<Vec<_>>(),
        })
    }
}

/// The three load averages of a /proc/loadavg line.
fn loadavg3(line: &str) -> String {
    line.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn session_json(s: &Session) -> Value {
    let per: serde_json::Map<String, Value> = s
        .obs
        .iter()
        .map(|(id, o)| {
            let st = Stats::new(o.latencies_ms.iter().copied());
            (
                id.clone(),
                json!({
                    "delivered_full": o.delivered_full,
                    "delivered_any": o.delivered_any,
                    "kmsg_oneline": o.oneline,
                    "lost": o.lost,
                    "latency_ms": {
                        "p50": st.as_ref().map(|s| s.percentile(50.0)),
                        "p99": st.as_ref().map(|s| s.percentile(99.0)),
                        "max": st.as_ref().map(Stats::max),
                    },
                    "latencies_ms": o.latencies_ms,
                    "first_kills_ms": o.first_kills_ms,
                    "missing_detail": o.missing,
                    "kmsg_ts_minus_kill_ms_median":
                        Stats::new(o.kmsg_ts_minus_kill_ms.iter().copied()).map(|s| s.median()),
                    "bpf_programs": o.progs.iter().map(|p| json!({
                        "name": p.name, "id": p.id, "prog_type": p.prog_type,
                        "run_time_ns": p.run_time_ns, "run_cnt": p.run_cnt,
                    })).collect::<Vec<_>>(),
                    "rss_after_kib": o.rss_after_kib,
                    "exit": o.exit,
                    "error": o.error,
                }),
            )
        })
        .collect();
    json!({
        "kills": s.kills,
        "kernel_kills": s.kernel_kills(),
        "cgroup_oom_kills": s.cgroup_kills,
        "vmstat_oom_kill_delta": s.vmstat_kills,
        "irq_work_interrupts": s.irq_work,
        "seconds": s.seconds,
        "attach_order": s.order,
        "foreign_oom_tracers": s.foreign,
        "contenders": per,
    })
}

fn run_json(r: &Run) -> Value {
    let alone: serde_json::Map<String, Value> = r
        .alone
        .iter()
        .map(|(id, a)| {
            let v = match a {
                Ok(a) => json!({
                    "startup_read_ms": a.startup_read_ms,
                    "startup_own_ms": a.startup_own_ms,
                    "idle_rss_kib": a.idle_rss_kib,
                    "idle_cpu_ticks": a.idle_cpu_ticks,
                    "idle_seconds": a.idle_seconds,
                    "idle_cpu_pct": a.idle_cpu_pct,
                }),
                Err(e) => json!({ "error": e }),
            };
            (id.clone(), v)
        })
        .collect();
    json!({
        "startups": r.startups.iter().map(|s| match s {
            Ok(s) => json!({ "read_ms": s.read_ms, "own_ms": s.own_ms }),
            Err(e) => json!({ "error": e }),
        }).collect::<Vec<_>>(),
        "alone": alone,
        "solo_storms": r.solo.iter().map(session_json).collect::<Vec<_>>(),
        "shared_storms": r.sessions.iter().map(session_json).collect::<Vec<_>>(),
    })
}

pub fn write_json(path: &Path, value: &Value) -> Result<()> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("failed to create directory {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(value).context("failed to serialize the results")?;
    fs::write(path, text + "\n").with_context(|| format!("failed to write {}", path.display()))?;
    eprintln!("bench: raw numbers in {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells() {
        assert_eq!(cell(&[], 1), "n/a");
        assert_eq!(cell(&[2.0], 1), "2.0");
        assert_eq!(cell(&[3.0, 1.0, 2.0], 0), "2 [1–3]");
        assert_eq!(cell(&[5.0, 5.0], 2), "5.00");
    }

    #[test]
    fn thousands_separator() {
        assert_eq!(thousands(300), "300");
        assert_eq!(thousands(3000), "3,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn hook_programs() {
        assert!(is_hook_prog(Family::Oomtrace, "mark_victim_btf"));
        assert!(!is_hook_prog(Family::Oomtrace, "process_exit"));
        assert!(is_hook_prog(Family::Bpftrace, "mark_victim"));
        assert!(is_hook_prog(Family::Floor, "floor_tp"));
        assert!(is_hook_prog(Family::Floor, "floor_kstack"));
        assert!(!is_hook_prog(Family::Bpftrace, "BEGIN"));
    }
}
