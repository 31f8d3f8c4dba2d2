//! PID 1 of oomtrace's test VMs (`cargo xtask vm-test`), linked statically for the guest.
//!
//! It mounts what the tests need (proc, sysfs, devtmpfs, bpffs, cgroup2 with the memory controller
//! enabled for children of the root) — not tracefs: the guest is a fresh box, where oomtrace uses
//! tp_btf or mounts tracefs in a namespace of its own (tests/tests/fresh_box.rs) — runs the plan in `/vm/plan` (or the part of it
//! in the modes the kernel command line names, see `protocol::MODES_PARAM`) one test at a time
//! (each test binary with `--exact NAME --test-threads=1 --nocapture`, in its own process group,
//! killed after the plan's timeout), and reports every result as a record (xtask/src/vm/protocol.rs)
//! on /dev/ttyS1, echoed on the console. The console also gets each test's output, prefixed with
//! `| `. After the tests the kernel log is scanned for kernel errors; then the VM powers off (or,
//! with `keep`, the console gets a shell first).
//!
//! PID 1 itself only sets up and reaps: the tests run in a child (`init --worker`), so orphans of
//! the tests (hogs whose parent died) are reaped here while the worker waits for its own children.

#[path = "../src/vm/protocol.rs"]
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "shared with the host side, which uses the other half")
)]
mod protocol;

