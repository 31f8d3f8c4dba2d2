//! oomtrace-bench-kmsg: OOM kills scraped from the kernel log, the way kubelet sees them.
//!
//! kubelet's OOM watcher takes its events from cAdvisor's `utils/oomparser`, which reads
//! `/dev/kmsg` record by record (euank/go-kmsg-parser) and runs a small state machine: a record
//! containing `invoked oom-killer:` opens a report; in it, the `oom-kill:constraint=…` line
//! (Linux ≥ 5.0; the `Task in … killed as a result of limit of …` line before) names the cgroups
//! and the victim and closes the report, as does a `Killed process <pid> (<comm>)` line. Records
//! outside a report are ignored. This is that state machine, reimplemented, printing JSON Lines:
//!
//! - `{"type":"start","boot_ns":N}` once, after seeking to the end of the log;
//! - `{"type":"full",…}` per closed report: the event kubelet would emit (pid, comm, constraint,
//!   oom_memcg, task_memcg), with the kmsg timestamp (µs) of the closing record;
//! - `{"type":"oneline",…}` per `Killed process` record, report or not: the one-line message the
//!   kernel prints for every kill. kubelet drops those that are not part of a report, which is
//!   every kill whose report the kernel rate-limited (`oom_kill_process()`'s `__ratelimit`, 10
//!   reports per 5 s);
//! - `{"type":"lost","count":N}` when the kernel's log buffer overwrote records before we read them.
//!
//! Stops on SIGINT/SIGTERM (the default action, set at start). Exit codes: 1 when /dev/kmsg cannot be read.

use std::{
    fs::File,
    io::{self, Read, Seek, SeekFrom, Write},
    process::ExitCode,
};

use serde_json::{Value, json};

/// One `/dev/kmsg` record: `PRIORITY,SEQ,TIMESTAMP_US,FLAGS[,…];MESSAGE\n[ KEY=VALUE\n…]`.
#[derive(Debug, PartialEq)]
struct Record<'a> {
    /// When the kernel stored the message: its `local_clock()` in µs since boot (the
    /// `dmesg` timestamp; CLOCK_MONOTONIC-like, and in practice what go-kmsg-parser adds to the
    /// boot time).
    ts_us: u64,
    /// The first line of the message (continuation lines carry device properties).
    message: &'a str,
}

fn parse_record(raw: &str) -> Option<Record<'_>> {
    let (meta, rest) = raw.split_once(';')?;
    let ts_us = meta.split(',').nth(2)?.parse().ok()?;
    let message = rest.split('\n').next().unwrap_or("");
    Some(Record { ts_us, message })
}

/// `… Killed process 1234 (comm) total-vm:…`: pid and comm (up to the last `)`, as cAdvisor's
/// greedy `\((.+)\)`).
fn killed_process(message: &str) -> Option<(u32, &str)> {
    let rest = &message[message.find("Killed process ")? + "Killed process ".len()..];
    let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    let pid = rest[..digits].parse().ok()?;
    let rest = rest[digits..].strip_prefix(" (")?;
    let comm = &rest[..rest.rfind(')')?];
    Some((pid, comm))
}

/// The fields of `oom-kill:constraint=…,nodemask=…,cpuset=…,mems_allowed=…,oom_memcg=…,
/// task_memcg=…,task=…,pid=…,uid=…` (dump_oom_victim(), mm/oom_kill.c v6.18).
fn constraint_line(message: &str) -> Option<Vec<(&str, &str)>> {
    let rest = &message[message.find("oom-kill:")? + "oom-kill:".len()..];
    let fields: Vec<(&str, &str)> = rest.split(',').filter_map(|kv| kv.split_once('=')).collect();
    fields.iter().any(|(k, _)| *k == "pid").then_some(fields)
}

/// The pre-5.0 line: `Task in /a killed as a result of limit of /b`.
fn legacy_container_line(message: &str) -> Option<(&str, &str)> {
    let rest = &message[message.find("Task in ")? + "Task in ".len()..];
    let (victim_cg, limit_cg) = rest.split_once(" killed as a result of limit of ")?;
    Some((victim_cg, limit_cg.trim_end()))
}

/// cAdvisor's state machine; `feed` returns the JSON lines a record produces.
#[derive(Default)]
struct Scraper {
    /// An open report: the header's kmsg timestamp and what the report said so far.
    report: Option<Report>,
}

#[derive(Default)]
struct Report {
    header_us: u64,
    oom_memcg: Option<String>,
    task_memcg: Option<String>,
}

impl Scraper {
    fn feed(&mut self, rec: &Record<'_>) -> Vec<Value> {
        let mut out = Vec::new();
        let killed = killed_process(rec.message);
        if let Some(report) = &mut self.report {
            if let Some(fields) = constraint_line(rec.message) {
                let get = |key: &str| fields.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
                out.push(json!({
                    "type": "full",
                    "pid": get("pid").and_then(|p| p.parse::<u32>().ok()),
                    "comm": get("task"),
                    "constraint": get("constraint"),
                    "oom_memcg": get("oom_memcg"),
                    "task_memcg": get("task_memcg"),
                    "header_kmsg_us": report.header_us,
                    "kmsg_us": rec.ts_us,
                }));
                self.report = None;
            } else if let Some((victim_cg, limit_cg)) = legacy_container_line(rec.message) {
                report.task_memcg = Some(victim_cg.to_owned());
                report.oom_memcg = Some(limit_cg.to_owned());
            } else if let Some((pid, comm)) = killed {
                out.push(json!({
                    "type": "full",
                    "pid": pid,
                    "comm": comm,
                    "constraint": null,
                    "oom_memcg": report.oom_memcg,
                    "task_memcg": report.task_memcg,
                    "header_kmsg_us": report.header_us,
                    "kmsg_us": rec.ts_us,
                }));
                self.report = None;
            }
        } else if rec.message.contains("invoked oom-killer:") {
            self.report = Some(Report {
                header_us: rec.ts_us,
                ..Report::default()
            });
        }
        if let Some((pid, comm)) = killed {
            out.push(json!({ "type": "oneline", "pid": pid, "comm": comm, "kmsg_us": rec.ts_us }));
        }
        out
    }
}

