//! What `cargo xtask vm-test` and the VM's init (xtask/guest/init.rs, which includes this file)
//! say to each other: the plan baked into the initramfs, and the records the guest writes back on
//! its second serial port. Both are tab-separated lines, one record per line.
//!
//! Plan (`/vm/plan` in the guest):
//!   timeout  <seconds per test>
//!   keep     <0|1>
//!   test     <mode>  <binary>  <test name>
//!
//! Records (guest to host), every line starting with [`TAG`]:
//!   kernel  <release>
//!   check   <mode>  <verdict of `oomtrace check`, e.g. "ok">
//!   result  <mode>  <binary>  <test>  <status>  <milliseconds>  <modes oomtrace attached in>  <detail>
//!   kmsg    <mode>  <binary>  <test>  <kernel log line that names a kernel error>
//!   done    <number of results>

/// First field of every record. Console output that merely mentions it cannot be a record: the
/// host reads records from their own serial port.
pub const TAG: &str = "OOMTRACE-VM";

/// The attach modes, best first (as `oomtrace run --attach` names them).
pub const MODES: [&str; 4] = ["fentry", "kprobe", "tp_btf", "tracepoint"];

/// Kernel command-line parameter that picks which of the plan's modes one boot runs
/// (`oomtrace.modes=fentry,kprobe`): a kernel's modes can be split over concurrent boots with one
/// initramfs. Without it a boot runs the whole plan. Dotted, so the kernel leaves it to modules
/// and passes nothing of it to init's environment or arguments.
pub const MODES_PARAM: &str = "oomtrace.modes";

/// The modes a kernel command line selects with [`MODES_PARAM`], if it does.
pub fn modes_on_cmdline(cmdline: &str) -> Option<Vec<String>> {
    cmdline.split_whitespace().find_map(|p| {
        let v = p.strip_prefix(MODES_PARAM)?.strip_prefix('=')?;
        Some(
            v.split(',')
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
                .collect(),
        )
    })
}

/// Environment variable the guest sets for every test: the attach mode under test. Tests that
/// start `oomtrace run` without `--attach` are expected to pass it on.
pub const ATTACH_ENV: &str = "OOMTRACE_TEST_ATTACH";

/// Environment variable the guest sets (to `1`) for every test: tests that must only ever run
/// inside a throw-away VM (a global OOM) look for it.
pub const VM_ENV: &str = "OOMTRACE_VM";

/// Kernel log text that means the kernel itself went wrong. Any of these fails the boot.
pub const KERNEL_ERRORS: [&str; 8] = [
    "Oops",
    "BUG:",
    "Kernel panic",
    "KVM internal error",
    "WARNING: CPU:",
    "general protection fault",
    "detected stalls",
    "blocked for more than",
];

/// The first kernel-error pattern `line` contains, if any.
pub fn kernel_error(line: &str) -> Option<&'static str> {
    KERNEL_ERRORS.iter().copied().find(|p| line.contains(p))
}

/// How one test ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Pass,
    Fail,
    /// The test printed a `SKIP …: reason` line (or is `#[ignore]`d, or its mode cannot attach).
    Skip,
    /// Killed after the per-test timeout.
    Timeout,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Skip => "skip",
            Status::Timeout => "timeout",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Status::Pass, Status::Fail, Status::Skip, Status::Timeout]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// One test's outcome as the guest reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestResult {
    pub mode: String,
    pub binary: String,
    pub test: String,
    pub status: Status,
    pub millis: u64,
    /// The modes `oomtrace run` reported attaching in while the test ran (from its log).
    pub attached: Vec<String>,
    /// Skip reason, failure message, or empty.
    pub detail: String,
}

/// A record line, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Kernel(String),
    Check {
        mode: String,
        verdict: String,
    },
    Result(TestResult),
    Kmsg {
        mode: String,
        binary: String,
        test: String,
        line: String,
    },
    Done(usize),
}

