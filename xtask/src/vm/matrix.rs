//! The kernel × attach mode × test matrix, in Markdown (it goes into README.md as it is).

use std::fmt::Write as _;

use super::protocol::{self, PlannedTest, Status, TestResult};

/// Everything one kernel's boot said.
pub struct KernelOutcome {
    /// What `--kernel` calls it: the column group.
    pub name: String,
    /// Where it came from, e.g. `linux-image-6.1.0-56-cloud-amd64 6.1.192-2`.
    pub source: String,
    pub release: Option<String>,
    /// `oomtrace check`'s verdict per mode.
    pub checks: Vec<(String, String)>,
    pub planned: Vec<PlannedTest>,
    pub results: Vec<TestResult>,
    /// Why the boot as a whole failed (kernel errors, timeout, no `done` record), if it did.
    pub problems: Vec<String>,
    /// Its boots (each runs some of the modes), in the order of their modes.
    pub boots: Vec<BootTime>,
}

/// How long one boot of a kernel took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootTime {
    /// The modes it ran, joined by `+`.
    pub modes: String,
    pub secs: u64,
}

/// One cell.
#[derive(Debug, PartialEq, Eq)]
enum Cell {
    /// The test is for another mode.
    NotPlanned,
    Pass,
    /// Passed, but oomtrace attached only in other modes than the column's.
    OtherMode(Vec<String>),
    Skip(String),
    Fail(String),
}

/// The rendered matrix and its tally.
pub struct Matrix {
    pub markdown: String,
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Passes that did not run in their column's mode.
    pub other_mode: usize,
    pub problems: usize,
}

fn row_name(binary: &str, test: &str) -> String {
    let test = match protocol::mode_of_test(test) {
        Some(mode) => {
            let stem = test.strip_suffix(&format!("{mode}_mode")).unwrap_or(test);
            format!("{stem}‹mode›_mode")
        }
        None => test.to_owned(),
    };
    format!("{binary}::{test}")
}

fn cell(k: &KernelOutcome, mode: &str, binary: &str, row: &str) -> Cell {
    let planned = k
        .planned
        .iter()
        .find(|t| t.mode == mode && t.binary == binary && row_name(binary, &t.test) == row);
    let Some(planned) = planned else {
        return Cell::NotPlanned;
    };
    let result = k
        .results
        .iter()
        .find(|r| r.mode == mode && r.binary == binary && r.test == planned.test);
    let Some(r) = result else {
        let why = if k.problems.is_empty() {
            "no result: the VM stopped before this test reported".to_owned()
        } else {
            format!("no result: {}", k.problems.join("; "))
        };
        return Cell::Fail(why);
    };
    match r.status {
        Status::Pass if r.attached.is_empty() || r.attached.iter().any(|m| m == mode) => Cell::Pass,
        Status::Pass => Cell::OtherMode(r.attached.clone()),
        Status::Skip => Cell::Skip(r.detail.clone()),
        Status::Fail => Cell::Fail(r.detail.clone()),
        Status::Timeout => Cell::Fail(format!("timeout: {}", r.detail)),
    }
}

/// Numbered notes, one per distinct text.
#[derive(Default)]
struct Notes(Vec<String>);

impl Notes {
    fn mark(&mut self, text: String) -> usize {
        match self.0.iter().position(|t| *t == text) {
            Some(i) => i + 1,
            None => {
                self.0.push(text);
                self.0.len()
            }
        }
    }
}

/// Cuts `s` to at most `n` characters, marking the cut.
fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

