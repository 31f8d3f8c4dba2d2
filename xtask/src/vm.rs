//! `cargo xtask vm-test`: the real-OOM integration tests inside qemu, on the production kernels
//! pinned in [`kernel::KERNELS`], once per attach mode.
//!
//! Per run: fetch the kernels (cached under target/vm/kernels), build static (musl) oomtrace, the
//! hog, the killer, the test binaries and the guest's init, pack them with busybox into one
//! initramfs, boot each kernel once with every selected test of every selected mode (two kernels
//! at a time, each in its own qemu and run directory), and print the kernel × mode × test matrix
//! (on stdout and into target/vm/matrix.md) and where the time went (target/vm/timing.md). A failed test fails
//! the run; so does a boot that hangs (timeout), crashes (Oops, BUG:, panic, KVM internal error on
//! the console or in the kernel log) or ends without reporting every planned test.

mod initramfs;
mod kernel;
mod matrix;
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "shared with the guest init, which uses the other half")
)]
mod protocol;
mod qemu;

use std::{
    collections::{BTreeMap, VecDeque},
    env,
    fmt::Write as _,
    fs,
    io::BufRead,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use self::{
    initramfs::Cpio,
    kernel::{KERNELS, Pin},
    matrix::KernelOutcome,
    protocol::{MODES, Plan, PlannedTest, Record},
};

/// The target the guest binaries are built for: static, no libc needed in the guest.
const GUEST_TARGET: &str = "x86_64-unknown-linux-musl";
/// The integration test binaries (tests/tests/*.rs) whose tests cause real OOM kills and check
/// them against the kernel. Not cli and schema (no kernel involved), nor faults (oomtrace's own
/// robustness: fuzzing and full disks cost emulated minutes and say nothing about the kernel),
/// nor stacks (it compiles C programs, and the guest has no compiler). fresh_box is issue 11's
/// "tracefs not mounted" check, and the guest is such a box: its init mounts no tracefs.
const GUEST_TESTS: [&str; 5] = ["allocation", "fresh_box", "multithread", "oom_kill", "whodunit"];
/// busybox applets the guest gets (for `--keep`'s shell, and `dmesg` for the tests). Not `kill`:
/// xtask/guest/kill.rs is /bin/kill.
const BUSYBOX_APPLETS: [&str; 22] = [
    "sh", "ash", "cat", "cp", "dmesg", "echo", "free", "grep", "head", "less", "ln", "ls", "mkdir", "mount",
    "mv", "poweroff", "ps", "rm", "sleep", "tail", "umount", "uname",
];
const VM_MEMORY_MIB: u32 = 1024;
/// Kernels booted at once. Each qemu runs its guest on one host thread (single-threaded TCG), so
/// two keep this project's 2-core machines busy; a third would only slice the same cores.
const MAX_PARALLEL_BOOTS: usize = 2;

/// What `--kernel` accepts: every pinned kernel's name, and `all`.
pub const KERNEL_NAMES: [&str; KERNELS.len() + 1] = {
    let mut names = ["all"; KERNELS.len() + 1];
    let mut i = 0;
    while i < KERNELS.len() {
        names[i] = KERNELS[i].name;
        i += 1;
    }
    names
};

pub struct Options {
    /// A name in [`KERNEL_NAMES`].
    pub kernel: String,
    /// An attach mode or `all`.
    pub attach: String,
    pub keep: bool,
    pub boot_timeout: Duration,
    pub test_timeout: Duration,
    /// Only tests whose name contains this.
    pub filter: Option<String>,
}

/// Paths of what goes into the guest, on the host.
struct GuestFiles {
    oomtrace: PathBuf,
    hog: PathBuf,
    killer: PathBuf,
    init: PathBuf,
    kill: PathBuf,
    /// Test binary name (`oom_kill`) → executable.
    tests: BTreeMap<String, PathBuf>,
}

pub fn run(workspace: &Path, opts: &Options) -> Result<()> {
    let kernels: Vec<&'static Pin> = KERNELS
        .iter()
        .filter(|p| opts.kernel == "all" || opts.kernel == p.name)
        .collect();
    let modes: Vec<&'static str> = MODES
        .into_iter()
        .filter(|m| opts.attach == "all" || opts.attach == *m)
        .collect();
    if kernels.is_empty() || modes.is_empty() {
        bail!("no kernel {:?} or no attach mode {:?}", opts.kernel, opts.attach);
    }
    let vm_dir = workspace.join("target").join("vm");
    let busybox = which("busybox").context(
        "failed to find busybox (apt-get install busybox-static; scripts/bootstrap.sh installs it)",
    )?;
    which("qemu-system-x86_64").context(
        "failed to find qemu-system-x86_64 (apt-get install qemu-system-x86; scripts/bootstrap.sh installs it)",
    )?;

    // A kernel that cannot be had (its pin gone from the archive) fails the run, but only after
    // the others have been tested.
    let mut ready = Vec::new();
    let mut unavailable = Vec::new();
    for pin in &kernels {
        match kernel::prepare(pin, &vm_dir) {
            Ok(k) => ready.push(k),
            Err(e) => {
                eprintln!("vm-test: [{}] error: {e:#}", pin.name);
                unavailable.push((*pin, e));
            }
        }
    }
    if ready.is_empty() {
        bail!("no kernel could be fetched");
    }
    let files = build_guest_files(workspace)?;
    let plan = make_plan(&files, &modes, opts)?;
    if plan.tests.is_empty() {
        bail!(
            "no test matches --filter {:?}",
            opts.filter.as_deref().unwrap_or("")
        );
    }
    let image = vm_dir.join("initramfs.cpio");
    write_initramfs(workspace, &files, &busybox, &plan, &image)?;
    eprintln!(
        "vm-test: {} tests per kernel ({} modes), initramfs {} MiB",
        plan.tests.len(),
        modes.len(),
        fs::metadata(&image).map(|m| m.len() >> 20).unwrap_or(0)
    );

    let started = Instant::now();
    // --keep hands the terminal to the guest: one VM at a time.
    let parallel = if opts.keep { 1 } else { MAX_PARALLEL_BOOTS };
    let shards = shards(&ready, &modes, &plan, parallel);
    let boots = shards.len();
    let mut outcomes = merge(boot_all(shards, &image, &vm_dir, opts, parallel));
    let wall = started.elapsed();
    for (pin, e) in &unavailable {
        let first = format!("{e:#}");
        outcomes.push(unavailable_outcome(
            pin,
            &plan,
            first.lines().next().unwrap_or_default(),
        ));
    }
    // Columns in KERNELS order, whatever order the boots ended in.
    outcomes.sort_by_key(|o| KERNELS.iter().position(|p| p.name == o.name));

    let mut m = matrix::render(&outcomes, &modes);
    let _ = writeln!(
        m.markdown,
        "\nWall time of the boots: {} s ({} kernel(s) in {boots} boots, at most {parallel} at once).",
        wall.as_secs(),
        ready.len()
    );
    print!("{}", m.markdown);
    let saved = vm_dir.join("matrix.md");
    fs::write(&saved, &m.markdown).with_context(|| format!("failed to write {}", saved.display()))?;
    let timing = timing_report(&outcomes);
    let timing_file = vm_dir.join("timing.md");
    fs::write(&timing_file, &timing).with_context(|| format!("failed to write {}", timing_file.display()))?;
    eprint!("{timing}");
    eprintln!(
        "vm-test: {} passed, {} failed, {} skipped, {} passed in another mode than their column's, {} boot problem(s)",
        m.passed, m.failed, m.skipped, m.other_mode, m.problems
    );
    for k in &outcomes {
        for b in &k.boots {
            eprintln!(
                "vm-test: [{} {}] {} s, console log {}",
                k.name,
                b.modes,
                b.secs,
                vm_dir
                    .join("run")
                    .join(&k.name)
                    .join(&b.modes)
                    .join("console.log")
                    .display()
            );
        }
    }
    eprintln!(
        "vm-test: wall time of the boots {} s ({} at once at most); per-test timing in {}",
        wall.as_secs(),
        parallel,
        timing_file.display()
    );
    for (pin, e) in &unavailable {
        eprintln!("vm-test: [{}] not tested: {e:#}", pin.name);
    }
    if m.failed > 0 || m.problems > 0 {
        bail!("{} test(s) failed, {} boot problem(s)", m.failed, m.problems);
    }
    Ok(())
}

/// One boot: a kernel and the part of the plan it runs.
struct Shard<'a> {
    kernel: &'a kernel::Kernel,
    /// The modes this boot runs, joined by `+`: also its run directory's name.
    modes: String,
    plan: Plan,
}

