//! The contenders: how each is started, how its ready line and its kill lines are recognised, and
//! what it has shown so far (`Seen`), whatever its output format.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::lineproc::LineProc;
use crate::tracer::{Stamped, Tracer};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Oomtrace,
    Bpftrace,
    Kmsg,
    Floor,
}

/// Where a contender hears of a kill.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// tp_btf/mark_victim.
    TpBtf,
    /// The classic tracepoint oom/mark_victim.
    Tracepoint,
    /// The kernel log.
    Kmsg,
}

impl Hook {
    pub fn from_mode(mode: &str) -> Self {
        if mode == "tracepoint" {
            Self::Tracepoint
        } else {
            Self::TpBtf
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::TpBtf => "tp_btf",
            Self::Tracepoint => "tracepoint",
            Self::Kmsg => "kmsg",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Spec {
    /// Stable key in the JSON.
    pub id: String,
    /// Column header in the table.
    pub label: String,
    pub family: Family,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub hook: Hook,
    /// Also measured alone (start-up, idle RSS and CPU); variants that only differ in their eBPF
    /// programs are measured in the storms only.
    pub alone: bool,
    /// Watches the shared storms (all contenders at once); every contender also has a solo storm.
    pub shared: bool,
    /// Stopped (SIGSTOP) during its solo storm, so that nothing reads its ring buffer and no
    /// program of it pays for waking the reader: its eBPF cost without wakeups.
    pub freeze: bool,
    /// `oomtrace run` as is: driven by `crate::tracer::Tracer`.
    pub plain_oomtrace: bool,
}

/// The contender's ready line.
#[derive(Clone, Copy, Debug)]
pub struct Ready {
    /// CLOCK_BOOTTIME when we read it.
    pub read_ns: u64,
    /// The boot-time stamp the contender put in it, if any.
    pub own_ns: Option<u64>,
}

/// What a contender said about one victim (by pid, the thread-group id; the hog is single-threaded,
/// so tid = tgid).
#[derive(Clone, Debug, Default)]
pub struct Kill {
    /// CLOCK_BOOTTIME when we read its first line about this victim.
    pub read_ns: u64,
    /// The kernel's mark_victim time as the contender printed it, in CLOCK_BOOTTIME ns.
    pub kill_ns: Option<u64>,
    /// A record with every detail the contender offers (oomtrace: victim, trigger, cgroups; kmsg:
    /// a full report; bpftrace and the floor: their line).
    pub full: bool,
    /// kmsg: a one-line `Killed process` message was seen.
    pub oneline: bool,
    /// kmsg: the log record's timestamp (µs, local_clock).
    pub kmsg_us: Option<u64>,
    /// oomtrace: the victim's memory cgroup id (`victim.cgroup.id`).
    pub cgroup_id: Option<u64>,
    /// oomtrace: the fields that kept its record short of full detail.
    pub missing: Vec<&'static str>,
}

#[derive(Debug, Default)]
pub struct Seen {
    pub ready: Option<Ready>,
    /// `start.attach.mode` (oomtrace) and `start.attach.fallbacks`.
    pub attach_mode: Option<String>,
    pub fallbacks: Vec<String>,
    pub kills: HashMap<u32, Kill>,
    /// Records the contender said it lost (oomtrace `lost` lines; kmsg EPIPE).
    pub lost: u64,
    pub lines: u64,
    pub unparsed: u64,
}

enum Proc {
    Tracer(Box<Tracer>),
    Lines(LineProc),
}

/// A running contender and what it has shown.
pub struct Watch {
    pub spec: Spec,
    proc: Proc,
    pub seen: Seen,
    /// Tracer keeps every line; this many are already in `seen`.
    consumed: usize,
    /// CLOCK_BOOTTIME − CLOCK_MONOTONIC, for bpftrace's `nsecs`.
    mono_offset_ns: i64,
}

impl Watch {
    pub fn spawn(spec: &Spec, stderr_log: &Path, mono_offset_ns: i64) -> Result<Self> {
        let proc = if spec.plain_oomtrace {
            Proc::Tracer(Box::new(Tracer::spawn(&spec.program)?))
        } else {
            Proc::Lines(LineProc::spawn(&spec.program, &spec.args, stderr_log)?)
        };
        Ok(Self {
            spec: spec.clone(),
            proc,
            seen: Seen::default(),
            consumed: 0,
            mono_offset_ns,
        })
    }

    pub fn pid(&self) -> u32 {
        match &self.proc {
            Proc::Tracer(t) => t.pid(),
            Proc::Lines(p) => p.pid(),
        }
    }

    pub fn spawned_ns(&self) -> u64 {
        match &self.proc {
            Proc::Tracer(t) => t.spawned_ns(),
            Proc::Lines(p) => p.spawned_ns(),
        }
    }

    /// Takes what arrived within `wait` into `seen`. Fails if the contender exited.
    pub fn pump(&mut self, wait: Duration) -> Result<()> {
        match &mut self.proc {
            Proc::Tracer(t) => {
                // Tracer takes one line per wait: wait for the first, then take what is there.
                let have = self.consumed;
                if t.wait_until(wait, |lines| lines.len() > have)? {
                    loop {
                        let n = t.lines().len();
                        if !t.wait_until(Duration::from_millis(1), |lines| lines.len() > n)? {
                            break;
                        }
                    }
                }
                for l in &t.lines()[self.consumed..] {
                    self.seen.lines += 1;
                    absorb_oomtrace(&mut self.seen, l);
                }
                self.consumed = t.lines().len();
            }
            Proc::Lines(p) => {
                let got = p.receive(wait);
                for (read_ns, text) in got.lines {
                    absorb_text(
                        &mut self.seen,
                        self.spec.family,
                        read_ns,
                        &text,
                        self.mono_offset_ns,
                    );
                }
                if got.closed {
                    let how = p
                        .exit_status()
                        .map_or("closed its stdout".to_owned(), |s| format!("exited ({s})"));
                    bail!("{how}; stderr: {}", p.stderr_tail());
                }
            }
        }
        Ok(())
    }

    /// Waits for the ready line.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<Ready> {
        let deadline = Instant::now() + timeout;
        while self.seen.ready.is_none() {
            if Instant::now() >= deadline {
                let stderr = match &self.proc {
                    Proc::Tracer(_) => "discarded (run `target/release/oomtrace run` by hand)".to_owned(),
                    Proc::Lines(p) => p.stderr_tail(),
                };
                bail!("no ready line within {} s; stderr: {stderr}", timeout.as_secs());
            }
            self.pump(Duration::from_millis(50))?;
        }
        self.seen.ready.context("no ready line")
    }

    /// SIGINT, then whatever was still on its way. oomtrace must exit 0; the others' exit status is
    /// returned for the record.
    pub fn stop(&mut self, timeout: Duration) -> Result<String> {
        match &mut self.proc {
            Proc::Tracer(t) => {
                let status = t.stop(timeout)?;
                for l in &t.lines()[self.consumed..] {
                    self.seen.lines += 1;
                    absorb_oomtrace(&mut self.seen, l);
                }
                self.consumed = t.lines().len();
                if !status.success() {
                    bail!("oomtrace exited with {status} on SIGINT, expected exit 0");
                }
                Ok(status.to_string())
            }
            Proc::Lines(p) => {
                let (lines, status) = p.stop(timeout)?;
                for (read_ns, text) in lines {
                    absorb_text(
                        &mut self.seen,
                        self.spec.family,
                        read_ns,
                        &text,
                        self.mono_offset_ns,
                    );
                }
                if self.spec.family == Family::Oomtrace && !status.success() {
                    bail!(
                        "oomtrace exited with {status} on SIGINT, expected exit 0; stderr: {}",
                        p.stderr_tail()
                    );
                }
                Ok(status.to_string())
            }
        }
    }
}

fn absorb_oomtrace(seen: &mut Seen, l: &Stamped) {
    let v = &l.value;
    match l.kind() {
        "start" => {
            seen.ready = Some(Ready {
                read_ns: l.read_ns,
                own_ns: l.boot_ns(),
            });
            seen.attach_mode = v["attach"]["mode"].as_str().map(str::to_owned);
            seen.fallbacks = v["attach"]["fallbacks"]
                .as_array()
                .map(|a| a.iter().filter_map(|f| f.as_str().map(str::to_owned)).collect())
                .unwrap_or_default();
        }
        "oom_kill" => {
            let victim = &v["victim"];
            let Some(pid) = victim["pid"].as_u64().or_else(|| victim["tid"].as_u64()) else {
                seen.unparsed += 1;
                return;
            };
            // Full detail: who was killed, who triggered it, in which cgroup, whose limit fired.
            let checks = [
                ("victim.pid", victim["pid"].is_u64()),
                (
                    "victim.comm",
                    victim["comm"].as_str().is_some_and(|c| !c.is_empty()),
                ),
                ("victim.cgroup.path", victim["cgroup"]["path"].is_string()),
                ("trigger.pid", v["trigger"]["pid"].is_u64()),
                ("oom_memcg.path", v["oom_memcg"]["path"].is_string()),
            ];
            let missing: Vec<&'static str> = checks.iter().filter(|c| !c.1).map(|c| c.0).collect();
            note_kill(
                seen,
                pid as u32,
                l.read_ns,
                l.boot_ns(),
                missing.is_empty(),
                false,
                None,
            );
            if let Some(k) = seen.kills.get_mut(&(pid as u32)) {
                k.cgroup_id = k.cgroup_id.or(victim["cgroup"]["id"].as_u64());
                if !k.full {
                    k.missing = missing;
                }
            }
        }
        "lost" => seen.lost += v["count"].as_u64().unwrap_or(0),
        _ => {}
    }
}

fn absorb_text(seen: &mut Seen, family: Family, read_ns: u64, text: &str, mono_offset_ns: i64) {
    seen.lines += 1;
    let ok = match family {
        Family::Oomtrace => match serde_json::from_str::<Value>(text) {
            Ok(value) => {
                absorb_oomtrace(seen, &Stamped { read_ns, value });
                true
            }
            Err(_) => false,
        },
        Family::Bpftrace | Family::Floor => absorb_columns(seen, family, read_ns, text, mono_offset_ns),
        Family::Kmsg => absorb_kmsg(seen, read_ns, text),
    };
    if !ok {
        seen.unparsed += 1;
    }
}

/// `start <ns>` and `kill <ns> <tid> …` (bench/oomkill.bt: CLOCK_MONOTONIC; oomfloor: BOOTTIME,
/// with the tgid as 4th column).
fn absorb_columns(seen: &mut Seen, family: Family, read_ns: u64, text: &str, mono_offset_ns: i64) -> bool {
    let to_boot = |ns: u64| -> u64 {
        if family == Family::Bpftrace {
            (ns as i64 + mono_offset_ns) as u64
        } else {
            ns
        }
    };
    let mut cols = text.split_whitespace();
    match (cols.next(), cols.next().and_then(|c| c.parse::<u64>().ok())) {
        (Some("start"), Some(ns)) => {
            seen.ready = Some(Ready {
                read_ns,
                own_ns: Some(to_boot(ns)),
            });
            true
        }
        (Some("kill"), Some(ns)) => {
            let Some(tid) = cols.next().and_then(|c| c.parse::<u32>().ok()) else {
                return false;
            };
            let tgid = if family == Family::Floor {
                cols.next()
                    .and_then(|c| c.parse::<u32>().ok())
                    .filter(|t| *t != 0)
            } else {
                None
            };
            note_kill(
                seen,
                tgid.unwrap_or(tid),
                read_ns,
                Some(to_boot(ns)),
                true,
                false,
                None,
            );
            true
        }
        // bpftrace's "Attaching N probes..." and the like.
        _ => family == Family::Bpftrace,
    }
}

fn absorb_kmsg(seen: &mut Seen, read_ns: u64, text: &str) -> bool {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return false;
    };
    match v["type"].as_str() {
        Some("start") => {
            seen.ready = Some(Ready {
                read_ns,
                own_ns: v["boot_ns"].as_u64(),
            });
        }
        Some(kind @ ("full" | "oneline")) => {
            let Some(pid) = v["pid"].as_u64() else {
                return false;
            };
            let full = kind == "full";
            note_kill(
                seen,
                pid as u32,
                read_ns,
                None,
                full,
                !full,
                v["kmsg_us"].as_u64(),
            );
            // Prefer the `Killed process` record's time: it is printed right after mark_victim
            // (the report's lines come before it).
            if !full && let Some(k) = seen.kills.get_mut(&(pid as u32)) {
                k.kmsg_us = v["kmsg_us"].as_u64().or(k.kmsg_us);
            }
        }
        Some("lost") => seen.lost += 1,
        _ => return false,
    }
    true
}

fn note_kill(
    seen: &mut Seen,
    pid: u32,
    read_ns: u64,
    kill_ns: Option<u64>,
    full: bool,
    oneline: bool,
    kmsg_us: Option<u64>,
) {
    let k = seen.kills.entry(pid).or_insert_with(|| Kill {
        read_ns,
        ..Kill::default()
    });
    k.kill_ns = k.kill_ns.or(kill_ns);
    k.full |= full;
    k.oneline |= oneline;
    k.kmsg_us = k.kmsg_us.or(kmsg_us);
}

/// Starts a contender, waits for its ready line and stops it again: does it run here, and why not.
/// Returns what the ready line said.
pub fn probe(
    spec: &Spec,
    stderr_log: &Path,
    timeout: Duration,
    stop_timeout: Duration,
    mono_offset_ns: i64,
) -> Result<Seen> {
    let mut w = Watch::spawn(spec, stderr_log, mono_offset_ns)?;
    w.wait_ready(timeout)?;
    // It attached: that is what the probe asks. A slow or unclean stop is said, not held against it.
    if let Err(e) = w.stop(stop_timeout) {
        eprintln!("bench: warning: {} did not stop cleanly: {e:#}", spec.id);
    }
    Ok(w.seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpftrace_lines() {
        let mut s = Seen::default();
        absorb_text(&mut s, Family::Bpftrace, 5, "Attaching 2 probes...", 100);
        absorb_text(&mut s, Family::Bpftrace, 7, "start 1000", 100);
        absorb_text(
            &mut s,
            Family::Bpftrace,
            9,
            "kill 2000 42 total_vm_kb=1 anon_rss_kb=2 trigger_comm=a b victim_comm=c",
            100,
        );
        assert_eq!(s.ready.unwrap().own_ns, Some(1100));
        let k = &s.kills[&42];
        assert_eq!((k.read_ns, k.kill_ns, k.full), (9, Some(2100), true));
        assert_eq!(s.unparsed, 0);
    }

    #[test]
    fn floor_lines_prefer_tgid() {
        let mut s = Seen::default();
        absorb_text(&mut s, Family::Floor, 1, "kill 50 43 42 hog", 0);
        absorb_text(&mut s, Family::Floor, 2, "kill 60 44 0 hog", 0);
        assert!(s.kills.contains_key(&42));
        assert!(s.kills.contains_key(&44));
        absorb_text(&mut s, Family::Floor, 3, "nonsense", 0);
        assert_eq!(s.unparsed, 1);
    }

    #[test]
    fn kmsg_full_then_oneline_is_one_kill() {
        let mut s = Seen::default();
        absorb_text(
            &mut s,
            Family::Kmsg,
            10,
            r#"{"type":"full","pid":7,"kmsg_us":3,"comm":"x"}"#,
            0,
        );
        absorb_text(
            &mut s,
            Family::Kmsg,
            11,
            r#"{"type":"oneline","pid":7,"kmsg_us":4,"comm":"x"}"#,
            0,
        );
        absorb_text(
            &mut s,
            Family::Kmsg,
            12,
            r#"{"type":"oneline","pid":8,"kmsg_us":5,"comm":"x"}"#,
            0,
        );
        let k = &s.kills[&7];
        assert!(k.full && k.oneline);
        assert_eq!((k.read_ns, k.kmsg_us), (10, Some(4)));
        assert!(!s.kills[&8].full);
    }

    #[test]
    fn oomtrace_full_detail() {
        let mut s = Seen::default();
        let full = r#"{"type":"oom_kill","boot_ns":5,"victim":{"pid":3,"tid":3,"comm":"h","cgroup":{"id":1,"path":"/a"}},
                      "trigger":{"pid":3},"oom_memcg":{"id":1,"path":"/a"}}"#;
        let partial = r#"{"type":"oom_kill","boot_ns":6,"victim":{"pid":4,"tid":4,"comm":"h","cgroup":null},
                         "trigger":{"pid":4},"oom_memcg":null}"#;
        absorb_text(&mut s, Family::Oomtrace, 9, &full.replace('\n', ""), 0);
        absorb_text(&mut s, Family::Oomtrace, 9, &partial.replace('\n', ""), 0);
        assert!(s.kills[&3].full);
        assert_eq!(s.kills[&3].kill_ns, Some(5));
        assert!(!s.kills[&4].full);
        assert_eq!(s.kills[&4].missing, ["victim.cgroup.path", "oom_memcg.path"]);
    }
}
