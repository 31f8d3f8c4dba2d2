//! A running `oomtrace run` whose stdout lines a thread collects, each stamped with CLOCK_BOOTTIME
//! the moment it was read.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, ChildStdout, Command, ExitStatus, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError, Sender},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

use crate::sys;

/// One JSON line and when we read it.
#[derive(Debug)]
pub struct Stamped {
    /// CLOCK_BOOTTIME (ns) right after the line was read from the pipe.
    pub read_ns: u64,
    pub value: Value,
}

impl Stamped {
    pub fn kind(&self) -> &str {
        self.value["type"].as_str().unwrap_or("")
    }

    /// The record's own timestamp (for `oom_kill`: the kernel's mark_victim time).
    pub fn boot_ns(&self) -> Option<u64> {
        self.value["boot_ns"].as_u64()
    }
}

enum Pump {
    Line,
    Idle,
    /// oomtrace closed its stdout (it exited).
    Closed,
}

pub struct Tracer {
    child: Child,
    lines_rx: Receiver<(u64, String)>,
    /// CLOCK_BOOTTIME (ns) right before the spawn.
    spawned_ns: u64,
    lines: Vec<Stamped>,
    reaped: bool,
}

impl Tracer {
    /// Starts `BIN run` with stdout piped to us and stderr discarded.
    pub fn spawn(bin: &Path) -> Result<Self> {
        let mut cmd = Command::new(bin);
        cmd.arg("run")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let spawned_ns = sys::boot_ns();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("failed to start {} run", bin.display()))?;
        let stdout = child.stdout.take();
        let (tx, lines_rx) = mpsc::channel();
        // Built before anything else can fail, so that dropping it kills the child.
        let tracer = Self {
            child,
            lines_rx,
            spawned_ns,
            lines: Vec::new(),
            reaped: false,
        };
        let stdout = stdout.context("failed to capture oomtrace's stdout")?;
        thread::Builder::new()
            .name("oomtrace-stdout".into())
            .spawn(move || read_lines(stdout, tx))
            .context("failed to start the thread that reads oomtrace's stdout")?;
        Ok(tracer)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn spawned_ns(&self) -> u64 {
        self.spawned_ns
    }

    /// Every line received so far.
    pub fn lines(&self) -> &[Stamped] {
        &self.lines
    }

    /// Receives lines until `done` holds for what has arrived, or `timeout` passes (then false).
    /// Fails if oomtrace exits meanwhile.
    pub fn wait_until(&mut self, timeout: Duration, done: impl Fn(&[Stamped]) -> bool) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.lines) {
                return Ok(true);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            if let Pump::Closed = self.pump(left.min(Duration::from_millis(100)))? {
                return Err(self.exited_early());
            }
        }
    }

    /// Sends SIGINT, waits up to `timeout` for the exit, then collects the remaining lines.
    pub fn stop(&mut self, timeout: Duration) -> Result<ExitStatus> {
        // SAFETY: kill has no memory-safety preconditions; the child is not reaped yet, so the pid is still ours.
        if unsafe { libc::kill(self.pid() as i32, libc::SIGINT) } != 0 {
            return Err(std::io::Error::last_os_error()).context("failed to send SIGINT to oomtrace");
        }
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().context("failed to wait for oomtrace")? {
                self.reaped = true;
                break status;
            }
            if Instant::now() >= deadline {
                bail!(
                    "failed to stop oomtrace: it did not exit within {} s of SIGINT",
                    timeout.as_secs()
                );
            }
            // Keep the pipe drained so a full pipe cannot hold up its exit.
            self.pump(Duration::from_millis(20))?;
        };
        let drain_deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < drain_deadline {
            if let Pump::Closed = self.pump(Duration::from_millis(100))? {
                break;
            }
        }
        Ok(status)
    }

    fn pump(&mut self, timeout: Duration) -> Result<Pump> {
        match self.lines_rx.recv_timeout(timeout) {
            Ok((read_ns, text)) => {
                let value = serde_json::from_str(&text)
                    .with_context(|| format!("failed to parse an oomtrace stdout line as JSON: {text}"))?;
                self.lines.push(Stamped { read_ns, value });
                Ok(Pump::Line)
            }
            Err(RecvTimeoutError::Timeout) => Ok(Pump::Idle),
            Err(RecvTimeoutError::Disconnected) => Ok(Pump::Closed),
        }
    }

    fn exited_early(&mut self) -> anyhow::Error {
        let mut status = None;
        for _ in 0..50 {
            status = self.child.try_wait().ok().flatten();
            if status.is_some() {
                self.reaped = true;
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let how = status.map_or("closed its stdout".to_owned(), |s| format!("exited ({s})"));
        anyhow!(
            "oomtrace {how} before the benchmark was done; run `target/release/oomtrace run` by hand to see why"
        )
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if !self.reaped {
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
