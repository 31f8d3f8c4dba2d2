//! Builds the eBPF object and puts it in OUT_DIR, where src/loader.rs embeds it.
//! Set OOMTRACE_BPF_OBJECT=/path/to/object to embed a prebuilt one instead.

#[path = "../xtask/src/ebpf.rs"]
mod ebpf;

use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR")).join("oomtrace.bpf.o");
    println!("cargo:rerun-if-env-changed=OOMTRACE_BPF_OBJECT");
    if let Some(obj) = env::var_os("OOMTRACE_BPF_OBJECT") {
        println!("cargo:rerun-if-changed={}", PathBuf::from(&obj).display());
        fs::copy(&obj, &out).expect("copy OOMTRACE_BPF_OBJECT");
        return;
    }
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let workspace = manifest.parent().expect("workspace").to_owned();
    for p in [
        "oomtrace-ebpf/src",
        "oomtrace-ebpf/Cargo.toml",
        "oomtrace-common/src",
        "xtask/src/ebpf.rs",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(p).display());
    }
    let target_dir = workspace.join("target").join("bpf");
    match ebpf::build(&workspace, &target_dir) {
        Ok(obj) => {
            fs::copy(&obj, &out).expect("copy the eBPF object into OUT_DIR");
        }
        Err(e) => panic!("{e}"),
    }
}