/// Splits each kernel's modes over boots: with `parallel` slots and more kernels than slots, one
/// boot per kernel would leave a slot idle while the last kernel runs alone (3 kernels on 2 slots
/// take two kernels' time); halves of about equal length even that out. A boot costs ~10 s of
/// its own (kernel start, `oomtrace check`), small against a half's minutes.
fn shards<'a>(ready: &'a [kernel::Kernel], modes: &[&str], plan: &Plan, parallel: usize) -> Vec<Shard<'a>> {
    let per_kernel = if parallel > 1 { 2 } else { 1 };
    let chunk = modes.len().div_ceil(per_kernel).max(1);
    let mut out = Vec::new();
    for k in ready {
        for group in modes.chunks(chunk) {
            let group: Vec<String> = group.iter().map(|m| (*m).to_owned()).collect();
            out.push(Shard {
                kernel: k,
                modes: group.join("+"),
                plan: plan.only_modes(&group),
            });
        }
    }
    out
}

/// Boots every shard, at most `parallel` at once, each with its own run directory (console log,
/// records) under target/vm/run/KERNEL/MODES, and returns each shard's outcome. A boot that fails
/// in any way is that shard's outcome; the others go on.
fn boot_all(
    mut shards: Vec<Shard<'_>>,
    image: &Path,
    vm_dir: &Path,
    opts: &Options,
    parallel: usize,
) -> Vec<KernelOutcome> {
    // Longest first (by the last run; unknown ones before all), so the last to start are short.
    shards.sort_by_key(|b| std::cmp::Reverse(last_elapsed(&run_dir(vm_dir, b)).unwrap_or(u64::MAX)));
    let slots = parallel.clamp(1, shards.len().max(1));
    let queue = Mutex::new(VecDeque::from(shards));
    let outcomes = Mutex::new(Vec::new());
    thread::scope(|s| {
        for _ in 0..slots {
            s.spawn(|| {
                loop {
                    let Some(b) = queue.lock().expect("queue lock").pop_front() else {
                        break;
                    };
                    let o = boot_one(&b, image, vm_dir, opts);
                    outcomes.lock().expect("outcomes lock").push(o);
                }
            });
        }
    });
    outcomes.into_inner().expect("outcomes lock")
}

