//! A memory hog for oomtrace's tests. Joins a cgroup, sets its oom_score_adj, then allocates and
//! touches memory in steps until it is killed or reaches its target.
//!
//! oomtrace-hog [--cgroup DIR] [--adj N] [--mb N] [--step-kb N] [--ready FILE] [--hold]
//!   --mb N      stop after N MiB (default: never stop)
//!   --hold      after reaching --mb, write "ready" to --ready (if given) and sleep until killed
use std::{env, fs, process::ExitCode, thread, time::Duration};

fn main() -> ExitCode {
    let mut args = env::args().skip(1);
    let (mut cgroup, mut adj, mut mb, mut step_kb, mut ready, mut hold) =
        (None, None, None, 1024usize, None, false);
    while let Some(a) = args.next() {
        let mut val = || args.next().expect("flag needs a value");
        match a.as_str() {
            "--cgroup" => cgroup = Some(val()),
            "--adj" => adj = Some(val()),
            "--mb" => mb = Some(val().parse::<usize>().expect("--mb")),
            "--step-kb" => step_kb = val().parse().expect("--step-kb"),
            "--ready" => ready = Some(val()),
            "--hold" => hold = true,
            other => {
                eprintln!("oomtrace-hog: unknown argument {other}");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(dir) = cgroup {
        fs::write(format!("{dir}/cgroup.procs"), std::process::id().to_string()).expect("join cgroup");
    }
    if let Some(adj) = adj {
        fs::write("/proc/self/oom_score_adj", adj).expect("set oom_score_adj");
    }
    let limit = mb.map(|m| m << 20);
    let mut held: Vec<Vec<u8>> = Vec::new();
    let mut total = 0usize;
    let step = step_kb << 10;
    while limit.is_none_or(|l| total < l) {
        let mut chunk = vec![0u8; step];
        // Touch every page so it is charged to the cgroup now.
        for i in (0..chunk.len()).step_by(4096) {
            chunk[i] = 1;
        }
        total += chunk.len();
        held.push(std::hint::black_box(chunk));
    }
    if let Some(r) = ready {
        fs::write(r, "ready").expect("write ready file");
    }
    if hold {
        loop {
            thread::sleep(Duration::from_secs(3600));
        }
    }
    ExitCode::SUCCESS
}
