//! kill(1) for oomtrace's test VMs: `kill [-SIGNAL] PID...`, SIGNAL a number or a name
//! (`-9`, `-KILL`, `-SIGKILL`), default TERM. busybox's kill cannot stand in: the tests copy
//! /bin/kill under another name, and a renamed busybox no longer knows which applet it is.

use std::{io, process::ExitCode};

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

const SIGNALS: [(&str, i32); 10] = [
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("KILL", 9),
    ("USR1", 10),
    ("USR2", 12),
    ("TERM", 15),
    ("CONT", 18),
    ("STOP", 19),
    ("ABRT", 6),
];

fn signal(spec: &str) -> Option<i32> {
    if let Ok(n) = spec.parse() {
        return Some(n);
    }
    let name = spec.strip_prefix("SIG").unwrap_or(spec);
    SIGNALS.iter().find(|(n, _)| *n == name).map(|&(_, s)| s)
}

fn main() -> ExitCode {
    let mut sig = 15;
    let mut pids = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.strip_prefix('-') {
            Some(spec) if pids.is_empty() && !spec.is_empty() => match signal(spec) {
                Some(s) => sig = s,
                None => {
                    eprintln!("kill: unknown signal {arg}");
                    return ExitCode::from(2);
                }
            },
            _ => match arg.parse::<i32>() {
                Ok(p) => pids.push(p),
                Err(_) => {
                    eprintln!("kill: not a pid: {arg}");
                    return ExitCode::from(2);
                }
            },
        }
    }
    if pids.is_empty() {
        eprintln!("usage: kill [-SIGNAL] PID...");
        return ExitCode::from(2);
    }
    let mut code = ExitCode::SUCCESS;
    for pid in pids {
        // SAFETY: kill has no memory-safety preconditions.
        if unsafe { kill(pid, sig) } != 0 {
            eprintln!("kill: ({pid}): {}", io::Error::last_os_error());
            code = ExitCode::FAILURE;
        }
    }
    code
}