fn run_dir(vm_dir: &Path, b: &Shard<'_>) -> PathBuf {
    vm_dir.join("run").join(b.kernel.pin.name).join(&b.modes)
}

fn boot_one(b: &Shard<'_>, image: &Path, vm_dir: &Path, opts: &Options) -> KernelOutcome {
    let k = b.kernel;
    let name = format!("{} {}", k.pin.name, b.modes);
    eprintln!(
        "vm-test: [{name}] booting {} for {} tests (timeout {} s)",
        k.release,
        b.plan.tests.len(),
        opts.boot_timeout.as_secs()
    );
    let dir = run_dir(vm_dir, b);
    let modes: Vec<&str> = b.modes.split('+').collect();
    let cfg = qemu::BootConfig {
        vmlinux: &k.vmlinux,
        initramfs: image,
        dir: &dir,
        modes: &modes,
        memory_mib: VM_MEMORY_MIB,
        timeout: opts.boot_timeout,
        keep: opts.keep,
    };
    match qemu::boot(&cfg, |rec| progress(&name, rec)) {
        Ok(boot) => {
            let _ = fs::write(dir.join("elapsed_secs"), boot.elapsed.as_secs().to_string());
            eprintln!(
                "vm-test: [{name}] finished in {} s (guest up after {})",
                boot.elapsed.as_secs(),
                boot.first_record
                    .map_or("-".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()))
            );
            outcome(k, &b.modes, &b.plan, boot, opts.boot_timeout)
        }
        Err(e) => {
            eprintln!("vm-test: [{name}] error: {e:#}");
            let mut o = unavailable_outcome(k.pin, &b.plan, &format!("{e:#}"));
            o.release = Some(k.release.clone());
            o.boots = vec![matrix::BootTime {
                modes: b.modes.clone(),
                secs: 0,
            }];
            o
        }
    }
}

