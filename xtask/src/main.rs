//! Developer tasks for oomtrace: `cargo xtask build-ebpf`, `cargo xtask bench` and
//! `cargo xtask vm-test`.
//!
//! Exit codes: 0 success, 1 failure to run (missing prerequisites, a build or a measurement that
//! could not be made), 2 usage error. A benchmark that misses a target still exits 0; a VM test
//! that fails (or a VM that hangs or crashes) exits 1.

mod bench;
mod ebpf;
mod memcg;
mod stats;
mod sys;
mod tracer;
mod vm;

use std::{
    fs,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "Developer tasks for oomtrace")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the eBPF object (needs the pinned nightly and bpf-linker: scripts/bootstrap.sh).
    BuildEbpf {
        /// Where to put the object (default: target/bpf/oomtrace.bpf.o in the workspace).
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
    },
    /// Benchmark oomtrace against bpftrace, kmsg scraping and a C libbpf floor, with real OOM kills
    /// in a small memory cgroup (needs root).
    ///
    /// Each run measures every contender alone (start-up, then idle RSS and CPU), every contender
    /// alone on the hook for a storm (eBPF cost, latency), then each storm size with all contenders
    /// attached at once (delivery, latency). Prints a Markdown table on stdout and writes the raw
    /// numbers as JSON. The defaults take about 40 minutes; --quick about 5.
    Bench {
        /// Runs; every figure is the median over them [default: 5; 3 with --quick].
        #[arg(long, value_name = "R", value_parser = clap::value_parser!(u32).range(1..))]
        runs: Option<u32>,
        /// Sizes of the storms all contenders watch at once (OOM kills), comma-separated; each run
        /// makes one storm of each size.
        #[arg(
            long,
            value_name = "N,...",
            value_delimiter = ',',
            default_values_t = [300, 3000],
            value_parser = clap::value_parser!(u32).range(1..)
        )]
        storms: Vec<u32>,
        /// OOM kills of the storm each contender watches alone on the hook (eBPF cost, latency).
        #[arg(long, value_name = "N", default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..))]
        solo_kills: u32,
        /// Seconds each contender idles alone for the idle RSS and CPU figures.
        #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
        idle_secs: u64,
        /// oomtrace start-ups per run (exec → `start` line; the figure is their median).
        #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
        startups: u32,
        /// A short run (about 5 minutes after the build) that still gives every per-kill figure and
        /// target: 3 runs, one shared storm of 300 kills, solo storms of 100, 5 s idle, 10
        /// start-ups per run, and without the floor variants that only break oomtrace's cost down
        /// (overrides --storms, --solo-kills, --idle-secs and --startups).
        #[arg(long)]
        quick: bool,
        /// Where to write the raw numbers (default: target/bench/bench.json in the workspace).
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
    },
    /// Run the real-OOM tests inside qemu on Debian's 5.10, 6.1 and 6.12 kernels, once per attach mode.
    ///
    /// Fetches the pinned kernel packages (cached in target/vm), builds static binaries, boots
    /// each kernel once (TCG, two at a time), and prints a kernel × mode × test matrix in Markdown on stdout.
    /// Needs qemu-system-x86, busybox-static, zstd, lz4 and the x86_64-unknown-linux-musl Rust
    /// target (scripts/bootstrap.sh installs them). Exits 1 on any failed test, hung or crashed VM.
    VmTest {
        /// Kernel to boot.
        #[arg(long, value_name = "KERNEL", default_value = "all", value_parser = vm::KERNEL_NAMES)]
        kernel: String,
        /// Attach mode to test.
        #[arg(
            long,
            value_name = "MODE",
            default_value = "all",
            value_parser = ["fentry", "kprobe", "tp_btf", "tracepoint", "all"]
        )]
        attach: String,
        /// After the tests, keep the VM with a shell on the console (exit it to power off).
        #[arg(long)]
        keep: bool,
        /// Only tests whose name contains TEXT.
        #[arg(long, value_name = "TEXT")]
        filter: Option<String>,
        /// Seconds one boot (all tests of one kernel) may take before the VM is killed.
        #[arg(long, value_name = "SECS", default_value_t = 1500, value_parser = clap::value_parser!(u64).range(1..))]
        boot_timeout: u64,
        /// Seconds one test may take inside the VM before it is killed.
        #[arg(long, value_name = "SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
        test_timeout: u64,
    },
}

/// The workspace root (xtask sits one level below it).
fn workspace() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_owned()
}

fn build_ebpf(workspace: &Path, out: Option<PathBuf>) -> Result<()> {
    let target_dir = workspace.join("target").join("bpf");
    let built = ebpf::build(workspace, &target_dir)
        .map_err(anyhow::Error::msg)
        .context("failed to build the eBPF object")?;
    let out = out.unwrap_or_else(|| target_dir.join("oomtrace.bpf.o"));
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)
            .with_context(|| format!("failed to create directory {}", parent.display()))?;
    }
    fs::copy(&built, &out)
        .with_context(|| format!("failed to copy {} to {}", built.display(), out.display()))?;
    let size = fs::metadata(&out)
        .with_context(|| format!("failed to stat {}", out.display()))?
        .len();
    eprintln!("{} ({size} bytes)", out.display());
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let workspace = workspace();
    let result = match cli.command {
        Command::BuildEbpf { out } => build_ebpf(&workspace, out),
        Command::Bench {
            runs,
            storms,
            solo_kills,
            idle_secs,
            startups,
            quick,
            json,
        } => bench::run(
            &workspace,
            &bench::Options {
                runs: runs.unwrap_or(if quick { 3 } else { 5 }),
                storms: if quick { vec![300] } else { storms },
                solo_kills: if quick { 100 } else { solo_kills },
                idle: Duration::from_secs(if quick { 5 } else { idle_secs }),
                startups: if quick { 10 } else { startups },
                breakdown: !quick,
                command: std::iter::once("cargo xtask".to_owned())
                    .chain(std::env::args().skip(1))
                    .collect::<Vec<_>>()
                    .join(" "),
                json: json.unwrap_or_else(|| workspace.join("target").join("bench").join("bench.json")),
            },
        ),
        Command::VmTest {
            kernel,
            attach,
            keep,
            filter,
            boot_timeout,
            test_timeout,
        } => vm::run(
            &workspace,
            &vm::Options {
                kernel,
                attach,
                keep,
                boot_timeout: Duration::from_secs(boot_timeout),
                test_timeout: Duration::from_secs(test_timeout),
                filter,
            },
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