/// Makes `s` fit in one field: no tabs, no line breaks, no control characters.
pub fn field(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

impl Record {
    /// The line for this record, without the newline.
    pub fn to_line(&self) -> String {
        let fields: Vec<String> = match self {
            Record::Kernel(release) => vec!["kernel".into(), field(release)],
            Record::Check { mode, verdict } => vec!["check".into(), field(mode), field(verdict)],
            Record::Result(r) => vec![
                "result".into(),
                field(&r.mode),
                field(&r.binary),
                field(&r.test),
                r.status.as_str().into(),
                r.millis.to_string(),
                field(&r.attached.join(",")),
                field(&r.detail),
            ],
            Record::Kmsg {
                mode,
                binary,
                test,
                line,
            } => vec![
                "kmsg".into(),
                field(mode),
                field(binary),
                field(test),
                field(line),
            ],
            Record::Done(n) => vec!["done".into(), n.to_string()],
        };
        format!("{TAG}\t{}", fields.join("\t"))
    }

    /// Parses a record line; `None` for anything else (including a record cut short).
    pub fn parse(line: &str) -> Option<Self> {
        let line = line.trim_end_matches(['\r', '\n']);
        let mut f = line.split('\t');
        if f.next()? != TAG {
            return None;
        }
        let kind = f.next()?;
        let mut next = || f.next().map(str::to_owned);
        let rec = match kind {
            "kernel" => Record::Kernel(next()?),
            "check" => Record::Check {
                mode: next()?,
                verdict: next()?,
            },
            "result" => Record::Result(TestResult {
                mode: next()?,
                binary: next()?,
                test: next()?,
                status: Status::parse(&next()?)?,
                millis: next()?.parse().ok()?,
                attached: next()?
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_owned)
                    .collect(),
                detail: next()?,
            }),
            "kmsg" => Record::Kmsg {
                mode: next()?,
                binary: next()?,
                test: next()?,
                line: next()?,
            },
            "done" => Record::Done(next()?.parse().ok()?),
            _ => return None,
        };
        Some(rec)
    }
}

/// One test to run in the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedTest {
    pub mode: String,
    pub binary: String,
    pub test: String,
}

/// What the guest is to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub test_timeout_secs: u64,
    /// After the tests, give the console a shell instead of powering off.
    pub keep: bool,
    pub tests: Vec<PlannedTest>,
}

impl Plan {
    /// The part of the plan in `modes`, in the plan's order.
    pub fn only_modes(&self, modes: &[String]) -> Plan {
        Plan {
            tests: self
                .tests
                .iter()
                .filter(|t| modes.contains(&t.mode))
                .cloned()
                .collect(),
            ..self.clone()
        }
    }

    pub fn to_text(&self) -> String {
        let mut s = format!(
            "timeout\t{}\nkeep\t{}\n",
            self.test_timeout_secs,
            u8::from(self.keep)
        );
        for t in &self.tests {
            s.push_str(&format!(
                "test\t{}\t{}\t{}\n",
                field(&t.mode),
                field(&t.binary),
                field(&t.test)
            ));
        }
        s
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let mut plan = Plan::default();
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
            let f: Vec<&str> = line.split('\t').collect();
            let bad = || format!("plan line {}: {line:?}", n + 1);
            match f.as_slice() {
                ["timeout", secs] => plan.test_timeout_secs = secs.parse().map_err(|_| bad())?,
                ["keep", v] => plan.keep = *v == "1",
                ["test", mode, binary, test] => plan.tests.push(PlannedTest {
                    mode: (*mode).to_owned(),
                    binary: (*binary).to_owned(),
                    test: (*test).to_owned(),
                }),
                _ => return Err(bad()),
            }
        }
        Ok(plan)
    }
}

