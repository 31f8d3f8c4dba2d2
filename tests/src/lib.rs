//! Harness for oomtrace's root tests: memory cgroups made under the test's own cgroup, the
//! oomtrace binary run for real, and the kernel's own view (dmesg, memory.oom_control / memory.events,
//! /proc/vmstat) to check its output against.

use std::{
    fs,
    io::{BufRead, BufReader},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::process::{CommandExt, ExitStatusExt},
    },
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver, RecvTimeoutError, channel},
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

/// Prints a visible skip line and returns from the test. It writes to stderr directly, past the
/// test harness's output capture, so the skip shows in a passing run too.
#[macro_export]
macro_rules! skip_unless {
    ($cond:expr, $why:expr) => {
        if !$cond {
            $crate::skip_note(module_path!(), line!(), &$why);
            return;
        }
    };
}

/// Skips the test (visibly) unless it runs as root on a machine with a memory cgroup hierarchy.
#[macro_export]
macro_rules! require_root_memcg {
    () => {
        $crate::skip_unless!(
            $crate::is_root(),
            "needs root (CAP_BPF, CAP_PERFMON, cgroup writes)"
        );
        $crate::skip_unless!(
            $crate::memory_hierarchy().is_some(),
            "no cgroup hierarchy with the memory controller"
        );
    };
}

/// MiB, for cgroup limits.
pub const MIB: u64 = 1 << 20;

#[doc(hidden)]
pub fn skip_note(module: &str, line: u32, why: &dyn std::fmt::Display) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIP {module}:{line}: {why}");
}

/// Path of a binary built in this workspace's target dir (next to the test executable).
/// The attach mode under test (`OOMTRACE_TEST_ATTACH`, set by `cargo xtask vm-test` for each of
/// its passes), or `None`: each test's default mode.
pub fn attach_under_test() -> Option<String> {
    std::env::var("OOMTRACE_TEST_ATTACH")
        .ok()
        .filter(|m| !m.is_empty())
}

