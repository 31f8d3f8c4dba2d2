//! One boot of a test VM: qemu with TCG (KVM does not work for Linux guests on this project's
//! machines, and multi-threaded TCG has oopsed around live-patched code), the kernel's console on
//! the first serial port, the guest's records on the second.

use std::{
    fs::{self, File},
    io::{BufRead, BufReader, Read, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc::{self, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::protocol::{self, Record, TAG};

pub struct BootConfig<'a> {
    pub vmlinux: &'a Path,
    pub initramfs: &'a Path,
    /// Where the console log and the records go.
    pub dir: &'a Path,
    /// The plan's modes this boot runs (see `protocol::MODES_PARAM`).
    pub modes: &'a [&'a str],
    pub memory_mib: u32,
    pub timeout: Duration,
    /// Interactive: the console is shown and stdin goes to the guest; no timeout after `done`.
    pub keep: bool,
}

/// What a boot produced.
pub struct Boot {
    pub records: Vec<Record>,
    /// Console or qemu lines naming a kernel error (Oops, BUG:, panic, KVM internal error, …).
    pub kernel_errors: Vec<String>,
    pub timed_out: bool,
    /// qemu's exit, e.g. `exit status: 0`.
    pub qemu_exit: String,
    pub elapsed: Duration,
    /// When the guest's first record (its `kernel` line) came: the boot itself, before any test.
    pub first_record: Option<Duration>,
}

/// Lines the guest's init writes on the console that are not the kernel's: test output (which
/// may well print "BUG:" in a message) and its own banners. Kernel errors found in test output
/// are caught by the guest's scan of the kernel log instead.
fn from_guest_runner(line: &str) -> bool {
    line.starts_with("| ")
        || line.starts_with("== ")
        || line.starts_with(TAG)
        || line.starts_with("oomtrace-vm-init:")
}

fn qemu_command(cfg: &BootConfig, results: &Path) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", "tcg,thread=single", "-cpu", "max", "-M", "pc"])
        .args(["-m", &format!("{}M", cfg.memory_mib), "-smp", "2"])
        .args(["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"])
        .args(["-serial", "stdio"])
        .arg("-serial")
        .arg(format!("file:{}", results.display()))
        .arg("-kernel")
        .arg(cfg.vmlinux)
        .arg("-initrd")
        .arg(cfg.initramfs)
        // panic=-1 reboots at once on a panic, and -no-reboot turns that into qemu exiting;
        // oops=panic makes every Oops such a panic. loglevel=4 keeps the console to errors.
        .arg("-append")
        .arg(format!(
            "console=ttyS0 panic=-1 oops=panic loglevel=4 rdinit=/init {}={}",
            protocol::MODES_PARAM,
            cfg.modes.join(",")
        ))
        .stdin(if cfg.keep { Stdio::inherit() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Reads complete lines appended to a file since the last call.
struct Tail {
    path: PathBuf,
    offset: u64,
    partial: String,
}

impl Tail {
    fn lines(&mut self) -> Vec<String> {
        let Ok(mut f) = File::open(&self.path) else {
            return Vec::new();
        };
        use std::io::Seek;
        if f.seek(std::io::SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut bytes = Vec::new();
        let _ = f.read_to_end(&mut bytes);
        self.offset += bytes.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&bytes));
        let mut out = Vec::new();
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            out.push(line.trim_end_matches(['\r', '\n']).to_owned());
        }
        out
    }
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Boots once and collects everything; `on_record` sees each record as it arrives.
pub fn boot(cfg: &BootConfig, mut on_record: impl FnMut(&Record)) -> Result<Boot> {
    fs::create_dir_all(cfg.dir).with_context(|| format!("failed to create {}", cfg.dir.display()))?;
    let results = cfg.dir.join("records.txt");
    let console_log = cfg.dir.join("console.log");
    fs::write(&results, "").with_context(|| format!("failed to create {}", results.display()))?;
    let mut log =
        File::create(&console_log).with_context(|| format!("failed to create {}", console_log.display()))?;

    let started = Instant::now();
    let mut child = qemu_command(cfg, &results)
        .spawn()
        .context("failed to start qemu-system-x86_64 (apt-get install qemu-system-x86; scripts/bootstrap.sh installs it)")?;
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().context("qemu stdout")?;
    let stderr = child.stderr.take().context("qemu stderr")?;
    for (stream, prefix) in [
        (Box::new(stdout) as Box<dyn Read + Send>, ""),
        (Box::new(stderr), "qemu: "),
    ] {
        let tx = tx.clone();
        thread::spawn(move || {
            let mut r = BufReader::new(stream);
            let mut buf = Vec::new();
            while r.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
                let line = String::from_utf8_lossy(&buf);
                if tx
                    .send(format!("{prefix}{}", line.trim_end_matches(['\r', '\n'])))
                    .is_err()
                {
                    break;
                }
                buf.clear();
            }
        });
    }
    drop(tx);

    let mut tail = Tail {
        path: results.clone(),
        offset: 0,
        partial: String::new(),
    };
    let mut boot = Boot {
        records: Vec::new(),
        kernel_errors: Vec::new(),
        timed_out: false,
        qemu_exit: String::new(),
        elapsed: Duration::ZERO,
        first_record: None,
    };
    let mut done = false;
    let mut collect = |boot: &mut Boot, done: &mut bool| {
        for line in tail.lines() {
            if let Some(rec) = Record::parse(&line) {
                *done |= matches!(rec, Record::Done(_));
                boot.first_record.get_or_insert_with(|| started.elapsed());
                on_record(&rec);
                boot.records.push(rec);
            }
        }
    };
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                let _ = writeln!(log, "{line}");
                if cfg.keep {
                    eprintln!("{line}");
                }
                if !from_guest_runner(&line) && protocol::kernel_error(&line).is_some() {
                    boot.kernel_errors.push(line);
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {}
        }
        collect(&mut boot, &mut done);
        let limit_applies = !(cfg.keep && done);
        if limit_applies && started.elapsed() > cfg.timeout {
            boot.timed_out = true;
            let _ = writeln!(log, "vm-test: killed qemu after {} s", cfg.timeout.as_secs());
            kill(&mut child);
            break;
        }
    }
    let status = child.wait().context("failed to wait for qemu")?;
    boot.qemu_exit = status.to_string();
    collect(&mut boot, &mut done);
    boot.elapsed = started.elapsed();
    Ok(boot)
}
