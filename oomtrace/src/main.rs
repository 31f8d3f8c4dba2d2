//! oomtrace: an eBPF tracer for Linux OOM kills. See README.md and docs/events.md.
//!
//! Exit codes: 0 clean stop (signal, or the reader closed stdout), 1 runtime or setup failure,
//! 2 usage error.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

use oomtrace::{
    check,
    kernel::{self, attach::AttachMode, btf::BtfSource},
    run,
    sink::Format,
};

/// Trace Linux OOM kills with eBPF: who was killed, who triggered it, which cgroup limit fired.
///
/// Events go to stdout as JSON Lines (one object per line); logs go to stderr.
/// Exit codes: 0 clean stop, 1 runtime or setup failure, 2 usage error.
#[derive(Debug, Parser)]
#[command(name = "oomtrace", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Stream OOM kills until SIGINT/SIGTERM (needs root, or CAP_BPF + CAP_PERFMON).
    Run(RunArgs),
    /// Report what this kernel offers, feature by feature, and which attach mode `run` would use.
    Check(CheckArgs),
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// The running kernel's BTF, for kernels built without CONFIG_DEBUG_INFO_BTF (e.g. a BTFHub
    /// file for this exact kernel release). Checked against the running kernel.
    #[arg(long, value_name = "PATH")]
    btf: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,
    /// Append to this file instead of writing to stdout.
    #[arg(long, short, value_name = "PATH")]
    output: Option<PathBuf>,
    /// How to attach to the kernel (auto picks the best that works).
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    attach: AttachMode,
    /// Kernel ring buffer size in bytes: a power of two, 4096..=1073741824. The default holds ~380
    /// oom_kill records between two reads.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 18, value_parser = parse_ring_size)]
    ring_size: u32,
    /// Host name put in every record (default: this machine's; on Kubernetes pass the node name).
    #[arg(long, value_name = "NAME")]
    host: Option<String>,
    /// Which signals get `signal` records and `exit` verdicts: SIGKILL only, or every signal whose
    /// default action is fatal.
    #[arg(long, value_enum, default_value_t = run::Signals::Kill)]
    signals: run::Signals,
    /// Only report what concerns this process (as victim, trigger, signal target or sender).
    #[arg(long, value_name = "PID", value_parser = clap::value_parser!(u32).range(1..))]
    pid: Option<u32>,
    /// Only report what concerns this cgroup or its descendants (path as /proc/<pid>/cgroup prints it).
    #[arg(long, value_name = "PATH", value_parser = parse_cgroup_path)]
    cgroup: Option<String>,
    /// Do not capture or symbolize the trigger's user stack (privacy, cost).
    #[arg(long)]
    no_user_stacks: bool,
    /// The running kernel's BTF, for kernels built without CONFIG_DEBUG_INFO_BTF (e.g. a BTFHub
    /// file for this exact kernel release). Checked against the running kernel.
    #[arg(long, value_name = "PATH")]
    btf: Option<PathBuf>,
    /// Serve Prometheus metrics (GET /metrics) on this address, e.g. 127.0.0.1:9469 (off by
    /// default).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// The container runtime's CRI socket, to name pods and containers (default: the first of
    /// /run/containerd/containerd.sock, /run/crio/crio.sock, ... that exists).
    #[arg(long, value_name = "PATH")]
    cri_socket: Option<PathBuf>,
}

fn btf_source(path: Option<PathBuf>) -> BtfSource {
    path.map_or(BtfSource::Kernel, BtfSource::File)
}

fn parse_cgroup_path(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err(format!(
            "`{s}` is not a cgroup path: it must start with / (as in /proc/<pid>/cgroup)"
        ));
    }
    Ok(if s.len() > 1 {
        s.trim_end_matches('/').to_owned()
    } else {
        s.to_owned()
    })
}

fn parse_ring_size(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|_| format!("`{s}` is not a number of bytes"))?;
    if !(4096..=1 << 30).contains(&n) || !n.is_power_of_two() {
        return Err(format!("{n} is not a power of two between 4096 and 1073741824"));
    }
    Ok(n)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp(None)
        .format_target(false)
        .init();
    // Before any thread exists (see tracefs::ensure_mounted).
    if matches!(cli.command, Command::Run(_) | Command::Check(_)) {
        match kernel::tracefs::ensure_mounted() {
            Ok(kernel::tracefs::Mounted::Private) => {
                log::info!(
                    "tracefs was not mounted: mounted it in oomtrace's own mount namespace (the host's is unchanged)"
                )
            }
            Ok(kernel::tracefs::Mounted::Already) => {}
            Err(e) => log::debug!("tracefs stays unmounted ({e:#}): classic tracepoints cannot attach"),
        }
    }
    let result = match cli.command {
        Command::Check(a) => {
            check::run(&btf_source(a.btf)).map(|ok| if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Run(a) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| {
                rt.block_on(run::run(run::Options {
                    format: a.format,
                    output: a.output,
                    attach: a.attach,
                    ring_size: a.ring_size,
                    host: a.host,
                    signals: a.signals,
                    user_stacks: !a.no_user_stacks,
                    btf: btf_source(a.btf),
                    metrics: a.metrics,
                    cri_socket: a.cri_socket,
                    filter: run::Filter {
                        pid: a.pid,
                        cgroup: a.cgroup,
                    },
                }))
            })
            .map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("oomtrace: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
