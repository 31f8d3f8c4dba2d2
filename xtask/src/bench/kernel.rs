//! What the benchmark reads from the kernel about the contenders: CPU time, eBPF program run
//! statistics, clocks; and the sizes of their executables.

use std::{
    collections::HashMap,
    fs,
    os::fd::{FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// CPU time of a process, all threads, in clock ticks: utime + stime of /proc/PID/stat.
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let text = fs::read_to_string(&path).with_context(|| format!("failed to read {path}"))?;
    parse_cpu_ticks(&text).with_context(|| format!("failed to parse {path}"))
}

/// utime and stime are fields 14 and 15 (proc(5)); comm (field 2) may hold spaces and parens, so
/// count from the last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Machine-wide CPU time from the `cpu` line of /proc/stat, in clock ticks: (busy, all). Busy is
/// everything but idle and iowait.
pub fn machine_ticks() -> Option<(u64, u64)> {
    let text = fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = text
        .lines()
        .find_map(|l| l.strip_prefix("cpu "))?
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let all: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4).unwrap_or(&0);
    Some((all - idle, all))
}

/// CPU seconds used by this process and its reaped children (the contenders, the hogs).
pub fn own_cpu_seconds() -> f64 {
    let secs = |who| {
        // SAFETY: rusage is plain data; getrusage only writes it.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: ru is a valid, writable rusage.
        unsafe { libc::getrusage(who, &mut ru) };
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(ru.ru_utime) + tv(ru.ru_stime)
    };
    secs(libc::RUSAGE_SELF) + secs(libc::RUSAGE_CHILDREN)
}

/// Clock ticks per second (USER_HZ).
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as u64 } else { 100 }
}

/// CLOCK_MONOTONIC in ns (bpftrace's `nsecs`, the kernel's bpf_ktime_get_ns()).
pub fn mono_ns() -> u64 {
    crate::sys::clock_ns(libc::CLOCK_MONOTONIC)
}

/// CLOCK_BOOTTIME − CLOCK_MONOTONIC in ns: the time this machine spent suspended.
pub fn boot_minus_mono_ns() -> i64 {
    let a = mono_ns();
    let b = crate::sys::boot_ns();
    let c = mono_ns();
    b as i64 - (a / 2 + c / 2) as i64
}

/// IRQ-work interrupts so far, all CPUs: the `IWI` line of /proc/interrupts (x86).
pub fn irq_work_interrupts() -> Option<u64> {
    parse_irq_work(&fs::read_to_string("/proc/interrupts").ok()?)
}

fn parse_irq_work(text: &str) -> Option<u64> {
    let line = text.lines().find_map(|l| l.trim_start().strip_prefix("IWI:"))?;
    // Per-CPU counts, then the description.
    Some(line.split_whitespace().map_while(|f| f.parse::<u64>().ok()).sum())
}

/// One eBPF program a process holds, with its run statistics.
#[derive(Clone, Debug)]
pub struct ProgStat {
    pub id: u32,
    /// `prog_type` of fdinfo (5: tracepoint, 26: tracing = tp_btf/fentry, 17: raw tracepoint…).
    pub prog_type: u32,
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

/// The eBPF programs whose fds process `pid` holds, from /proc/PID/fdinfo (run_time_ns and run_cnt
/// count only while kernel.bpf_stats_enabled is on).
pub fn bpf_progs(pid: u32) -> Result<Vec<ProgStat>> {
    let dir = format!("/proc/{pid}/fd");
    let mut progs: Vec<ProgStat> = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("failed to list {dir}"))? {
        let Ok(entry) = entry else { continue };
        let is_prog = fs::read_link(entry.path()).is_ok_and(|t| t.to_string_lossy() == "anon_inode:bpf-prog");
        if !is_prog {
            continue;
        }
        let info = format!("/proc/{pid}/fdinfo/{}", entry.file_name().to_string_lossy());
        // The fd may close between the two reads; skip it then.
        let Ok(text) = fs::read_to_string(&info) else {
            continue;
        };
        if let Some(p) = parse_prog_fdinfo(&text)
            && !progs.iter().any(|q| q.id == p.id)
        {
            progs.push(p);
        }
    }
    Ok(progs)
}

fn parse_prog_fdinfo(text: &str) -> Option<ProgStat> {
    let get = |key: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.trim().parse().ok())
    };
    Some(ProgStat {
        id: u32::try_from(get("prog_id")?).ok()?,
        prog_type: u32::try_from(get("prog_type")?).ok()?,
        run_time_ns: get("run_time_ns").unwrap_or(0),
        run_cnt: get("run_cnt").unwrap_or(0),
    })
}