pub fn bin(name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(format!("{}_BIN", name.to_uppercase().replace('-', "_"))) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not built (run `cargo build --workspace` first)",
        p.display()
    );
    p
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Serializes the tests that make OOM kills, across test binaries and processes: they compare
/// against machine-wide counters (/proc/vmstat oom_kill) that a concurrent kill would disturb.
pub struct KillLock(#[expect(dead_code, reason = "held for its lock")] fs::File);

pub fn kill_lock() -> KillLock {
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/tmp/oomtrace-tests.lock")
        .expect("open lock file");
    // SAFETY: valid fd; flock blocks until the lock is ours.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock failed");
    KillLock(f)
}

/// The memory hierarchy: (version, mount).
pub fn memory_hierarchy() -> Option<(u8, PathBuf)> {
    let mi = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut v2 = None;
    for line in mi.lines() {
        let (pre, post) = line.split_once(" - ")?;
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        let mount = PathBuf::from(pre[4]);
        if post[0] == "cgroup" && post[2].split(',').any(|o| o == "memory") {
            return Some((1, mount));
        }
        if post[0] == "cgroup2"
            && fs::read_to_string(mount.join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"))
        {
            v2 = Some((2, mount));
        }
    }
    v2
}

/// This process's memory cgroup path relative to the hierarchy root.
pub fn own_memcg_path(version: u8) -> String {
    let text = fs::read_to_string("/proc/self/cgroup").expect("/proc/self/cgroup");
    text.lines()
        .find_map(|l| {
            let mut it = l.splitn(3, ':');
            let (_, ctrl, path) = (it.next()?, it.next()?, it.next()?);
            let hit = if version == 1 {
                ctrl.split(',').any(|c| c == "memory")
            } else {
                ctrl.is_empty()
            };
            hit.then(|| path.to_owned())
        })
        .expect("memory cgroup line")
}

/// A memory cgroup under the test's own, removed (after killing its tasks) on drop.
pub struct TestCgroup {
    pub version: u8,
    pub dir: PathBuf,
    /// Path relative to the hierarchy root, as the kernel prints it.
    pub path: String,
}

impl TestCgroup {
    /// Creates `name` (a unique suffix is added) with a memory limit in bytes.
    pub fn new(name: &str, limit: u64) -> Option<Self> {
        Self::under(None, name, limit)
    }

    pub fn under(parent: Option<&TestCgroup>, name: &str, limit: u64) -> Option<Self> {
        let (version, mount) = memory_hierarchy()?;
        let base = match parent {
            Some(p) => p.path.clone(),
            None => own_memcg_path(version),
        };
        let unique = format!(
            "{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        if version == 2
            && let Some(p) = parent
        {
            // v2 hands a controller to children only if the parent enables it for them.
            p.write("cgroup.subtree_control", "+memory");
        }
        let path = format!("{}/{unique}", base.trim_end_matches('/'));
        let dir = mount.join(path.trim_start_matches('/'));
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let cg = Self { version, dir, path };
        if limit > 0 {
            let file = if version == 1 {
                "memory.limit_in_bytes"
            } else {
                "memory.max"
            };
            cg.write(file, &limit.to_string());
        }
        if version == 2 {
            cg.write("memory.swap.max", "0");
        }
        Some(cg)
    }

    pub fn write(&self, file: &str, value: &str) {
        fs::write(self.dir.join(file), value).unwrap_or_else(|e| panic!("write {file}: {e}"));
    }

    pub fn read(&self, file: &str) -> String {
        fs::read_to_string(self.dir.join(file)).unwrap_or_default()
    }

    /// The kernel's count of OOM kills in this cgroup (v1 memory.oom_control, v2 memory.events).
    pub fn oom_kills(&self) -> u64 {
        let (file, key) = if self.version == 1 {
            ("memory.oom_control", "oom_kill")
        } else {
            ("memory.events", "oom_kill")
        };
        self.read(file)
            .lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(&self.dir).expect("stat cgroup").ino()
    }

    pub fn procs(&self) -> Vec<i32> {
        self.read("cgroup.procs")
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            let procs = self.procs();
            if procs.is_empty() {
                break;
            }
            for p in procs {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
            thread::sleep(Duration::from_millis(20));
        }
        for _ in 0..50 {
            if fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        eprintln!("warning: could not remove {}", self.dir.display());
    }
}

/// The machine-wide OOM kill counter.
pub fn vmstat_oom_kills() -> u64 {
    fs::read_to_string("/proc/vmstat")
        .expect("/proc/vmstat")
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
        .expect("oom_kill in /proc/vmstat")
}

/// A running `oomtrace run`, its stdout lines collected by a thread.
pub struct Tracer {
    child: Child,
    lines: Receiver<String>,
    pub seen: Vec<Value>,
    stopping: bool,
    /// While true, the reader thread stops reading stdout (a stalled consumer).
    paused: Arc<(Mutex<bool>, Condvar)>,
    stderr: Option<Arc<Mutex<String>>>,
}

impl Tracer {
    /// Starts oomtrace with `args` after `run` and waits for its `start` record.
    pub fn start(args: &[&str]) -> Self {
        Self::spawn(args, false)
    }

    /// Like [`Tracer::start`], with oomtrace's stderr collected (see [`Tracer::stderr`]) instead
    /// of passed through.
    pub fn start_capturing_stderr(args: &[&str]) -> Self {
        Self::spawn(args, true)
    }

    fn spawn(args: &[&str], capture: bool) -> Self {
        let forced: Vec<String> = match attach_under_test() {
            Some(m) if !args.contains(&"--attach") => vec!["--attach".into(), m],
            _ => Vec::new(),
        };
        let mut child = Command::new(bin("oomtrace"))
            .arg("run")
            .args(&forced)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(if capture { Stdio::piped() } else { Stdio::inherit() })
            .spawn()
            .expect("spawn oomtrace");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = channel();
        let paused = Arc::new((Mutex::new(false), Condvar::new()));
        let gate = paused.clone();
        thread::spawn(move || {
            let mut out = BufReader::new(out);
            loop {
                {
                    let (p, cv) = &*gate;
                    let mut p = p.lock().unwrap();
                    while *p {
                        p = cv.wait(p).unwrap();
                    }
                }
                let mut line = String::new();
                match out.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = line.strip_suffix('\n').unwrap_or(&line).to_owned();
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let stderr = capture.then(|| {
            let buf = Arc::new(Mutex::new(String::new()));
            let mut err = child.stderr.take().expect("stderr");
            let b = buf.clone();
            thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = std::io::Read::read(&mut err, &mut chunk) {
                    if n == 0 {
                        break;
                    }
                    b.lock().unwrap().push_str(&String::from_utf8_lossy(&chunk[..n]));
                }
            });
            buf
        });
        let mut t = Tracer {
            child,
            lines: rx,
            seen: Vec::new(),
            stopping: false,
            paused,
            stderr,
        };
        let start = t.wait_for(Duration::from_secs(20), |v| v["type"] == "start");
        if start.is_none() {
            let status = t.child.try_wait().ok().flatten();
            panic!(
                "oomtrace {args:?} printed no start record within 20 s (exit status: {status:?}; see stderr above)"
            );
        }
        t
    }

    fn pump(&mut self, timeout: Duration) -> bool {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => {
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
                self.seen.push(v);
                true
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => {
                if let Ok(Some(status)) = self.child.try_wait()
                    && !self.stopping
                {
                    panic!("oomtrace exited early with {status:?} (see stderr above)");
                }
                thread::sleep(timeout.min(Duration::from_millis(50)));
                false
            }
        }
    }

    /// Waits until a line matching `pred` arrives; returns it.
    pub fn wait_for(&mut self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return Some(v.clone());
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let n = self.seen.len();
            if self.pump(Duration::from_millis(50)) && pred(&self.seen[n]) {
                return Some(self.seen[n].clone());
            }
        }
        None
    }

    /// Waits until `cond` holds for the lines seen so far (or the timeout passes); returns
    /// whether it held.
    pub fn wait_lines(&mut self, timeout: Duration, cond: impl Fn(&[Value]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if cond(&self.seen) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            self.pump(Duration::from_millis(50));
        }
    }

    /// Waits until `n` lines match `pred` (or the timeout passes); returns how many did.
    pub fn wait_count(&mut self, n: usize, timeout: Duration, pred: impl Fn(&Value) -> bool) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.seen.iter().filter(|v| pred(v)).count();
            if c >= n || Instant::now() >= deadline {
                return c;
            }
            self.pump(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits until oomtrace has written the lines of every ring-buffer record (`oom_kill`,
    /// `signal`, `exit`) the kernel made before this call: SIGKILLs a process of its own and waits
    /// for that signal's line. The ring buffer hands records over in the order the hooks reserved
    /// them and the lines keep that order (docs/events.md, "Ordering"), so whatever came before
    /// is out too. Lets a test check that something did *not* happen without sleeping. Returns
    /// false, having waited for nothing, when the signal hook is not attached; not for a run
    /// with `--pid` (its kernel program drops the signal).
    pub fn fence(&mut self) -> bool {
        if self
            .seen
            .first()
            .is_none_or(|s| s["attach"]["signal_generate"].is_null())
        {
            return false;
        }
        let mut c = spawn_hog_ready(&["--mb", "0", "--hold"]);
        let tid = c.id();
        let _ = c.kill();
        let _ = c.wait();
        // The thread id: a classic-tracepoint record without the tid map has no pid once the
        // process is gone.
        let seen = self.wait_for(Duration::from_secs(10), |v| {
            v["type"] == "signal" && v["sig"] == 9 && v["target"]["tid"] == tid
        });
        assert!(seen.is_some(), "the fence's SIGKILL to {tid} never came out");
        true
    }

    /// Stops reading oomtrace's stdout: once the pipe is full, its writes block.
    pub fn pause_reading(&self) {
        *self.paused.0.lock().unwrap() = true;
    }

    pub fn resume_reading(&self) {
        *self.paused.0.lock().unwrap() = false;
        self.paused.1.notify_all();
    }

    /// What oomtrace wrote to stderr so far (for [`Tracer::start_capturing_stderr`]).
    pub fn stderr(&self) -> String {
        self.stderr
            .as_ref()
            .map(|s| s.lock().unwrap().clone())
            .unwrap_or_default()
    }

    /// The exit status, if oomtrace has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends SIGINT, collects the remaining lines, checks every line against the published JSON
    /// Schema, and returns the exit status and the lines.
    pub fn stop(self) -> (ExitStatus, Vec<Value>) {
        self.stop_with(libc::SIGINT).0
    }

    /// Sends `sig`, collects the remaining lines, checks every line against the published JSON
    /// Schema; returns the exit status, the lines, and how long oomtrace took to exit.
    pub fn stop_with(mut self, sig: i32) -> ((ExitStatus, Vec<Value>), Duration) {
        self.resume_reading();
        let t = Instant::now();
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.pid(), sig) };
        self.stopping = true;
        let status = self.child.wait().expect("wait oomtrace");
        let took = t.elapsed();
        while self.pump(Duration::from_millis(200)) {}
        let lines = std::mem::take(&mut self.seen);
        check_schema(&lines);
        ((status, lines), took)
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.resume_reading();
    }
}

/// OOM kills in a row, from a thread: hogs started one after another in `cg` (8 MiB is a good
/// limit), each OOM-killed within milliseconds (~60 kills/s on the lab machine).
pub struct Storm {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<Vec<u32>>>,
}

impl Storm {
    pub fn start(cg: &TestCgroup) -> Self {
        Self::start_n(cg, usize::MAX)
    }

    /// At most `n` kills.
    pub fn start_n(cg: &TestCgroup, n: usize) -> Self {
        let dir = cg.dir.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = thread::spawn(move || {
            let mut pids = Vec::new();
            while !s.load(Ordering::Relaxed) && pids.len() < n {
                let mut child = Command::new(bin("oomtrace-hog"))
                    .arg("--cgroup")
                    .arg(&dir)
                    .args(["--step-kb", "4096"])
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("spawn oomtrace-hog");
                pids.push(child.id());
                let _ = child.wait();
            }
            pids
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops the storm; returns the pids of the hogs it started.
    pub fn stop(mut self) -> Vec<u32> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .map(|h| h.join().expect("storm thread"))
            .unwrap_or_default()
    }

    /// Waits for an `n`-kill storm to end.
    pub fn join(mut self) -> Vec<u32> {
        self.handle
            .take()
            .map(|h| h.join().expect("storm thread"))
            .unwrap_or_default()
    }
}

impl Drop for Storm {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The strings of a JSON array of strings (a stack, a flag list); panics on anything else.
pub fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|f| f.as_str().unwrap_or_else(|| panic!("not a string: {f}")))
        .collect()
}

/// `CLOCK_BOOTTIME` in ns: the clock of every record's `boot_ns`.
pub fn boot_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A field of /proc/<pid>/status in kB (e.g. `VmRSS`, `RssAnon`).
pub fn status_kb(pid: i32, field: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|l| {
        l.strip_prefix(field)?
            .strip_prefix(':')?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()
    })
}

/// A small tmpfs mounted on a fresh directory, unmounted and removed on drop.
pub struct Tmpfs {
    pub dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it, e.g. "64k") with extra `options`
    /// (e.g. "ro"); None if mounting fails (not root).
    pub fn mount(size: &str, options: &str) -> Option<Self> {
        let dir = std::env::temp_dir().join(format!(
            "oomtrace-tmpfs-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).ok()?;
        let mut opts = format!("size={size},mode=0755");
        if !options.is_empty() {
            opts.push(',');
            opts.push_str(options);
        }
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &opts, "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = fs::remove_dir(&dir);
            return None;
        }
        Some(Self { dir })
    }

    /// Remounts it read-only or read-write.
    pub fn remount(&self, options: &str) -> bool {
        Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        let _ = fs::remove_dir(&self.dir);
    }
}

/// Checks that `seq` runs 0, 1, 2, … except for holes each closed by the `lost` line of reason
/// `output_backpressure` right after it, whose `count` is the hole's width. Returns the holes'
/// total width.
pub fn check_seq(lines: &[Value]) -> u64 {
    assert_eq!(
        lines.first().map(|l| &l["seq"]),
        Some(&Value::from(0)),
        "seq starts at 0"
    );
    let mut holes = 0;
    for w in lines.windows(2) {
        let (a, b) = (w[0]["seq"].as_u64().unwrap(), w[1]["seq"].as_u64().unwrap());
        if b != a + 1 {
            assert!(b > a, "seq goes back: {a} then {b}");
            assert!(
                w[1]["type"] == "lost" && w[1]["reason"] == "output_backpressure",
                "seq jumps from {a} to {b} without an output_backpressure lost line: {}",
                w[1]
            );
            assert_eq!(
                w[1]["count"].as_u64().unwrap(),
                b - a - 1,
                "hole width vs count: {}",
                w[1]
            );
            holes += b - a - 1;
        } else {
            assert!(
                w[1]["reason"] != "output_backpressure",
                "output_backpressure lost line without a hole before it: {}",
                w[1]
            );
        }
    }
    holes
}

/// Per `lost` reason: the sum of the `count`s, after checking each line's `total` is the running sum.
pub fn lost_by_reason(lines: &[Value]) -> std::collections::BTreeMap<String, u64> {
    let mut sums = std::collections::BTreeMap::new();
    for l in lines.iter().filter(|l| l["type"] == "lost") {
        let sum = sums.entry(l["reason"].as_str().unwrap().to_owned()).or_insert(0);
        *sum += l["count"].as_u64().unwrap();
        assert_eq!(
            l["total"].as_u64().unwrap(),
            *sum,
            "lost total is not the running sum: {l}"
        );
    }
    sums
}

/// Runs the hog to completion (or death) and returns its exit status.
pub fn run_hog(args: &[&str]) -> ExitStatus {
    Command::new(bin("oomtrace-hog"))
        .args(args)
        .status()
        .expect("spawn oomtrace-hog")
}

pub fn spawn_hog(args: &[&str]) -> Child {
    Command::new(bin("oomtrace-hog"))
        .args(args)
        .spawn()
        .expect("spawn oomtrace-hog")
}

/// Kernel log lines (without the `[ time]` prefix) since the test began, from `dmesg`.
pub fn dmesg() -> Vec<String> {
    let out = Command::new("dmesg").output().expect("run dmesg");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| match l.split_once("] ") {
            Some((_, rest)) if l.starts_with('[') => rest.to_owned(),
            _ => l.to_owned(),
        })
        .collect()
}

/// The kernel's one-line kill message for `pid`:
/// `... Killed process PID (COMM) total-vm:NkB, anon-rss:NkB, file-rss:NkB, shmem-rss:NkB, UID:N pgtables:NkB oom_score_adj:N`
pub fn killed_line(pid: u32) -> Option<std::collections::HashMap<String, String>> {
    let needle = format!("Killed process {pid} (");
    let line = dmesg().into_iter().rev().find(|l| l.contains(&needle))?;
    let rest = &line[line.find(&needle)? + needle.len()..];
    let (comm, rest) = rest.split_once(") ")?;
    let mut m = std::collections::HashMap::new();
    m.insert("comm".to_owned(), comm.to_owned());
    for part in rest.split([',', ' ']).filter(|p| !p.is_empty()) {
        if let Some((k, v)) = part.split_once(':') {
            m.insert(k.to_owned(), v.trim_end_matches("kB").to_owned());
        }
    }
    Some(m)
}

/// The kernel's (rate-limited) `oom-kill:constraint=...,oom_memcg=...,task_memcg=...,task=...,pid=N,uid=N` line.
pub fn oom_kill_line(pid: u32) -> Option<std::collections::HashMap<String, String>> {
    let needle = format!(",pid={pid},");
    let line = dmesg()
        .into_iter()
        .rev()
        .find(|l| l.starts_with("oom-kill:") && l.contains(&needle))?;
    Some(
        line.trim_start_matches("oom-kill:")
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    )
}

/// The `oom_kill` records whose victim sits in `cg`.
pub fn kills_in<'a>(lines: &'a [Value], cg: &TestCgroup) -> Vec<&'a Value> {
    let id = cg.inode();
    lines
        .iter()
        .filter(|v| v["type"] == "oom_kill" && v["victim"]["cgroup"]["id"] == id)
        .collect()
}

/// Validates every line against docs/events.schema.json, the published contract.
pub fn check_schema(lines: &[Value]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/events.schema.json");
    let schema: Value = serde_json::from_str(&fs::read_to_string(&path).expect("read events.schema.json"))
        .expect("events.schema.json is JSON");
    let validator = jsonschema::validator_for(&schema).expect("events.schema.json is a valid schema");
    for line in lines {
        let errors: Vec<String> = validator
            .iter_errors(line)
            .map(|e| format!("{} at {}", e, e.instance_path))
            .collect();
        assert!(
            errors.is_empty(),
            "line violates docs/events.schema.json: {errors:?}\n{line}"
        );
    }
}

/// The kernel's memory.stat dump in its OOM report for cgroup `path` (rate-limited: may be absent):
/// the `key value` lines after `Memory cgroup stats for PATH:`.
pub fn oom_report_stats(path: &str) -> Option<std::collections::HashMap<String, u64>> {
    let lines = dmesg();
    let header = format!("Memory cgroup stats for {path}:");
    let start = lines.iter().rposition(|l| l.trim_end() == header)?;
    let mut out = std::collections::HashMap::new();
    for l in &lines[start + 1..] {
        let mut it = l.split_whitespace();
        match (it.next(), it.next(), it.next()) {
            (Some(k), Some(v), None) if k.chars().all(|c| c.is_ascii_lowercase() || c == '_') => {
                let Ok(v) = v.parse() else { break };
                out.insert(k.to_owned(), v);
            }
            _ => break,
        }
    }
    Some(out)
}

/// Polls `cond` every 10 ms until it holds or `timeout` has passed; returns whether it held.
/// For conditions that nothing signals (a file's content, a cgroup counter): where a child or
/// oomtrace can say it is ready, wait for that instead ([`spawn_hog_ready`], [`Tracer::wait_for`],
/// [`wait_dead_unreaped`]).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Waits (at most 10 s) until `path` exists (a hog's --ready file).
pub fn wait_ready(path: &str) -> bool {
    wait_until(Duration::from_secs(10), || Path::new(path).exists())
}

/// How a child started with a ready pipe ([`spawn_ready`]) ended its wait.
#[derive(Debug, PartialEq, Eq)]
pub enum Ready {
    /// It wrote its `ready` line.
    Ready,
    /// The pipe closed first: the child exited (or was killed) before it got ready.
    Died,
    /// Neither within the timeout.
    Timeout,
}

/// The fd number a ready pipe has in the child (`--ready-fd 3`).
const READY_FD: i32 = 3;

/// Spawns `cmd` with the write end of a fresh pipe as fd 3 (append `--ready-fd 3` to its
/// arguments yourself), and waits at most `timeout` for the `ready` line on it. The pipe is
/// CLOEXEC in this process, so children other threads spawn meanwhile do not keep it open, and
/// the child's death shows at once as EOF.
pub fn spawn_ready(cmd: &mut Command, timeout: Duration) -> (Child, Ready) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new fds into the array.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both fds are new and owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let wfd = w.as_raw_fd();
    // SAFETY: between fork and exec only async-signal-safe calls (dup2, fcntl) on the child's own
    // fd table. dup2 gives fd 3 without CLOEXEC; if the pipe already is fd 3, clear the flag.
    unsafe {
        cmd.pre_exec(move || {
            let rc = if wfd == READY_FD {
                libc::fcntl(wfd, libc::F_SETFD, 0)
            } else {
                libc::dup2(wfd, READY_FD)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    let child = cmd.spawn().expect("spawn with a ready pipe");
    drop(w);
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let ready = loop {
        if got.windows(6).any(|w| w == b"ready\n") {
            break Ready::Ready;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break Ready::Timeout;
        }
        let mut pfd = libc::pollfd {
            fd: r.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "poll: {e}");
            continue;
        }
        if n == 0 {
            continue;
        }
        let mut buf = [0u8; 64];
        // SAFETY: reading into our own buffer from our own fd.
        let n = unsafe { libc::read(r.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        match n {
            0 => break Ready::Died,
            n if n > 0 => got.extend_from_slice(&buf[..n as usize]),
            _ => {
                let e = std::io::Error::last_os_error();
                assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "read: {e}");
            }
        }
    };
    (child, ready)
}

/// Spawns the hog with `args` plus `--ready-fd`, and returns once it holds its memory (`--mb`;
/// add `--hold` to keep it there). Panics if it dies first or takes more than 20 s.
pub fn spawn_hog_ready(args: &[&str]) -> Child {
    let mut cmd = Command::new(bin("oomtrace-hog"));
    cmd.args(args).args(["--ready-fd", "3"]);
    let (mut child, ready) = spawn_ready(&mut cmd, Duration::from_secs(20));
    if ready != Ready::Ready {
        let _ = child.kill();
        let status = child.wait();
        panic!("oomtrace-hog {args:?} never got ready: {ready:?} ({status:?})");
    }
    child
}

/// Blocks until `child` has terminated, without reaping it (waitid with WNOWAIT): it stays a
/// zombie, so its `/proc/<pid>` (status: the tgid; cgroup) is there until `Child::wait` reaps it.
/// oomtrace's procfs fallbacks read those after a kill; a test that keeps the zombie while
/// oomtrace handles the record knows they were there to be read.
pub fn wait_dead_unreaped(child: &Child) -> ExitStatus {
    // SAFETY: an all-zero siginfo_t is valid; waitid fills it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waitid(2) on our own child, with a valid out-pointer.
        let rc = unsafe { libc::waitid(libc::P_PID, child.id(), &mut info, libc::WEXITED | libc::WNOWAIT) };
        if rc == 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "waitid: {e}");
    }
    // SAFETY: waitid succeeded for a child, so the SIGCHLD fields are the ones set.
    let status = unsafe { info.si_status() };
    // Back to a wait(2) status word, as ExitStatus holds it.
    let raw = match info.si_code {
        libc::CLD_EXITED => (status & 0xff) << 8,
        libc::CLD_KILLED => status,
        libc::CLD_DUMPED => status | 0x80,
        c => panic!("waitid: unexpected si_code {c} for an exited child"),
    };
    ExitStatus::from_raw(raw)
}

/// The kernel's (rate-limited, with the `oom-kill:` line) first line of its OOM report for the
/// OOM that `pid` set off (`dump_header()`, mm/oom_kill.c v6.18):
/// `COMM invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=500`, found as
/// the line before dump_stack's `CPU: N [UID: N ]PID: PID Comm: ...`. Keys: `gfp_mask` (hex),
/// `gfp_flags` (the names in parentheses), `order`, `oom_score_adj`.
pub fn invoked_line(pid: u32) -> Option<std::collections::HashMap<String, String>> {
    let lines = dmesg();
    let needle = format!(" PID: {pid} Comm: ");
    let at = lines
        .iter()
        .rposition(|l| l.starts_with("CPU: ") && l.contains(&needle))?;
    let line = lines[..at]
        .iter()
        .rev()
        .take(2)
        .find(|l| l.contains(" invoked oom-killer: "))?;
    let rest = &line[line.find(" invoked oom-killer: ")? + " invoked oom-killer: ".len()..];
    let mut m = std::collections::HashMap::new();
    for kv in rest.split(", ") {
        let (k, v) = kv.split_once('=')?;
        match v.split_once('(') {
            Some((mask, names)) if k == "gfp_mask" => {
                m.insert("gfp_mask".to_owned(), mask.to_owned());
                m.insert("gfp_flags".to_owned(), names.trim_end_matches(')').to_owned());
            }
            _ => {
                m.insert(k.to_owned(), v.trim().to_owned());
            }
        }
    }
    Some(m)
}