/// One outcome per kernel from its boots' outcomes.
fn merge(parts: Vec<KernelOutcome>) -> Vec<KernelOutcome> {
    let mut out: Vec<KernelOutcome> = Vec::new();
    for p in parts {
        match out.iter_mut().find(|o| o.name == p.name) {
            None => out.push(p),
            Some(o) => {
                o.release = o.release.take().or(p.release);
                for c in p.checks {
                    if !o.checks.contains(&c) {
                        o.checks.push(c);
                    }
                }
                o.planned.extend(p.planned);
                o.results.extend(p.results);
                o.problems.extend(p.problems);
                o.boots.extend(p.boots);
            }
        }
    }
    for o in &mut out {
        o.boots.sort_by(|a, b| a.modes.cmp(&b.modes));
    }
    out
}

/// How long a boot last took, if it was recorded.
fn last_elapsed(dir: &Path) -> Option<u64> {
    fs::read_to_string(dir.join("elapsed_secs"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The outcome of a kernel that could not be booted at all.
fn unavailable_outcome(pin: &Pin, plan: &Plan, why: &str) -> KernelOutcome {
    KernelOutcome {
        name: pin.name.to_owned(),
        source: format!("Debian `{}` {}", pin.package, pin.version),
        release: None,
        checks: Vec::new(),
        planned: plan.tests.clone(),
        results: Vec::new(),
        problems: vec![format!("not booted: {why}")],
        boots: Vec::new(),
    }
}

/// Where each boot's time went: per mode, and the slowest tests (from the guest's per-test
/// milliseconds).
fn timing_report(outcomes: &[KernelOutcome]) -> String {
    let mut out = String::new();
    for k in outcomes {
        let total: u64 = k.results.iter().map(|r| r.millis).sum();
        let boots: Vec<String> = k
            .boots
            .iter()
            .map(|b| format!("{} {} s", b.modes, b.secs))
            .collect();
        let _ = writeln!(
            out,
            "vm-test: [{}] timing: boots {}; tests {:.0} s",
            k.name,
            boots.join(", "),
            total as f64 / 1000.0
        );
        let mut by_mode: BTreeMap<&str, (u64, usize)> = BTreeMap::new();
        for r in &k.results {
            let e = by_mode.entry(r.mode.as_str()).or_default();
            e.0 += r.millis;
            e.1 += 1;
        }
        for (mode, (ms, n)) in &by_mode {
            let _ = writeln!(
                out,
                "vm-test: [{}]   {mode}: {n} tests, {:.0} s",
                k.name,
                *ms as f64 / 1000.0
            );
        }
        let mut slow: Vec<&protocol::TestResult> = k.results.iter().collect();
        slow.sort_by_key(|r| std::cmp::Reverse(r.millis));
        for r in slow.iter().take(8) {
            let _ = writeln!(
                out,
                "vm-test: [{}]   {:6.1} s {} {}::{} ({})",
                k.name,
                r.millis as f64 / 1000.0,
                r.mode,
                r.binary,
                r.test,
                r.status.as_str()
            );
        }
    }
    out
}

fn progress(kernel: &str, rec: &Record) {
    match rec {
        Record::Kernel(release) => eprintln!("vm-test: [{kernel}] up: {release}"),
        Record::Check { mode, verdict } => eprintln!("vm-test: [{kernel}] oomtrace check: {mode} {verdict}"),
        Record::Result(r) => {
            let detail = if r.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", r.detail.chars().take(200).collect::<String>())
            };
            eprintln!(
                "vm-test: [{kernel} {}] {}::{} {} ({:.1} s){detail}",
                r.mode,
                r.binary,
                r.test,
                r.status.as_str(),
                r.millis as f64 / 1000.0
            );
        }
        Record::Kmsg { test, line, .. } => {
            eprintln!("vm-test: [{kernel}] KERNEL ERROR during {test}: {line}")
        }
        Record::Done(n) => eprintln!("vm-test: [{kernel}] done: {n} results"),
    }
}

/// What one boot amounts to, with everything that makes the boot itself a failure.
fn outcome(
    k: &kernel::Kernel,
    modes: &str,
    plan: &Plan,
    boot: qemu::Boot,
    timeout: Duration,
) -> KernelOutcome {
    let mut release = None;
    let mut checks = Vec::new();
    let mut results = Vec::new();
    let mut problems = Vec::new();
    let mut done = None;
    for rec in boot.records {
        match rec {
            Record::Kernel(r) => release = Some(r),
            Record::Check { mode, verdict } => checks.push((mode, verdict)),
            Record::Result(r) => results.push(r),
            Record::Kmsg { test, line, .. } => {
                problems.push(format!("{modes} boot: kernel error during {test}: {line}"))
            }
            Record::Done(n) => done = Some(n),
        }
    }
    for line in &boot.kernel_errors {
        problems.push(format!(
            "{modes} boot: kernel error on the console: {}",
            line.trim()
        ));
    }
    if boot.timed_out {
        problems.push(format!(
            "{modes} boot: the VM was still running after {} s and was killed",
            timeout.as_secs()
        ));
    } else if done.is_none() {
        problems.push(format!(
            "{modes} boot: the VM stopped without reporting all results (qemu: {})",
            boot.qemu_exit
        ));
    }
    if done.is_some_and(|n| n != results.len()) || (done.is_some() && results.len() != plan.tests.len()) {
        problems.push(format!(
            "{modes} boot: {} results for {} planned tests",
            results.len(),
            plan.tests.len()
        ));
    }
    KernelOutcome {
        name: k.pin.name.to_owned(),
        source: format!("Debian `{}` {}", k.pin.package, k.pin.version),
        release: release.or_else(|| Some(k.release.clone())),
        checks,
        planned: plan.tests.clone(),
        results,
        problems,
        boots: vec![matrix::BootTime {
            modes: modes.to_owned(),
            secs: boot.elapsed.as_secs(),
        }],
    }
}

fn which(name: &str) -> Result<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into(), "/bin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} is not in PATH"))
}

