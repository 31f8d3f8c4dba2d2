//! Building the eBPF object. Shared by `cargo xtask build-ebpf` and oomtrace/build.rs (which
//! includes this file), so both produce the same object the same way.
//!
//! The programs need a nightly toolchain (`-Z build-std=core` for `bpfel-unknown-none`) whose LLVM
//! matches the one bpf-linker was built against (Debian's llvm-22): see scripts/bootstrap.sh.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// Must match oomtrace-ebpf/rust-toolchain.toml and scripts/bootstrap.sh.
pub const NIGHTLY: &str = "nightly-2026-07-01";
pub const TARGET: &str = "bpfel-unknown-none";

/// Builds oomtrace-ebpf and returns the path of the object.
pub fn build(workspace: &Path, target_dir: &Path) -> Result<PathBuf, String> {
    let crate_dir = workspace.join("oomtrace-ebpf");
    // As aya-build sets them: BTF in the object (`--btf`), debuginfo for it, and the arch cfg
    // aya-ebpf uses to pick its bindings.
    let rustflags = [
        format!("--cfg=bpf_target_arch=\"{}\"", std::env::consts::ARCH),
        "-Cdebuginfo=2".to_owned(),
        "-Clink-arg=--btf".to_owned(),
    ]
    .join("\x1f");
    let mut cmd = Command::new("rustup");
    cmd.current_dir(&crate_dir)
        .args([
            "run",
            NIGHTLY,
            "cargo",
            "build",
            "--release",
            "-Z",
            "build-std=core",
            "--target",
            TARGET,
        ])
        .arg("--target-dir")
        .arg(target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags);
    // An outer cargo (build.rs, xtask) leaks its own toolchain and flags into the environment.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        let leak = k.starts_with("CARGO_") && k != "CARGO_HOME"
            || matches!(
                k.as_str(),
                "RUSTC"
                    | "RUSTDOC"
                    | "RUSTC_WRAPPER"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "RUSTFLAGS"
                    | "RUSTUP_TOOLCHAIN"
                    | "CARGO"
            );
        if leak && k != "CARGO_ENCODED_RUSTFLAGS" {
            cmd.env_remove(&k);
        }
    }
    let status = cmd
        .status()
        .map_err(|e| format!("failed to run rustup ({e}): install rustup, then run scripts/bootstrap.sh"))?;
    if !status.success() {
        return Err(format!(
            "building the eBPF programs failed ({status}). Prerequisites: rustup toolchain {NIGHTLY} with rust-src, \
             and bpf-linker built against Debian's llvm-22 — scripts/bootstrap.sh installs all of them"
        ));
    }
    Ok(target_dir.join(TARGET).join("release").join("oomtrace-ebpf"))
}
