//! A process that kills, for oomtrace's whodunit tests.
//!
//! oomtrace-killer kill PID           kill(2) with SIGKILL        (si_code SI_USER)
//! oomtrace-killer tgkill PID         tgkill(2) on the main thread (si_code SI_TKILL)
//! oomtrace-killer pidfd PID          pidfd_send_signal(2)        (si_code SI_USER)
//! oomtrace-killer watch DIR BYTES    like earlyoom: once the memory cgroup DIR uses BYTES or more,
//!                                    SIGKILL its member with the largest RSS, print its pid, exit
use std::{env, fs, process::ExitCode, thread, time::Duration};

fn rss_kb(pid: i32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}

fn usage(dir: &str) -> u64 {
    ["memory.usage_in_bytes", "memory.current"]
        .iter()
        .find_map(|f| fs::read_to_string(format!("{dir}/{f}")).ok()?.trim().parse().ok())
        .unwrap_or(0)
}

fn check(rc: libc::c_long, what: &str) -> Result<(), String> {
    if rc < 0 {
        Err(format!("{what}: {}", std::io::Error::last_os_error()))
    } else {
        Ok(())
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let pid = |i: usize| {
        args.get(i)
            .and_then(|a| a.parse::<i32>().ok())
            .ok_or("missing PID")
    };
    match args.first().map(String::as_str) {
        // SAFETY (all): plain syscalls with integer arguments.
        Some("kill") => check(unsafe { libc::kill(pid(1)?, libc::SIGKILL) }.into(), "kill"),
        Some("tgkill") => {
            let p = pid(1)?;
            check(
                unsafe { libc::syscall(libc::SYS_tgkill, p, p, libc::SIGKILL) },
                "tgkill",
            )
        }
        Some("pidfd") => {
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid(1)?, 0) };
            check(fd, "pidfd_open")?;
            let null: *const libc::siginfo_t = std::ptr::null();
            check(
                unsafe { libc::syscall(libc::SYS_pidfd_send_signal, fd as i32, libc::SIGKILL, null, 0) },
                "pidfd_send_signal",
            )
        }
        Some("watch") => {
            let dir = args.get(1).ok_or("missing DIR")?;
            let limit: u64 = args.get(2).and_then(|a| a.parse().ok()).ok_or("missing BYTES")?;
            for _ in 0..3000 {
                if usage(dir) >= limit {
                    let procs =
                        fs::read_to_string(format!("{dir}/cgroup.procs")).map_err(|e| e.to_string())?;
                    let victim = procs
                        .lines()
                        .filter_map(|l| l.trim().parse::<i32>().ok())
                        .max_by_key(|&p| rss_kb(p));
                    let victim = victim.ok_or("cgroup is empty")?;
                    check(unsafe { libc::kill(victim, libc::SIGKILL) }.into(), "kill")?;
                    println!("{victim}");
                    return Ok(());
                }
                thread::sleep(Duration::from_millis(10));
            }
            Err("the cgroup never reached the threshold".into())
        }
        _ => Err("usage: oomtrace-killer kill|tgkill|pidfd PID | watch DIR BYTES".into()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oomtrace-killer: {e}");
            ExitCode::FAILURE
        }
    }
}