fn cargo(workspace: &Path) -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace);
    cmd
}

/// Runs a cargo build with JSON messages and returns (target name, is a test, executable) of
/// every executable it produced.
fn cargo_executables(mut cmd: Command) -> Result<Vec<(String, bool, PathBuf)>> {
    cmd.args([
        "--message-format=json-render-diagnostics",
        "--target",
        GUEST_TARGET,
        "--release",
    ])
    .stdout(Stdio::piped());
    let mut child = cmd.spawn().context("failed to run cargo")?;
    let stdout = child.stdout.take().context("cargo stdout")?;
    let mut out = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.context("failed to read cargo's output")?;
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if v["reason"] != "compiler-artifact" {
            continue;
        }
        if let (Some(name), Some(exe)) = (v["target"]["name"].as_str(), v["executable"].as_str()) {
            out.push((name.to_owned(), v["profile"]["test"] == true, PathBuf::from(exe)));
        }
    }
    let status = child.wait().context("failed to wait for cargo")?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(out)
}

fn build_guest_files(workspace: &Path) -> Result<GuestFiles> {
    let installed = Command::new("rustup")
        .current_dir(workspace)
        .args(["target", "list", "--installed"])
        .output();
    if let Ok(o) = installed
        && o.status.success()
        && !String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|l| l.trim() == GUEST_TARGET)
    {
        bail!(
            "the Rust target {GUEST_TARGET} is not installed (rustup target add {GUEST_TARGET}; \
             scripts/bootstrap.sh adds it)"
        );
    }
    eprintln!("vm-test: building the guest's binaries ({GUEST_TARGET})");
    // One cargo invocation: two would resolve features differently and rebuild shared crates.
    let mut build = cargo(workspace);
    // The release profile strips debug info; the hog keeps its line tables, as the host tests'
    // debug build has them: allocation's user-stack test wants the allocating function's file and
    // line whenever the hog is still alive when its frames are named.
    build.args([
        "--config",
        "profile.release.package.oomtrace-tests.debug=\"line-tables-only\"",
        "--config",
        "profile.release.package.oomtrace-tests.strip=\"none\"",
    ]);
    build.args([
        "build",
        "-p",
        "oomtrace",
        "-p",
        "oomtrace-tests",
        "-p",
        "xtask",
        "--bins",
    ]);
    for name in GUEST_TESTS {
        build.args(["--test", name]);
    }
    let built = cargo_executables(build).context("failed to build the guest's binaries")?;
    let (test_exes, bins): (Vec<_>, Vec<_>) = built.into_iter().partition(|(_, test, _)| *test);

    let bin = |name: &str| {
        bins.iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, p)| p.clone())
            .with_context(|| format!("cargo built no {name} executable"))
    };
    let mut files = GuestFiles {
        oomtrace: bin("oomtrace")?,
        hog: bin("oomtrace-hog")?,
        killer: bin("oomtrace-killer")?,
        init: bin("oomtrace-vm-init")?,
        kill: bin("oomtrace-vm-kill")?,
        tests: BTreeMap::new(),
    };
    for name in GUEST_TESTS {
        let exe = test_exes
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, p)| p.clone())
            .with_context(|| format!("cargo built no test binary {name} (tests/tests/{name}.rs)"))?;
        files.tests.insert(name.to_owned(), exe);
    }
    Ok(files)
}

