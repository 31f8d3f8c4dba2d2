//! Builds what the benchmark runs: oomtrace and its test hog (release), the kmsg scraper, and the C
//! floor (bench/oomfloor*.c, with Debian's clang, libbpf-dev and bpftool). A contender that cannot
//! be built or found is not an error: the report says why it did not run.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use super::kernel;

pub struct Binaries {
    pub oomtrace: PathBuf,
    pub hog: PathBuf,
    /// The kmsg scraper, or why there is none.
    pub kmsg: Result<PathBuf, String>,
    /// The C floor, or why there is none.
    pub floor: Result<PathBuf, String>,
    /// Debian's bpftrace, or why there is none.
    pub bpftrace: Result<PathBuf, String>,
    /// bench/oomkill.bt.
    pub bpftrace_script: PathBuf,
}

const INSTALL_HINT: &str = "apt-get install bpftrace clang libbpf-dev bpftool, or run scripts/bootstrap.sh";

pub fn build(workspace: &Path, out_dir: &Path) -> Result<Binaries> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = workspace.join("target");
    eprintln!("bench: building oomtrace, oomtrace-hog and oomtrace-bench-kmsg (release)");
    let cargo_build = |args: &[&str]| -> Result<()> {
        let status = Command::new(&cargo)
            .current_dir(workspace)
            .args(["build", "--release", "--target-dir"])
            .arg(&target_dir)
            .args(args)
            .status()
            .with_context(|| format!("failed to run {}", Path::new(&cargo).display()))?;
        if !status.success() {
            bail!(
                "failed to build {}: cargo build exited with {status}",
                args.join(" ")
            );
        }
        Ok(())
    };
    cargo_build(&["-p", "oomtrace", "-p", "oomtrace-tests"])?;
    let release = target_dir.join("release");
    let oomtrace = release.join("oomtrace");
    let hog = release.join("oomtrace-hog");
    for bin in [&oomtrace, &hog] {
        if !bin.is_file() {
            bail!("failed to find {} after the build", bin.display());
        }
    }
    let kmsg = cargo_build(&["-p", "xtask", "--bin", "oomtrace-bench-kmsg"])
        .map(|()| release.join("oomtrace-bench-kmsg"))
        .map_err(|e| format!("{e:#}"));

    eprintln!("bench: building the C floor (bench/oomfloor.c) against this kernel's BTF");
    let floor = build_floor(&workspace.join("bench"), &out_dir.join("floor"));
    if let Err(e) = &floor {
        eprintln!("bench: warning: no C floor: {e}");
    }
    let bpftrace =
        kernel::which("bpftrace").ok_or_else(|| format!("bpftrace not found in PATH ({INSTALL_HINT})"));
    Ok(Binaries {
        oomtrace,
        hog,
        kmsg,
        floor,
        bpftrace,
        bpftrace_script: workspace.join("bench").join("oomkill.bt"),
    })
}

/// bpftool btf dump -> vmlinux.h; clang -target bpf; bpftool gen skeleton; cc -lbpf.
fn build_floor(src: &Path, out: &Path) -> Result<PathBuf, String> {
    for tool in ["clang", "bpftool", "cc"] {
        if kernel::which(tool).is_none() {
            return Err(format!("{tool} not found in PATH ({INSTALL_HINT})"));
        }
    }
    if !Path::new("/usr/include/bpf/libbpf.h").is_file() {
        return Err(format!("libbpf headers not found ({INSTALL_HINT})"));
    }
    fs::create_dir_all(out).map_err(|e| format!("failed to create {}: {e}", out.display()))?;
    let vmlinux_h = run_capture(Command::new("bpftool").args([
        "btf",
        "dump",
        "file",
        "/sys/kernel/btf/vmlinux",
        "format",
        "c",
    ]))?;
    fs::write(out.join("vmlinux.h"), vmlinux_h).map_err(|e| format!("failed to write vmlinux.h: {e}"))?;
    let arch = match std::env::consts::ARCH {
        "x86_64" => "x86",
        "aarch64" => "arm64",
        other => other,
    };
    let bpf_obj = out.join("oomfloor.bpf.o");
    run_capture(
        Command::new("clang")
            .args(["-g", "-O2", "-Wall", "-target", "bpf"])
            .arg(format!("-D__TARGET_ARCH_{arch}"))
            .arg("-I")
            .arg(out)
            .arg("-I")
            .arg(src)
            .arg("-c")
            .arg(src.join("oomfloor.bpf.c"))
            .arg("-o")
            .arg(&bpf_obj),
    )?;
    let skel = run_capture(
        Command::new("bpftool")
            .args(["gen", "skeleton"])
            .arg(&bpf_obj)
            .args(["name", "oomfloor_bpf"]),
    )?;
    fs::write(out.join("oomfloor.skel.h"), skel)
        .map_err(|e| format!("failed to write oomfloor.skel.h: {e}"))?;
    let bin = out.join("oomfloor");
    run_capture(
        Command::new("cc")
            .args(["-O2", "-Wall", "-Wextra"])
            .arg("-I")
            .arg(out)
            .arg("-I")
            .arg(src)
            .arg(src.join("oomfloor.c"))
            .arg("-lbpf")
            .arg("-o")
            .arg(&bin),
    )?;
    Ok(bin)
}

/// Runs a build step; its stdout on success, its stderr in the error.
fn run_capture(cmd: &mut Command) -> Result<Vec<u8>, String> {
    let name = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().map_err(|e| format!("failed to run {name}: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(5).collect();
        return Err(format!(
            "{name} exited with {}: {}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ));
    }
    Ok(out.stdout)
}