/// The mode a per-mode test is for: `kill_is_reported_exactly_in_kprobe_mode` is for `kprobe`.
/// `None` for a test that is not tied to one mode.
pub fn mode_of_test(test: &str) -> Option<&'static str> {
    let stem = test.strip_suffix("_mode")?;
    MODES
        .into_iter()
        .find(|m| stem.strip_suffix(m).is_some_and(|rest| rest.ends_with('_')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let recs = [
            Record::Kernel("6.1.0-56-cloud-amd64".into()),
            Record::Check {
                mode: "kprobe".into(),
                verdict: "ok".into(),
            },
            Record::Result(TestResult {
                mode: "fentry".into(),
                binary: "oom_kill".into(),
                test: "storm_of_300_kills_loses_nothing".into(),
                status: Status::Skip,
                millis: 1234,
                attached: vec!["fentry".into(), "tp_btf".into()],
                detail: "oom_kill:12: needs root".into(),
            }),
            Record::Result(TestResult {
                mode: "tp_btf".into(),
                binary: "whodunit".into(),
                test: "t".into(),
                status: Status::Pass,
                millis: 0,
                attached: vec![],
                detail: String::new(),
            }),
            Record::Kmsg {
                mode: "-".into(),
                binary: "-".into(),
                test: "boot".into(),
                line: "BUG: kernel NULL pointer dereference".into(),
            },
            Record::Done(3),
        ];
        for r in recs {
            assert_eq!(Record::parse(&format!("{}\r\n", r.to_line())), Some(r.clone()));
        }
    }

    #[test]
    fn damaged_records_are_not_records() {
        assert_eq!(Record::parse("OOMTRACE-VM\tresult\tfentry\toom_kill"), None);
        assert_eq!(Record::parse("[   3.1] OOMTRACE-VM\tdone\t1"), None);
        assert_eq!(Record::parse("OOMTRACE-VM\tdone\tmany"), None);
        assert_eq!(Record::parse("OOMTRACE-VM\tresult\ta\tb\tc\tmaybe\t1\t\t"), None);
    }

    #[test]
    fn guest_environment_is_the_harness_namespace() {
        for var in [ATTACH_ENV, VM_ENV] {
            assert!(var.starts_with("OOMTRACE_"), "{var}");
        }
    }

    #[test]
    fn fields_stay_on_one_line() {
        assert_eq!(field("a\tb\nc\r"), "a b c");
    }

    #[test]
    fn plan_round_trips() {
        let plan = Plan {
            test_timeout_secs: 300,
            keep: true,
            tests: vec![PlannedTest {
                mode: "kprobe".into(),
                binary: "oom_kill".into(),
                test: "auto_mode_reports_a_kill".into(),
            }],
        };
        assert_eq!(Plan::parse(&plan.to_text()), Ok(plan));
        assert!(Plan::parse("test\tonly-two").is_err());
    }

    #[test]
    fn a_boot_runs_the_modes_its_command_line_names() {
        let cmdline = "console=ttyS0 panic=-1 oomtrace.modes=tp_btf,tracepoint rdinit=/init\n";
        let modes = modes_on_cmdline(cmdline).unwrap();
        assert_eq!(modes, ["tp_btf", "tracepoint"]);
        assert_eq!(modes_on_cmdline("console=ttyS0 oomtrace.modesx=a"), None);
        let t = |mode: &str| PlannedTest {
            mode: mode.into(),
            binary: "oom_kill".into(),
            test: "t".into(),
        };
        let plan = Plan {
            test_timeout_secs: 1,
            keep: false,
            tests: vec![t("fentry"), t("tp_btf"), t("kprobe"), t("tracepoint")],
        };
        let part = plan.only_modes(&modes);
        assert_eq!(part.tests, [t("tp_btf"), t("tracepoint")]);
        assert_eq!(part.test_timeout_secs, 1);
    }

    #[test]
    fn per_mode_tests_are_recognised() {
        assert_eq!(
            mode_of_test("kill_is_reported_exactly_in_tp_btf_mode"),
            Some("tp_btf")
        );
        assert_eq!(
            mode_of_test("kill_is_reported_exactly_in_fentry_mode"),
            Some("fentry")
        );
        assert_eq!(mode_of_test("x_tracepoint_mode"), Some("tracepoint"));
        assert_eq!(mode_of_test("auto_mode_reports_a_kill"), None);
        assert_eq!(mode_of_test("fentry_mode"), None);
        assert_eq!(mode_of_test("storm_of_300_kills_loses_nothing"), None);
    }
}
