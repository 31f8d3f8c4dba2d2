//! Small reads of the running system: clocks, /proc counters, the test-suite lock.

use std::{
    fs::{self, File, OpenOptions},
    io,
    os::fd::AsRawFd,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};

/// The lock the root tests take around anything that makes OOM kills (tests/src/lib.rs).
pub const KILL_LOCK: &str = "/tmp/oomtrace-tests.lock";

/// CLOCK_BOOTTIME in ns: the clock of the kernel's `boot_ns` timestamps.
pub fn boot_ns() -> u64 {
    clock_ns(libc::CLOCK_BOOTTIME)
}

/// `clock` in ns. CLOCK_BOOTTIME and CLOCK_MONOTONIC exist on every kernel oomtrace supports.
pub fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The machine-wide count of OOM kills (`oom_kill` in /proc/vmstat).
pub fn vmstat_oom_kills() -> Result<u64> {
    let text = fs::read_to_string("/proc/vmstat").context("failed to read /proc/vmstat")?;
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
        .context("failed to find oom_kill in /proc/vmstat")
}

/// A process's resident set size in KiB (`VmRSS` in /proc/PID/status).
pub fn vm_rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).with_context(|| format!("failed to read {path}"))?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
        .with_context(|| format!("failed to find VmRSS in {path}"))
}

/// What `uname -r` prints.
pub fn kernel_release() -> Result<String> {
    let text = fs::read_to_string("/proc/sys/kernel/osrelease")
        .context("failed to read /proc/sys/kernel/osrelease")?;
    Ok(text.trim().to_owned())
}

/// Now in UTC, e.g. `2026-11-27 20:31:00 UTC`.
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (y, m, d) = civil_date(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar.
fn civil_date(days: i64) -> (i64, i64, i64) {
    // Count from 0000-03-01 so that the leap day ends each 4/100/400-year cycle.
    let days = days + 719_468;
    let cycle = days.div_euclid(146_097);
    let day_of_cycle = days.rem_euclid(146_097);
    let year_of_cycle =
        (day_of_cycle - day_of_cycle / 1460 + day_of_cycle / 36_524 - day_of_cycle / 146_096) / 365;
    let day_of_year = day_of_cycle - (365 * year_of_cycle + year_of_cycle / 4 - year_of_cycle / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_cycle + cycle * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Held for as long as it lives: the exclusive flock on [`KILL_LOCK`].
pub struct KillLock {
    _file: File,
}

/// Takes the test suite's lock, waiting (and saying so) while someone else holds it.
pub fn kill_lock() -> Result<KillLock> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(KILL_LOCK)
        .with_context(|| format!("failed to open {KILL_LOCK}"))?;
    let fd = file.as_raw_fd();
    // SAFETY: fd is a valid open descriptor owned by `file`.
    if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(err).with_context(|| format!("failed to lock {KILL_LOCK}"));
        }
        eprintln!("waiting for {KILL_LOCK} (held by the root tests or another bench)...");
        loop {
            // SAFETY: as above; this blocks until the lock is ours.
            if unsafe { libc::flock(fd, libc::LOCK_EX) } == 0 {
                break;
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err).with_context(|| format!("failed to lock {KILL_LOCK}"));
            }
        }
    }
    Ok(KillLock { _file: file })
}

/// Fails unless we can make memory cgroups and load eBPF programs.
pub fn require_root() -> Result<()> {
    if !is_root() {
        bail!(
            "the benchmark needs root (it loads eBPF programs and creates memory cgroups): run it with sudo"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(11_016), (2000, 2, 29));
        assert_eq!(civil_date(20_784), (2026, 11, 27));
        assert_eq!(civil_date(-1), (1969, 12, 31));
    }
}
