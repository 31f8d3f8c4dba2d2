//! A contender process whose stdout lines a thread collects, each stamped with CLOCK_BOOTTIME the
//! moment it was read; its stderr goes to a log file, whose tail explains a failure.
//!
//! (`crate::tracer::Tracer` does the same for a plain `oomtrace run` with JSON lines; this one runs
//! any command with arguments and keeps the lines as text.)

use std::{
    fs::{self, File},
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, ExitStatus, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::sys;

pub struct LineProc {
    child: Child,
    rx: Receiver<(u64, String)>,
    spawned_ns: u64,
    stderr_log: PathBuf,
    reaped: Option<ExitStatus>,
}

/// What one receive found.
pub struct Received {
    pub lines: Vec<(u64, String)>,
    /// The process closed its stdout (it exited).
    pub closed: bool,
}

impl LineProc {
    pub fn spawn(program: &Path, args: &[String], stderr_log: &Path) -> Result<Self> {
        if let Some(dir) = stderr_log.parent() {
            fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
        }
        let stderr =
            File::create(stderr_log).with_context(|| format!("failed to create {}", stderr_log.display()))?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let spawned_ns = sys::boot_ns();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("failed to start {}", program.display()))?;
        let stdout = child.stdout.take();
        let (tx, rx) = mpsc::channel();
        // Built before anything else can fail, so that dropping it kills the child.
        let proc = Self {
            child,
            rx,
            spawned_ns,
            stderr_log: stderr_log.to_owned(),
            reaped: None,
        };
        let stdout = stdout.context("failed to capture the contender's stdout")?;
        thread::Builder::new()
            .name("bench-stdout".into())
            .spawn(move || read_lines(stdout, tx))
            .context("failed to start a thread to read the contender's stdout")?;
        Ok(proc)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn spawned_ns(&self) -> u64 {
        self.spawned_ns
    }

    /// Waits up to `wait` for a first line, then takes every line already read.
    pub fn receive(&mut self, wait: Duration) -> Received {
        let mut lines = Vec::new();
        let mut closed = false;
        match self.rx.recv_timeout(wait) {
            Ok(line) => lines.push(line),
            Err(RecvTimeoutError::Timeout) => return Received { lines, closed },
            Err(RecvTimeoutError::Disconnected) => closed = true,
        }
        while !closed {
            match self.rx.try_recv() {
                Ok(line) => lines.push(line),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => closed = true,
            }
        }
        Received { lines, closed }
    }

    /// The exit status, if the process has exited (waiting a moment for it).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        for _ in 0..50 {
            if self.reaped.is_some() {
                break;
            }
            self.reaped = self.child.try_wait().ok().flatten();
            if self.reaped.is_none() {
                thread::sleep(Duration::from_millis(20));
            }
        }
        self.reaped
    }

    /// The last lines of its stderr, for an error message.
    pub fn stderr_tail(&self) -> String {
        stderr_tail(&self.stderr_log)
    }

    /// Sends SIGINT, waits up to `timeout` (SIGKILL after that), and returns the lines that were
    /// still on their way with the exit status.
    pub fn stop(&mut self, timeout: Duration) -> Result<(Vec<(u64, String)>, ExitStatus)> {
        let mut lines = Vec::new();
        if self.reaped.is_none() {
            // SAFETY: kill has no memory-safety preconditions; the child is not reaped, so the pid is ours.
            unsafe { libc::kill(self.pid() as i32, libc::SIGINT) };
        }
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.reaped {
                break s;
            }
            if let Some(s) = self.child.try_wait().context("failed to wait for a contender")? {
                self.reaped = Some(s);
                break s;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let s = self.child.wait().context("failed to wait for a contender")?;
                self.reaped = Some(s);
                bail!(
                    "it did not exit within {} s of SIGINT (killed); stderr: {}",
                    timeout.as_secs(),
                    self.stderr_tail()
                );
            }
            // Keep the pipe drained so a full pipe cannot hold up its exit.
            lines.extend(self.receive(Duration::from_millis(20)).lines);
        };
        let drain_deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < drain_deadline {
            let got = self.receive(Duration::from_millis(100));
            lines.extend(got.lines);
            if got.closed {
                break;
            }
        }
        Ok((lines, status))
    }
}

impl Drop for LineProc {
    fn drop(&mut self) {
        if self.reaped.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn read_lines(stdout: ChildStdout, tx: Sender<(u64, String)>) {
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        let read_ns = sys::boot_ns();
        if tx.send((read_ns, line)).is_err() {
            break;
        }
    }
}

/// The last non-empty lines of a log file (at most ~400 characters), `(empty)` if none.
pub fn stderr_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut tail = lines[lines.len().saturating_sub(3)..].join(" | ");
    if tail.len() > 400 {
        let cut = tail.len() - 400;
        let cut = (cut..tail.len())
            .find(|i| tail.is_char_boundary(*i))
            .unwrap_or(cut);
        tail = format!("…{}", &tail[cut..]);
    }
    if tail.is_empty() {
        "(empty)".to_owned()
    } else {
        tail
    }
}