/// Program names by id, from `bpftool prog show --json` (fdinfo carries no name).
pub fn prog_names() -> Result<HashMap<u32, String>> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output()
        .context("failed to run bpftool (apt-get install bpftool; scripts/bootstrap.sh installs it)")?;
    if !out.status.success() {
        bail!(
            "bpftool prog show failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let list: Value = serde_json::from_slice(&out.stdout).context("failed to parse bpftool's JSON")?;
    Ok(list
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| {
                    let id = u32::try_from(p["id"].as_u64()?).ok()?;
                    Some((id, p["name"].as_str().unwrap_or("").to_owned()))
                })
                .collect()
        })
        .unwrap_or_default())
}

/// kernel.bpf_stats_enabled switched on for as long as this lives (BPF_ENABLE_STATS: the kernel
/// switches it back off when the fd closes, also if the benchmark dies).
pub struct BpfStats {
    _fd: OwnedFd,
}

/// enum bpf_cmd (include/uapi/linux/bpf.h).
const BPF_ENABLE_STATS: libc::c_long = 32;
/// enum bpf_stats_type.
const BPF_STATS_RUN_TIME: u32 = 0;

impl BpfStats {
    pub fn enable() -> Result<Self> {
        // union bpf_attr, as used by BPF_ENABLE_STATS: struct { __u32 type; } enable_stats.
        let attr: [u32; 2] = [BPF_STATS_RUN_TIME, 0];
        // SAFETY: attr is a valid buffer of the size passed; the kernel only reads it.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_ENABLE_STATS,
                attr.as_ptr(),
                std::mem::size_of_val(&attr) as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error())
                .context("failed to enable eBPF run-time statistics (BPF_ENABLE_STATS needs CAP_SYS_ADMIN)");
        }
        // SAFETY: the syscall returned a new fd that nothing else owns.
        Ok(Self {
            _fd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
        })
    }
}

/// The value of kernel.bpf_stats_enabled now.
pub fn bpf_stats_sysctl() -> Option<u8> {
    fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// An executable's size, and that of the shared libraries it loads beyond the C runtime.
#[derive(Clone, Debug, Default)]
pub struct BinarySize {
    pub path: PathBuf,
    pub bytes: u64,
    pub libs_bytes: u64,
    pub libs: Vec<String>,
}

/// Libraries every program on the system shares; not counted against a contender.
const BASE_LIBS: [&str; 9] = [
    "linux-vdso",
    "ld-linux",
    "libc.so",
    "libm.so",
    "libgcc_s.so",
    "libpthread.so",
    "libdl.so",
    "librt.so",
    "libutil.so",
];

pub fn binary_size(path: &Path) -> Result<BinarySize> {
    let bytes = fs::metadata(path)
        .with_context(|| format!("failed to stat {}", path.display()))?
        .len();
    let mut size = BinarySize {
        path: path.to_owned(),
        bytes,
        ..BinarySize::default()
    };
    // ldd lines: `libx.so.1 => /usr/lib/.../libx.so.1 (0x...)`.
    if let Ok(out) = Command::new("ldd").arg(path).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some((name, rest)) = line.trim().split_once(" => ") else {
                continue;
            };
            if BASE_LIBS.iter().any(|b| name.starts_with(b)) {
                continue;
            }
            let Some(lib) = rest.split_whitespace().next() else {
                continue;
            };
            if let Ok(m) = fs::metadata(lib) {
                size.libs_bytes += m.len();
                size.libs.push(name.to_owned());
            }
        }
    }
    Ok(size)
}

/// The first `name` found in PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn irq_work_line() {
        let text = "           CPU0       CPU1       \n  NMI:          0          0   Non-maskable interrupts\n  IWI:      79834      74583   IRQ work interrupts\n";
        assert_eq!(parse_irq_work(text), Some(79834 + 74583));
        assert_eq!(parse_irq_work("CPU0\n"), None);
    }

    use super::*;

    #[test]
    fn cpu_ticks_from_stat() {
        let stat = "1234 (a) b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 37 5 0 0 20 0 1 0 100 1000 200";
        assert_eq!(parse_cpu_ticks(stat), Some(42));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn prog_fdinfo() {
        let text = "pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t1038\nprog_type:\t5\nprog_jited:\t1\n\
                    prog_tag:\tdf2d86655de49f12\nmemlock:\t4096\nprog_id:\t4037\nrun_time_ns:\t1234\n\
                    run_cnt:\t7\nrecursion_misses:\t0\nverified_insns:\t52\n";
        let p = parse_prog_fdinfo(text).unwrap();
        assert_eq!((p.id, p.prog_type, p.run_time_ns, p.run_cnt), (4037, 5, 1234, 7));
        assert!(parse_prog_fdinfo("pos:\t0\n").is_none());
    }
}