pub fn render(kernels: &[KernelOutcome], modes: &[&str]) -> Matrix {
    let mut rows: Vec<(String, String)> = Vec::new();
    for k in kernels {
        for t in &k.planned {
            let key = (t.binary.clone(), row_name(&t.binary, &t.test));
            if !rows.contains(&key) {
                rows.push(key);
            }
        }
    }
    rows.sort();
    let mut m = Matrix {
        markdown: String::new(),
        passed: 0,
        failed: 0,
        skipped: 0,
        other_mode: 0,
        problems: kernels.iter().map(|k| k.problems.len()).sum(),
    };
    let mut notes = Notes::default();
    let out = &mut m.markdown;

    let _ = write!(out, "| test |");
    for k in kernels {
        for mode in modes {
            let _ = write!(out, " {} {mode} |", k.name);
        }
    }
    let _ = write!(out, "\n|---|");
    for _ in 0..kernels.len() * modes.len() {
        let _ = write!(out, "---|");
    }
    out.push('\n');
    for (binary, row) in &rows {
        let _ = write!(out, "| {row} |");
        for k in kernels {
            for mode in modes {
                let text = match cell(k, mode, binary, row) {
                    Cell::NotPlanned => "–".to_owned(),
                    Cell::Pass => {
                        m.passed += 1;
                        "pass".to_owned()
                    }
                    Cell::OtherMode(attached) => {
                        m.other_mode += 1;
                        let n = notes.mark(format!(
                            "passed, but oomtrace attached in {} only, not in the column's mode: the test \
                             does not take its mode from {}",
                            attached.join(" and "),
                            protocol::ATTACH_ENV
                        ));
                        format!("pass, as {} [{n}]", attached.join("+"))
                    }
                    Cell::Skip(why) => {
                        m.skipped += 1;
                        format!("skip [{}]", notes.mark(format!("skipped: {}", cut(&why, 200))))
                    }
                    Cell::Fail(why) => {
                        m.failed += 1;
                        format!("**FAIL** [{}]", notes.mark(format!("failed: {}", cut(&why, 200))))
                    }
                };
                let _ = write!(out, " {text} |");
            }
        }
        out.push('\n');
    }
    out.push('\n');
    for (i, n) in notes.0.iter().enumerate() {
        // Markdown tables would split at a bare `|`.
        let _ = writeln!(out, "[{}] {}  ", i + 1, n.replace('|', "\\|"));
    }
    if !notes.0.is_empty() {
        out.push('\n');
    }
    for k in kernels {
        let checks: Vec<String> = k.checks.iter().map(|(m, v)| format!("{m} {v}")).collect();
        let _ = writeln!(
            out,
            "- {}: {} (`{}`), {}; `oomtrace check`: {}",
            k.name,
            k.source,
            k.release.as_deref().unwrap_or("release unknown"),
            match k.boots.as_slice() {
                [] => "not booted".to_owned(),
                [b] => format!("one boot, {} s", b.secs),
                boots => format!(
                    "{} boots: {}",
                    boots.len(),
                    boots
                        .iter()
                        .map(|b| format!("{} {} s", b.modes, b.secs))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
            if checks.is_empty() {
                "no answer".to_owned()
            } else {
                checks.join(", ")
            }
        );
        for p in &k.problems {
            let _ = writeln!(out, "  - **boot failed**: {p}");
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(mode: &str, binary: &str, test: &str) -> PlannedTest {
        PlannedTest {
            mode: mode.into(),
            binary: binary.into(),
            test: test.into(),
        }
    }

    fn result(mode: &str, test: &str, status: Status, attached: &[&str], detail: &str) -> TestResult {
        TestResult {
            mode: mode.into(),
            binary: "oom_kill".into(),
            test: test.into(),
            status,
            millis: 1,
            attached: attached.iter().map(|s| (*s).to_owned()).collect(),
            detail: detail.into(),
        }
    }

    #[test]
    fn cells_say_what_ran() {
        let k = KernelOutcome {
            name: "6.1".into(),
            source: "pkg 1".into(),
            release: Some("6.1.0".into()),
            checks: vec![("fentry".into(), "ok".into())],
            planned: vec![
                planned("fentry", "oom_kill", "kill_in_fentry_mode"),
                planned("fentry", "oom_kill", "storm"),
                planned("kprobe", "oom_kill", "kill_in_kprobe_mode"),
                planned("kprobe", "oom_kill", "storm"),
                planned("kprobe", "oom_kill", "lost"),
            ],
            results: vec![
                result("fentry", "kill_in_fentry_mode", Status::Pass, &["fentry"], ""),
                result("fentry", "storm", Status::Skip, &[], "oom_kill:9: needs root"),
                result("kprobe", "kill_in_kprobe_mode", Status::Fail, &["kprobe"], "boom"),
                result("kprobe", "storm", Status::Pass, &["fentry"], ""),
            ],
            problems: vec![],
            boots: vec![BootTime {
                modes: "fentry+kprobe".into(),
                secs: 10,
            }],
        };
        let row = row_name("oom_kill", "kill_in_fentry_mode");
        assert_eq!(row, "oom_kill::kill_in_‹mode›_mode");
        assert_eq!(cell(&k, "fentry", "oom_kill", &row), Cell::Pass);
        assert_eq!(cell(&k, "kprobe", "oom_kill", &row), Cell::Fail("boom".into()));
        assert_eq!(
            cell(&k, "kprobe", "oom_kill", "oom_kill::storm"),
            Cell::OtherMode(vec!["fentry".into()])
        );
        assert!(matches!(
            cell(&k, "kprobe", "oom_kill", "oom_kill::lost"),
            Cell::Fail(_)
        ));
        assert_eq!(cell(&k, "fentry", "oom_kill", "oom_kill::lost"), Cell::NotPlanned);

        let m = render(&[k], &["fentry", "kprobe"]);
        assert_eq!((m.passed, m.failed, m.skipped, m.other_mode), (1, 2, 1, 1));
        assert!(
            m.markdown
                .starts_with("| test | 6.1 fentry | 6.1 kprobe |\n|---|---|---|\n")
        );
        assert!(
            m.markdown.contains("| oom_kill::lost | – | **FAIL** ["),
            "{}",
            m.markdown
        );
    }
}
