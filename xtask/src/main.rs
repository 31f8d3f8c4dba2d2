//! Developer tasks for oomtrace: `cargo xtask build-ebpf` and `cargo xtask bench`.
//!
//! Exit codes: 0 success, 1 failure to run (missing prerequisites, a build or a measurement that
//! could not be made), 2 usage error. A benchmark that misses a target still exits 0.

mod bench;
mod ebpf;
mod memcg;
mod stats;
mod sys;
mod tracer;

use std::{
    fs,
    path::{Path, PathBuf},
    process::ExitCode,
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
    /// Benchmark oomtrace with real OOM kills in a small memory cgroup (needs root).
    ///
    /// Prints a Markdown table on stdout and writes the raw numbers as JSON.
    Bench {
        /// OOM kills per run.
        #[arg(long, value_name = "N", default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..))]
        kills: u32,
        /// Runs, each with a fresh oomtrace and a fresh cgroup.
        #[arg(long, value_name = "R", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
        runs: u32,
        /// Where to write the raw numbers (default: target/bench/bench.json in the workspace).
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
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
        Command::Bench { kills, runs, json } => bench::run(
            &workspace,
            &bench::Options {
                kills,
                runs,
                json: json.unwrap_or_else(|| workspace.join("target").join("bench").join("bench.json")),
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
