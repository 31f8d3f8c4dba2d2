//! CLI behaviour: help, usage errors (exit 2), privilege errors (exit 1) with the missing
//! capability named, `check`, unwritable --output, and a closed stdout.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use oomtrace_tests::*;

fn oomtrace() -> Command {
    Command::new(bin("oomtrace"))
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("run oomtrace");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_lists_commands_and_exit_codes() {
    let (code, out, _) = run(oomtrace().arg("--help"));
    assert_eq!(code, 0);
    for word in ["run", "check", "Exit codes"] {
        assert!(out.contains(word), "--help lacks {word}:\n{out}");
    }
    let (code, out, _) = run(oomtrace().args(["run", "--help"]));
    assert_eq!(code, 0);
    for flag in [
        "--format",
        "--output",
        "--attach",
        "tp_btf",
        "tracepoint",
        "--ring-size",
    ] {
        assert!(out.contains(flag), "run --help lacks {flag}:\n{out}");
    }
}

#[test]
fn usage_errors_exit_2_with_a_message() {
    for args in [
        vec!["run", "--attach", "bogus"],
        vec!["run", "--format", "xml"],
        vec!["run", "--ring-size", "1000"],
        vec!["run", "--ring-size", "lots"],
        vec!["run", "--no-such-flag"],
        vec!["frobnicate"],
        vec![],
    ] {
        let (code, out, err) = run(oomtrace().args(&args));
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?} wrote to stdout: {out}");
        assert!(!err.is_empty() && !err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn unprivileged_run_names_the_missing_capabilities() {
    skip_unless!(
        is_root(),
        "needs root to drop to an unprivileged user with setpriv"
    );
    skip_unless!(
        std::path::Path::new("/usr/bin/setpriv").exists(),
        "setpriv (util-linux) not installed"
    );
    let bin = bin("oomtrace");
    let (code, out, err) = run(Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--",
        ])
        .arg(&bin)
        .arg("run"));
    assert_eq!(code, 1, "{err}");
    assert!(out.is_empty(), "stdout must stay data-only: {out}");
    assert!(err.contains("CAP_BPF") && err.contains("CAP_PERFMON"), "{err}");
    assert!(err.contains("sudo oomtrace run"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // Only CAP_BPF: the message names just what is missing.
    let (code, _, err) = run(Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=+bpf",
            "--ambient-caps=+bpf",
            "--",
        ])
        .arg(&bin)
        .arg("run"));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("CAP_PERFMON") && !err.contains("CAP_BPF and"),
        "{err}"
    );

    let (code, out, _) = run(Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--",
        ])
        .arg(&bin)
        .arg("check"));
    assert_eq!(code, 1);
    assert!(out.contains("privileges        MISSING"), "{out}");
}

#[test]
fn check_reports_what_the_kernel_offers() {
    skip_unless!(is_root(), "check attaches programs: needs root");
    let (code, out, err) = run(oomtrace().arg("check"));
    assert_eq!(code, 0, "{out}{err}");
    for line in [
        "kernel",
        "privileges        ok",
        "btf",
        "tracefs",
        "memory cgroup",
        "attach fentry",
        "attach kprobe",
        "attach tp_btf",
        "attach tracepoint",
        "run would use",
    ] {
        assert!(out.contains(line), "check lacks '{line}':\n{out}");
    }
    // Whatever it says `run` would use must be one it marked ok.
    let chosen = out
        .lines()
        .find_map(|l| l.strip_prefix("run would use"))
        .unwrap()
        .trim()
        .to_owned();
    assert!(
        out.lines()
            .any(|l| l.starts_with(&format!("attach {chosen}")) && l.ends_with(" ok")),
        "{out}"
    );
    // And no program is left attached: a second check sees the same.
    let (_, again, _) = run(oomtrace().arg("check"));
    assert_eq!(again, out);
}

#[test]
fn unwritable_output_fails_before_attaching() {
    skip_unless!(is_root(), "needs root to get past the privilege check");
    let (code, out, err) = run(oomtrace().args(["run", "--output", "/proc/version/nope.jsonl"]));
    assert_eq!(code, 1, "{err}");
    assert!(out.is_empty());
    assert!(
        err.contains("failed to open --output /proc/version/nope.jsonl"),
        "{err}"
    );
}

#[test]
fn output_file_gets_appended_json_lines() {
    skip_unless!(is_root(), "needs root to attach");
    let dir = std::env::temp_dir().join(format!("oomtrace-out-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("events.jsonl");
    std::fs::write(&path, "{\"previous\":true}\n").unwrap();
    let mut child = oomtrace()
        .args(["run", "--output"])
        .arg(&path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // With --output the start line in the file is the only sign that it is attached.
    let ok = wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&path)
            .unwrap()
            .contains("\"type\":\"start\"")
    });
    // SAFETY: plain kill(2).
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(ok, "no start record in {}: {text}", path.display());
    assert!(status.success(), "SIGTERM should be a clean stop: {status:?}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "{\"previous\":true}", "must append, not truncate");
    assert!(lines[1].contains("\"type\":\"start\""));
    assert!(lines.last().unwrap().contains("\"type\":\"stop\""));
    let mut stdout = String::new();
    use std::io::Read;
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    assert!(stdout.is_empty(), "with --output, stdout stays empty: {stdout}");
}

#[test]
fn closed_stdout_is_a_clean_exit() {
    skip_unless!(is_root(), "needs root to attach");
    // `oomtrace run | head -1`: the reader leaves after the start line; the next write (the stop
    // record on SIGINT) hits a closed pipe, which must end oomtrace with 0 and no panic.
    let mut child = oomtrace()
        .arg("run")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap(); // reader dropped here
    assert!(first.contains("\"type\":\"start\""), "{first}");
    // SAFETY: plain kill(2).
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("oomtrace: error"),
        "{err}"
    );
}