fn boot_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn emit(out: &mut impl Write, value: &Value) -> io::Result<()> {
    writeln!(out, "{value}")?;
    out.flush()
}

fn scrape() -> io::Result<()> {
    let mut kmsg = File::open("/dev/kmsg")?;
    // Only what happens from now on (as go-kmsg-parser's SeekEnd).
    kmsg.seek(SeekFrom::End(0))?;
    let mut out = io::stdout().lock();
    emit(&mut out, &json!({ "type": "start", "boot_ns": boot_ns() }))?;
    let mut scraper = Scraper::default();
    // One read returns one record (Documentation/ABI/testing/dev-kmsg); 8 KiB as go-kmsg-parser.
    let mut buf = vec![0u8; 8192];
    loop {
        let n = match kmsg.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            // The buffer wrapped past our position: records were overwritten before we read them.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {
                emit(&mut out, &json!({ "type": "lost", "count": null }))?;
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let text = String::from_utf8_lossy(&buf[..n]);
        let Some(rec) = parse_record(&text) else {
            continue;
        };
        for line in scraper.feed(&rec) {
            emit(&mut out, &line)?;
        }
    }
}

fn main() -> ExitCode {
    // Stop on SIGINT/SIGTERM even when started from a shell that ignores them in background jobs
    // (sh without job control sets SIGINT to SIG_IGN for `cmd &`, and exec keeps an ignored
    // signal ignored): the bench then waited 30 s and killed this process at every stop.
    // SAFETY: resetting a disposition to the default has no memory-safety preconditions.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        libc::signal(libc::SIGTERM, libc::SIG_DFL);
    }
    match scrape() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oomtrace-bench-kmsg: error: failed to read /dev/kmsg: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(message: &str, ts_us: u64) -> String {
        format!("3,1234,{ts_us},-,caller=T42;{message}\n SUBSYSTEM=x\n")
    }

    fn feed_all(lines: &[(&str, u64)]) -> Vec<Value> {
        let mut s = Scraper::default();
        let raws: Vec<String> = lines.iter().map(|(m, t)| rec(m, *t)).collect();
        raws.iter()
            .flat_map(|r| s.feed(&parse_record(r).expect("record")))
            .collect()
    }

    #[test]
    fn record_fields() {
        let raw = rec("hello world", 99);
        assert_eq!(
            parse_record(&raw),
            Some(Record {
                ts_us: 99,
                message: "hello world"
            })
        );
        assert_eq!(parse_record("garbage"), None);
    }

    #[test]
    fn full_report_then_oneline() {
        let out = feed_all(&[
            (
                "oomtrace-hog invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
                10,
            ),
            ("Call Trace:", 11),
            (
                "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/a/b,task_memcg=/a/b,task=oomtrace-hog,pid=4321,uid=0",
                12,
            ),
            (
                "Memory cgroup out of memory: Killed process 4321 (oomtrace-hog) total-vm:8404kB, anon-rss:8192kB, file-rss:1024kB, shmem-rss:0kB, UID:0 pgtables:52kB oom_score_adj:0",
                13,
            ),
        ]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0]["type"], "full");
        assert_eq!(out[0]["pid"], 4321);
        assert_eq!(out[0]["oom_memcg"], "/a/b");
        assert_eq!(out[0]["constraint"], "CONSTRAINT_MEMCG");
        assert_eq!(out[0]["header_kmsg_us"], 10);
        assert_eq!(out[0]["kmsg_us"], 12);
        assert_eq!(out[1]["type"], "oneline");
        assert_eq!(out[1]["pid"], 4321);
        assert_eq!(out[1]["comm"], "oomtrace-hog");
    }

    #[test]
    fn rate_limited_kill_is_oneline_only() {
        let out = feed_all(&[(
            "Memory cgroup out of memory: Killed process 77 (a (b)) total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0",
            5,
        )]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0]["type"], "oneline");
        assert_eq!(out[0]["pid"], 77);
        assert_eq!(out[0]["comm"], "a (b)");
    }

    #[test]
    fn legacy_report_closes_on_killed_process() {
        let out = feed_all(&[
            ("x invoked oom-killer: gfp_mask=0x24000c0", 1),
            ("Task in /a killed as a result of limit of /b", 2),
            ("Killed process 9 (x) total-vm:1kB", 3),
        ]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0]["type"], "full");
        assert_eq!(out[0]["task_memcg"], "/a");
        assert_eq!(out[0]["oom_memcg"], "/b");
        assert_eq!(out[1]["type"], "oneline");
    }
}