/// The tests in a libtest binary, from `--list`.
fn list_tests(exe: &Path) -> Result<Vec<String>> {
    let out = Command::new(exe)
        .args(["--list", "--format", "terse"])
        .output()
        .with_context(|| format!("failed to run {} --list", exe.display()))?;
    if !out.status.success() {
        bail!("{} --list failed with {}", exe.display(), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_owned)
        .collect())
}

/// Every selected mode's pass over every test: the per-mode tests (`…_kprobe_mode`) only in
/// their own mode's pass, the others in each.
fn make_plan(files: &GuestFiles, modes: &[&str], opts: &Options) -> Result<Plan> {
    let mut listed = Vec::new();
    for (binary, exe) in &files.tests {
        for test in list_tests(exe)? {
            if opts.filter.as_deref().is_none_or(|f| test.contains(f)) {
                listed.push((binary.clone(), test));
            }
        }
    }
    let mut plan = Plan {
        test_timeout_secs: opts.test_timeout.as_secs(),
        keep: opts.keep,
        tests: Vec::new(),
    };
    for mode in modes {
        for (binary, test) in &listed {
            if protocol::mode_of_test(test).is_none_or(|m| m == *mode) {
                plan.tests.push(PlannedTest {
                    mode: (*mode).to_owned(),
                    binary: binary.clone(),
                    test: test.clone(),
                });
            }
        }
    }
    Ok(plan)
}

fn guest_path(p: &Path) -> Result<&str> {
    p.to_str()
        .filter(|s| s.starts_with('/'))
        .with_context(|| format!("{} is not an absolute UTF-8 path", p.display()))
}

fn write_initramfs(
    workspace: &Path,
    files: &GuestFiles,
    busybox: &Path,
    plan: &Plan,
    out: &Path,
) -> Result<()> {
    let mut c = Cpio::new();
    for dir in ["/dev", "/proc", "/sys", "/tmp", "/root"] {
        c.dir(dir);
    }
    // The kernel opens /dev/console for init before anything is mounted.
    c.char_dev("/dev/console", 5, 1);
    c.static_binary("/init", &files.init)?;
    c.static_binary("/bin/busybox", busybox)
        .context("busybox must be the static one (apt-get install busybox-static)")?;
    for applet in BUSYBOX_APPLETS {
        c.symlink(&format!("/bin/{applet}"), "busybox");
    }
    c.static_binary("/bin/kill", &files.kill)?;
    c.static_binary("/bin/oomtrace", &files.oomtrace)?;
    c.static_binary("/bin/oomtrace-hog", &files.hog)?;
    c.static_binary("/bin/oomtrace-killer", &files.killer)?;
    for (name, exe) in &files.tests {
        c.static_binary(&format!("/tests/{name}"), exe)?;
    }
    // The tests check every record against the schema at the path compiled into them:
    // CARGO_MANIFEST_DIR/../docs/events.schema.json, CARGO_MANIFEST_DIR being <workspace>/tests.
    let schema = workspace.join("docs").join("events.schema.json");
    let data = fs::read(&schema).with_context(|| format!("failed to read {}", schema.display()))?;
    c.dir(guest_path(&workspace.join("tests"))?);
    c.file(guest_path(&schema)?, &data, false);
    c.file("/vm/plan", plan.to_text().as_bytes(), false);

    if let Some(dir) = out.parent() {
        fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    }
    fs::write(out, c.finish()).with_context(|| format!("failed to write {}", out.display()))
}
