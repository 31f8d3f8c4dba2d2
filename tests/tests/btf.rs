//! `--btf PATH`: the running kernel's BTF from a file (for kernels built without
//! CONFIG_DEBUG_INFO_BTF), checked against the running kernel so that a wrong file is a clear
//! error (exit 1, nothing on stdout), never wrong offsets.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use oomtrace_tests::*;

fn oomtrace(args: &[&str]) -> std::process::Output {
    Command::new(bin("oomtrace"))
        .args(args)
        .output()
        .expect("run oomtrace")
}

fn scratch() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("btf");
    fs::create_dir_all(&d).expect("scratch dir");
    d
}

/// Debian 12's 6.1 cloud kernel, pinned like the VM tests' (xtask/src/vm/kernel.rs): another
/// kernel's real BTF, for the mismatch.
const OTHER_KERNEL: (&str, &str, &str) = (
    "linux-image-6.1.0-56-cloud-amd64",
    "6.1.192-2",
    "e7d02b943971edcb8790e256c02cfab3bca6c3d37c1bf25392a57c71300615ee",
);

/// The .BTF section of another kernel's vmlinux, downloaded and extracted once (cached in the
/// target dir). Err with the reason when it cannot be had here.
fn other_kernels_btf() -> Result<PathBuf, String> {
    let dir = scratch();
    let out = dir.join("debian-6.1.btf");
    if out.exists() {
        return Ok(out);
    }
    let run = |cmd: &mut Command| -> Result<Vec<u8>, String> {
        let o = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
        if !o.status.success() {
            return Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&o.stderr)));
        }
        Ok(o.stdout)
    };
    let (pkg, version, sha) = OTHER_KERNEL;
    let deb = dir.join(format!("{pkg}_{version}.deb"));
    if !deb.exists() {
        run(Command::new("apt-get")
            .args(["-q", "-o", "APT::Sandbox::User=root", "download"])
            .arg(format!("{pkg}={version}"))
            .current_dir(&dir))?;
        let got = fs::read_dir(&dir)
            .map_err(|e| e.to_string())?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .ok_or("apt-get download wrote no .deb")?;
        fs::rename(got, &deb).map_err(|e| e.to_string())?;
    }
    let sum = run(Command::new("sha256sum").arg(&deb))?;
    if !String::from_utf8_lossy(&sum).starts_with(sha) {
        return Err(format!("{} does not have the pinned sha256 {sha}", deb.display()));
    }
    let x = dir.join("x");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x))?;
    let vmlinuz = x.join(format!("boot/vmlinuz-{}", pkg.trim_start_matches("linux-image-")));
    let image = fs::read(&vmlinuz).map_err(|e| format!("{}: {e}", vmlinuz.display()))?;
    // The bzImage carries an lz4 frame (legacy magic 02 21 4c 18) with vmlinux inside.
    let at = image
        .windows(4)
        .position(|w| w == [0x02, 0x21, 0x4c, 0x18])
        .ok_or("no lz4 payload in the bzImage")?;
    let payload = dir.join("payload.lz4");
    fs::write(&payload, &image[at..]).map_err(|e| e.to_string())?;
    let vmlinux = dir.join("vmlinux-6.1");
    // lz4 reports trailing garbage after the frame: the output is complete regardless.
    let _ = Command::new("lz4")
        .args(["-dcfq"])
        .arg(&payload)
        .stdout(fs::File::create(&vmlinux).map_err(|e| e.to_string())?)
        .status();
    run(Command::new("objcopy")
        .args(["-O", "binary", "--only-section=.BTF"])
        .arg(&vmlinux)
        .arg(&out))?;
    let _ = fs::remove_file(&vmlinux);
    let _ = fs::remove_dir_all(&x);
    if fs::metadata(&out).map(|m| m.len()).unwrap_or(0) < 1 << 20 {
        let _ = fs::remove_file(&out);
        return Err("the extracted .BTF section is empty".into());
    }
    Ok(out)
}

#[test]
fn the_running_kernels_own_btf_file_is_accepted() {
    skip_unless!(
        Path::new("/sys/kernel/btf/vmlinux").exists(),
        "this kernel has no /sys/kernel/btf/vmlinux to copy"
    );
    skip_unless!(is_root(), "oomtrace check loads programs: needs root");
    let good = scratch().join("running.btf");
    fs::copy("/sys/kernel/btf/vmlinux", &good).expect("copy the kernel's BTF");
    let out = oomtrace(&["check", "--btf", good.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("btf "))
        .expect("a btf line");
    assert!(
        line.contains("ok") && line.contains(good.to_str().unwrap()),
        "{line}"
    );
}

#[test]
fn another_kernels_btf_is_a_clear_error() {
    let bad = match other_kernels_btf() {
        Ok(p) => p,
        Err(why) => {
            skip_note(
                module_path!(),
                line!(),
                &format!("no other kernel's BTF to test with: {why}"),
            );
            return;
        }
    };
    for cmd in ["check", "run"] {
        let out = oomtrace(&[cmd, "--btf", bad.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {stderr}");
        assert!(
            out.stdout.is_empty() || cmd == "check",
            "{cmd} wrote data: {:?}",
            out.stdout
        );
        assert!(
            stderr.contains("does not describe the running kernel") && stderr.contains("/proc/kallsyms"),
            "{cmd}: {stderr}"
        );
    }
}

#[test]
fn a_file_that_is_not_btf_is_a_clear_error() {
    let junk = scratch().join("junk.btf");
    fs::write(&junk, b"this is not BTF at all").unwrap();
    for cmd in ["check", "run"] {
        let out = oomtrace(&[cmd, "--btf", junk.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {stderr}");
        assert!(stderr.contains("is not usable BTF"), "{cmd}: {stderr}");
    }
    let out = oomtrace(&["run", "--btf", "/nonexistent/vmlinux"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("failed to read /nonexistent/vmlinux"));
}
