//! A memory hog for oomtrace's tests. Joins a cgroup, sets its oom_score_adj, then allocates and
//! touches memory in steps until it is killed or reaches its target. Built with frame pointers
//! (.cargo/config.toml) so the kernel can walk its user stack: the allocation happens in
//! `grow_buffer`, a name the tests look for in `allocation.user_stack`.
//!
//! oomtrace-hog [--cgroup DIR] [--adj N] [--mb N] [--step-kb N] [--ready FILE] [--ready-fd N]
//!              [--hold] [--thp] [--reserve-mb N] [--threads N]
//!   --mb N          stop after N MiB (default: never stop)
//!   --ready FILE    after reaching --mb, write "ready" to FILE
//!   --ready-fd N    after reaching --mb, write "ready\n" to the inherited file descriptor N (a
//!                   pipe the test reads: it wakes at once, and sees EOF if the hog dies first)
//!   --hold          after reaching --mb (and the ready signals), sleep until killed
//!   --thp           allocate from one anonymous mapping with MADV_HUGEPAGE (2 MiB huge pages)
//!   --reserve-mb N  first map N MiB without touching it (virtual size far above resident)
//!   --threads N     N threads allocate at once, each in its own `grow_buffer` loop, released
//!                   together by a barrier (as TensorFlow, Java and Go programs fault from many
//!                   threads); --mb is then the total, shared out. Not with --thp/--reserve-mb.
use std::{
    env,
    ffi::OsString,
    fs,
    path::Path,
    process::ExitCode,
    sync::{Arc, Barrier},
    thread,
    time::Duration,
};

/// One big anonymous mapping, touched page by page from the start.
struct Arena {
    base: *mut u8,
    len: usize,
    used: usize,
}

impl Arena {
    fn new(len: usize, thp: bool) -> Self {
        // SAFETY: anonymous private mapping; checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED, "mmap {len} bytes");
        if thp {
            // SAFETY: advising our own mapping.
            let rc = unsafe { libc::madvise(base, len, libc::MADV_HUGEPAGE) };
            assert_eq!(rc, 0, "madvise(MADV_HUGEPAGE)");
        }
        Self {
            base: base.cast(),
            len,
            used: 0,
        }
    }
}

/// Touches `step` more bytes of memory: the page faults the OOM killer interrupts happen here.
#[inline(never)]
fn grow_buffer(arena: &mut Option<Arena>, held: &mut Vec<Vec<u8>>, step: usize) -> usize {
    match arena {
        Some(a) => {
            let end = (a.used + step).min(a.len);
            for off in (a.used..end).step_by(4096) {
                // SAFETY: inside our mapping.
                unsafe { a.base.add(off).write_volatile(1) };
            }
            let n = end - a.used;
            a.used = end;
            n
        }
        None => {
            let mut chunk = vec![0u8; step];
            for i in (0..chunk.len()).step_by(4096) {
                chunk[i] = 1;
            }
            held.push(std::hint::black_box(chunk));
            step
        }
    }
}

/// `n` threads, each touching `step` bytes at a time until its share of `limit` (or forever),
/// started together so that their page faults hit the cgroup's limit at the same moment.
fn grow_in_threads(n: usize, limit: Option<usize>, step: usize) -> Vec<Vec<Vec<u8>>> {
    let start = Arc::new(Barrier::new(n));
    let share = limit.map(|l| l / n);
    let workers: Vec<_> = (0..n)
        .map(|i| {
            let start = start.clone();
            thread::Builder::new()
                .name(format!("hog-{i}"))
                .spawn(move || {
                    let mut held = Vec::new();
                    let mut total = 0usize;
                    start.wait();
                    while share.is_none_or(|l| total < l) {
                        total += grow_buffer(&mut None, &mut held, step);
                    }
                    held
                })
                .expect("spawn hog thread")
        })
        .collect();
    // Each thread's memory is handed back, so it stays held (--hold) after the threads end.
    workers
        .into_iter()
        .map(|w| w.join().expect("hog thread"))
        .collect()
}

/// Tells the test that the memory is held: a `ready` file, and/or a line on an inherited fd.
fn signal_ready(file: Option<&str>, fd: Option<i32>) {
    if let Some(r) = file {
        fs::write(r, "ready").expect("write ready file");
    }
    if let Some(fd) = fd {
        // SAFETY: the test passed this fd open for writing and nothing else here uses it; the
        // File takes it over and closes it (the test then sees EOF: no more signals come).
        let mut f = unsafe { <fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        std::io::Write::write_all(&mut f, b"ready\n").expect("write --ready-fd");
    }
}

fn main() -> ExitCode {
    // Arguments as bytes: a cgroup directory's name need not be UTF-8 (tests use such names).
    let mut args = env::args_os().skip(1);
    let (mut cgroup, mut adj, mut mb, mut step_kb, mut ready, mut hold) =
        (None::<OsString>, None, None, 1024usize, None, false);
    let (mut thp, mut reserve_mb, mut threads) = (false, 0usize, 1usize);
    let mut ready_fd = None::<i32>;
    while let Some(a) = args.next() {
        let mut raw = || args.next().expect("flag needs a value");
        if a == "--cgroup" {
            cgroup = Some(raw());
            continue;
        }
        let mut val = || raw().into_string().expect("flag value is not UTF-8");
        match a.to_string_lossy().as_ref() {
            "--adj" => adj = Some(val()),
            "--mb" => mb = Some(val().parse::<usize>().expect("--mb")),
            "--step-kb" => step_kb = val().parse().expect("--step-kb"),
            "--ready" => ready = Some(val()),
            "--ready-fd" => ready_fd = Some(val().parse().expect("--ready-fd")),
            "--hold" => hold = true,
            "--thp" => thp = true,
            "--reserve-mb" => reserve_mb = val().parse().expect("--reserve-mb"),
            "--threads" => threads = val().parse().expect("--threads"),
            other => {
                eprintln!("oomtrace-hog: unknown argument {other}");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(dir) = cgroup {
        fs::write(
            Path::new(&dir).join("cgroup.procs"),
            std::process::id().to_string(),
        )
        .expect("join cgroup");
    }
    if let Some(adj) = adj {
        fs::write("/proc/self/oom_score_adj", adj).expect("set oom_score_adj");
    }
    let limit = mb.map(|m| m << 20);
    if threads > 1 {
        if thp || reserve_mb > 0 {
            eprintln!("oomtrace-hog: --threads does not combine with --thp or --reserve-mb");
            return ExitCode::from(2);
        }
        let _held = grow_in_threads(threads, limit, step_kb << 10);
        signal_ready(ready.as_deref(), ready_fd);
        if hold {
            loop {
                thread::sleep(Duration::from_secs(3600));
            }
        }
        return ExitCode::SUCCESS;
    }
    // THP and reserved memory come from one mapping (huge pages need 2 MiB-aligned ranges).
    let mut arena =
        (thp || reserve_mb > 0).then(|| Arena::new((reserve_mb.max(mb.unwrap_or(1024))) << 20, thp));
    let mut held: Vec<Vec<u8>> = Vec::new();
    let mut total = 0usize;
    let step = if thp { 2 << 20 } else { step_kb << 10 };
    while limit.is_none_or(|l| total < l) {
        let n = grow_buffer(&mut arena, &mut held, step);
        if n == 0 {
            break;
        }
        total += n;
    }
    signal_ready(ready.as_deref(), ready_fd);
    if hold {
        loop {
            thread::sleep(Duration::from_secs(3600));
        }
    }
    ExitCode::SUCCESS
}