use std::{
    collections::BTreeSet,
    ffi::CString,
    fs::{self, File, OpenOptions},
    io::{self, BufRead, BufReader, Read, Write},
    os::unix::{
        fs::OpenOptionsExt,
        process::{CommandExt, ExitStatusExt},
    },
    process::{Command, ExitCode, ExitStatus, Stdio},
    sync::mpsc::{self, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

use protocol::{ATTACH_ENV, MODES, Plan, PlannedTest, Record, Status, TestResult, VM_ENV};

// The few libc calls std does not wrap. musl provides them; no libc crate needed.
unsafe extern "C" {
    fn mount(
        source: *const std::ffi::c_char,
        target: *const std::ffi::c_char,
        fstype: *const std::ffi::c_char,
        flags: std::ffi::c_ulong,
        data: *const std::ffi::c_void,
    ) -> i32;
    fn sethostname(name: *const std::ffi::c_char, len: usize) -> i32;
    fn reboot(cmd: i32) -> i32;
    fn sync();
    fn waitpid(pid: i32, status: *mut i32, options: i32) -> i32;
    fn kill(pid: i32, sig: i32) -> i32;
}

const RB_POWER_OFF: i32 = 0x4321_fedc;
const SIGKILL: i32 = 9;
const O_NONBLOCK: i32 = 0o4000;

const PLAN: &str = "/vm/plan";
const RESULTS_TTY: &str = "/dev/ttyS1";
const TESTS_DIR: &str = "/tests";
const OUTPUT_PREFIX: &str = "| ";
/// A failure message longer than this is cut (the console has all of it).
const MAX_DETAIL: usize = 1500;

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("--worker") {
        return worker();
    }
    if std::process::id() != 1 {
        eprintln!("oomtrace-vm-init: this is the init of oomtrace's test VMs (cargo xtask vm-test)");
        return ExitCode::from(2);
    }
    init()
}

/// PID 1: set up, start the worker, reap until it is done, power off.
fn init() -> ExitCode {
    if let Err(e) = setup() {
        // The worker still runs: the tests will say what is missing.
        println!("oomtrace-vm-init: setup: {e}");
    }
    match Command::new("/proc/self/exe").arg("--worker").spawn() {
        Ok(child) => {
            let worker = child.id() as i32;
            loop {
                let mut status = 0;
                // SAFETY: status is a valid out pointer; -1 waits for any child.
                let pid = unsafe { waitpid(-1, &mut status, 0) };
                if pid == worker || pid < 0 {
                    break;
                }
            }
        }
        Err(e) => println!("oomtrace-vm-init: failed to start the worker: {e}"),
    }
    // SAFETY: sync and reboot have no memory-safety preconditions.
    unsafe {
        sync();
        reboot(RB_POWER_OFF);
    }
    // Only reached if reboot failed; PID 1 exiting panics the kernel, which also ends the VM.
    ExitCode::FAILURE
}

fn mount_fs(fstype: &str, target: &str) -> Result<(), String> {
    let _ = fs::create_dir_all(target);
    let c = |s: &str| CString::new(s).expect("no NUL in mount arguments");
    let (src, tgt, ty) = (c(fstype), c(target), c(fstype));
    // SAFETY: all strings are valid NUL-terminated C strings that outlive the call; no data.
    let rc = unsafe { mount(src.as_ptr(), tgt.as_ptr(), ty.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(format!(
            "mount {fstype} on {target}: {}",
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn setup() -> Result<(), String> {
    mount_fs("proc", "/proc")?;
    mount_fs("sysfs", "/sys")?;
    mount_fs("devtmpfs", "/dev")?;
    mount_fs("bpf", "/sys/fs/bpf")?;
    mount_fs("cgroup2", "/sys/fs/cgroup")?;
    // Tests make their cgroups under their own, which is the root here: the root may hold
    // processes and still hand the memory controller to its children (cgroup v2's "no internal
    // processes" rule exempts it).
    fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+memory")
        .map_err(|e| format!("enable the memory controller: {e}"))?;
    let name = "oomtrace-vm";
    // SAFETY: name is valid for name.len() bytes.
    unsafe { sethostname(name.as_ptr().cast(), name.len()) };
    Ok(())
}

/// Writes records to the results port and the console.
struct Reporter {
    port: Option<File>,
    results: usize,
}

impl Reporter {
    fn open() -> Self {
        let port = OpenOptions::new().write(true).open(RESULTS_TTY);
        if let Err(e) = &port {
            println!("oomtrace-vm-init: cannot open {RESULTS_TTY}: {e}");
        }
        Reporter {
            port: port.ok(),
            results: 0,
        }
    }

    fn emit(&mut self, rec: &Record) {
        if matches!(rec, Record::Result(_)) {
            self.results += 1;
        }
        let line = rec.to_line();
        println!("{line}");
        if let Some(p) = &mut self.port {
            let _ = writeln!(p, "{line}");
            let _ = p.flush();
        }
    }
}

/// New kernel log records since the last call, via /dev/kmsg.
struct Kmsg(Option<File>);

impl Kmsg {
    fn open() -> Self {
        Kmsg(
            OpenOptions::new()
                .read(true)
                .custom_flags(O_NONBLOCK)
                .open("/dev/kmsg")
                .map_err(|e| println!("oomtrace-vm-init: cannot read /dev/kmsg: {e}"))
                .ok(),
        )
    }

    /// The messages logged since the last call (each read of /dev/kmsg returns one record).
    fn drain(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        let Some(f) = &mut self.0 else { return out };
        let mut buf = vec![0u8; 16 << 10];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    // "prio,seq,usec,flags;message\n" then " KEY=value" continuation lines.
                    let rec = String::from_utf8_lossy(&buf[..n]);
                    if let Some((_, msg)) = rec.split_once(';') {
                        out.push(msg.lines().next().unwrap_or_default().to_owned());
                    }
                }
                // Records overwritten before we read them: carry on with the next.
                Err(e) if e.raw_os_error() == Some(32) => continue,
                Err(_) => break,
            }
        }
        out
    }
}

fn worker() -> ExitCode {
    let mut rep = Reporter::open();
    let plan = match fs::read_to_string(PLAN)
        .map_err(|e| format!("read {PLAN}: {e}"))
        .and_then(|t| Plan::parse(&t))
    {
        Ok(p) => p,
        Err(e) => {
            // No `done` record: the host fails the boot and says the plan was unreadable.
            println!("oomtrace-vm-init: {e}");
            return ExitCode::FAILURE;
        }
    };
    // A kernel's modes may be split over several concurrent boots: this one runs its share.
    let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let plan = match protocol::modes_on_cmdline(&cmdline) {
        Some(modes) => {
            println!(
                "oomtrace-vm-init: this boot runs the plan's {} tests",
                modes.join(", ")
            );
            plan.only_modes(&modes)
        }
        None => plan,
    };
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    rep.emit(&Record::Kernel(release.trim().to_owned()));
    let mut kmsg = Kmsg::open();
    report_kernel_errors(&mut rep, &mut kmsg, "-", "-", "boot");

    let verdicts = check(&mut rep);
    for t in &plan.tests {
        let result = match verdicts.iter().find(|(m, _)| *m == t.mode) {
            Some((_, v)) if v != "ok" => TestResult {
                mode: t.mode.clone(),
                binary: t.binary.clone(),
                test: t.test.clone(),
                status: Status::Skip,
                millis: 0,
                attached: Vec::new(),
                detail: format!("{} cannot attach on this kernel (oomtrace check: {v})", t.mode),
            },
            _ => run_test(t, Duration::from_secs(plan.test_timeout_secs)),
        };
        rep.emit(&Record::Result(result));
        report_kernel_errors(&mut rep, &mut kmsg, &t.mode, &t.binary, &t.test);
    }
    let n = rep.results;
    rep.emit(&Record::Done(n));
    if plan.keep {
        println!("oomtrace-vm-init: tests done; here is a shell (exit to power off)");
        let _ = Command::new("/bin/sh").env("PATH", "/bin").status();
    }
    ExitCode::SUCCESS
}

fn report_kernel_errors(rep: &mut Reporter, kmsg: &mut Kmsg, mode: &str, binary: &str, test: &str) {
    for line in kmsg.drain() {
        if protocol::kernel_error(&line).is_some() {
            rep.emit(&Record::Kmsg {
                mode: mode.to_owned(),
                binary: binary.to_owned(),
                test: test.to_owned(),
                line,
            });
        }
    }
}

/// Runs `oomtrace check`, shows it on the console, reports each mode's verdict and returns them.
fn check(rep: &mut Reporter) -> Vec<(String, String)> {
    let out = match Command::new("/bin/oomtrace").arg("check").output() {
        Ok(o) => o,
        Err(e) => {
            println!("oomtrace-vm-init: cannot run oomtrace check: {e}");
            return Vec::new();
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    let _ = io::stdout().write_all(&out.stderr);
    let mut verdicts = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("attach ") else {
            continue;
        };
        let Some((mode, verdict)) = rest.split_once(char::is_whitespace) else {
            continue;
        };
        if MODES.contains(&mode) {
            let verdict = verdict.trim().to_owned();
            rep.emit(&Record::Check {
                mode: mode.to_owned(),
                verdict: verdict.clone(),
            });
            verdicts.push((mode.to_owned(), verdict));
        }
    }
    verdicts
}

/// What a test's output says about it.
#[derive(Default)]
struct Observed {
    skip: Option<String>,
    /// The first panic's location and message lines.
    panic: Option<(String, Vec<String>)>,
    /// Still reading the first panic's message (it ends at a blank or a `note:` line).
    in_panic: bool,
    attached: BTreeSet<String>,
    passed: u32,
    ignored: u32,
}

impl Observed {
    fn line(&mut self, line: &str) {
        let line = strip_ansi(line);
        if self.in_panic {
            let t = line.trim();
            if t.is_empty() || t.starts_with("note: ") || t.starts_with("stack backtrace:") || t == "FAILED" {
                self.in_panic = false;
            } else if let Some((_, msg)) = &mut self.panic
                && msg.len() < 8
            {
                msg.push(t.to_owned());
            }
        }
        // With --nocapture the skip line lands after libtest's "test NAME ... ".
        let tail = match line.split_once(" ... ") {
            Some((head, rest)) if head.starts_with("test ") => rest,
            _ => line.as_str(),
        };
        if let Some(reason) = tail.strip_prefix("SKIP ") {
            self.skip.get_or_insert_with(|| reason.trim().to_owned());
        }
        if self.panic.is_none()
            && let Some((_, loc)) = line.split_once(" panicked at ")
        {
            self.panic = Some((loc.trim_end_matches(':').to_owned(), Vec::new()));
            self.in_panic = true;
        }
        if let Some((_, rest)) = line.split_once("attached: mode ") {
            let mode = rest
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .next();
            if let Some(m) = mode.filter(|m| MODES.contains(m)) {
                self.attached.insert(m.to_owned());
            }
        }
        if let Some(summary) = line.strip_prefix("test result: ") {
            // "ok. 1 passed; 0 failed; 1 ignored; 0 measured; 5 filtered out; finished in 1.2s"
            for part in summary.split(['.', ';']) {
                let mut w = part.split_whitespace();
                if let (Some(n), Some(what)) = (w.next(), w.next()) {
                    let n = n.parse().unwrap_or(0);
                    match what {
                        "passed" => self.passed = n,
                        "ignored" => self.ignored = n,
                        _ => {}
                    }
                }
            }
        }
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn run_test(t: &PlannedTest, timeout: Duration) -> TestResult {
    println!("== [{}] {}::{}", t.mode, t.binary, t.test);
    let started = Instant::now();
    let mut result = TestResult {
        mode: t.mode.clone(),
        binary: t.binary.clone(),
        test: t.test.clone(),
        status: Status::Fail,
        millis: 0,
        attached: Vec::new(),
        detail: String::new(),
    };
    let (reader, writer) = match io::pipe() {
        Ok(p) => p,
        Err(e) => {
            result.detail = format!("cannot make a pipe: {e}");
            return result;
        }
    };
    let mut cmd = Command::new(format!("{TESTS_DIR}/{}", t.binary));
    cmd.args(["--exact", &t.test, "--test-threads=1", "--nocapture"])
        .env_clear()
        .env("PATH", "/bin")
        .env("HOME", "/")
        .env("TMPDIR", "/tmp")
        .env("OOMTRACE_BIN", "/bin/oomtrace")
        .env("OOMTRACE_HOG_BIN", "/bin/oomtrace-hog")
        .env("OOMTRACE_KILLER_BIN", "/bin/oomtrace-killer")
        .env(ATTACH_ENV, &t.mode)
        .env(VM_ENV, "1")
        .env("RUST_LOG_STYLE", "never")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .process_group(0);
    match writer.try_clone() {
        Ok(w) => cmd.stdout(w).stderr(writer),
        Err(e) => {
            result.detail = format!("cannot clone a pipe: {e}");
            return result;
        }
    };
    let spawned = cmd.spawn();
    // Our copies of the pipe's write end must go, or the reader never sees the end of it.
    drop(cmd);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            result.detail = format!("cannot start {TESTS_DIR}/{}: {e}", t.binary);
            return result;
        }
    };
    let pgid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut r = BufReader::new(reader);
        let mut buf = Vec::new();
        while r.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
            let line = String::from_utf8_lossy(&buf)
                .trim_end_matches(['\n', '\r'])
                .to_owned();
            if tx.send(line).is_err() {
                break;
            }
            buf.clear();
        }
    });

    let mut seen = Observed::default();
    let mut status: Option<ExitStatus> = None;
    let mut exited_at: Option<Instant> = None;
    let mut timed_out = false;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                println!("{OUTPUT_PREFIX}{line}");
                seen.line(&line);
                continue;
            }
            Err(RecvTimeoutError::Disconnected) if status.is_some() => break,
            Err(_) => {}
        }
        if status.is_none() {
            status = child.try_wait().ok().flatten();
            if status.is_some() {
                exited_at = Some(Instant::now());
                // Leftovers of the test (a hog, an oomtrace) would disturb the next one.
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { kill(-pgid, SIGKILL) };
            } else if started.elapsed() > timeout {
                timed_out = true;
                // SAFETY: as above.
                unsafe { kill(-pgid, SIGKILL) };
                status = child.wait().ok();
                exited_at = Some(Instant::now());
            }
        }
        // Something outside the process group may still hold the pipe: stop reading after 2 s.
        if exited_at.is_some_and(|t| t.elapsed() > Duration::from_secs(2)) {
            break;
        }
    }
    result.millis = started.elapsed().as_millis() as u64;
    let panic = seen.panic.map(|(loc, msg)| {
        format!("{} ({loc})", msg.join(" / "))
            .chars()
            .take(MAX_DETAIL)
            .collect::<String>()
    });
    result.attached = seen.attached.iter().cloned().collect();
    let ok = status.is_some_and(|s| s.success());
    (result.status, result.detail) = if timed_out {
        (Status::Timeout, format!("killed after {} s", timeout.as_secs()))
    } else if ok && seen.passed == 1 {
        match seen.skip {
            Some(why) => (Status::Skip, why),
            None => (Status::Pass, String::new()),
        }
    } else if ok && seen.ignored == 1 {
        (Status::Skip, "#[ignore]d".to_owned())
    } else if ok {
        (Status::Fail, "no such test in this binary".to_owned())
    } else {
        let how = match status {
            Some(s) if s.signal().is_some() => format!("killed by signal {}", s.signal().unwrap_or(0)),
            Some(s) => format!("exit status {}", s.code().unwrap_or(-1)),
            None => "lost track of the test process".to_owned(),
        };
        (Status::Fail, panic.map_or(how.clone(), |p| format!("{p}; {how}")))
    };
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observe(output: &str) -> Observed {
        let mut o = Observed::default();
        for line in output.lines() {
            o.line(line);
        }
        o
    }

    #[test]
    fn a_skip_after_libtests_test_line_is_seen() {
        let o = observe(
            "running 1 test\n\
             test storm ... SKIP oom_kill:40: needs root\n\
             ok\n\
             test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 10 filtered out; finished in 0.01s\n",
        );
        assert_eq!(o.skip.as_deref(), Some("oom_kill:40: needs root"));
        assert_eq!((o.passed, o.ignored), (1, 0));
    }

    #[test]
    fn the_first_panic_and_its_message_are_kept() {
        let o = observe(
            "test t ... \n\
             thread 't' (170) panicked at tests/tests/oom_kill.rs:395:9:\n\
             assertion `left == right` failed\n  left: 1\n right: 2\n\
             note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n\
             thread 'u' panicked at elsewhere.rs:1:1:\nsecond\n\
             FAILED\n",
        );
        let (loc, msg) = o.panic.unwrap();
        assert_eq!(loc, "tests/tests/oom_kill.rs:395:9");
        assert_eq!(msg, ["assertion `left == right` failed", "left: 1", "right: 2"]);
    }

    #[test]
    fn attach_modes_come_from_oomtraces_log_with_or_without_colour() {
        let o = observe(
            "test t ... \u{1b}[90m[\u{1b}[0m\u{1b}[32mINFO \u{1b}[0m\u{1b}[90m]\u{1b}[0m attached: mode fentry (oom_kill_process: fentry)\n\
             [INFO ] attached: mode tp_btf (oom_kill_process: -)\n\
             [INFO ] attached: mode bogus\n",
        );
        assert_eq!(o.attached.into_iter().collect::<Vec<_>>(), ["fentry", "tp_btf"]);
    }

    #[test]
    fn ignored_tests_are_counted() {
        let o = observe("test result: ok. 0 passed; 0 failed; 1 ignored; 0 measured; 3 filtered out\n");
        assert_eq!((o.passed, o.ignored), (0, 1));
    }
}
