//! `--output FILE` under Debian's real logrotate (issue 14): the file is moved, logrotate's
//! `postrotate` sends SIGHUP, oomtrace reopens the path and goes on — nothing lost or doubled
//! across the reopen, `seq` running on from the old file into the new one, and a `stop` record
//! at the end.

use std::{
    fs,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use oomtrace_tests::*;
use serde_json::Value;

fn lines(path: &Path) -> Vec<Value> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

/// Waits until `path` holds a line matching `pred`.
fn wait_line(path: &Path, what: &str, pred: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !lines(path).iter().any(&pred) {
        assert!(Instant::now() < deadline, "no {what} in {}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `n` processes killed with SIGKILL: each gets a `signal` and an `exit` line.
fn kill_sleepers(n: usize) -> Vec<u32> {
    let mut kids: Vec<Child> = (0..n)
        .map(|_| Command::new("sleep").arg("600").spawn().expect("sleep"))
        .collect();
    let pids = kids.iter().map(Child::id).collect();
    for k in &mut kids {
        k.kill().expect("kill -9");
        let _ = k.wait();
    }
    pids
}

fn exited(l: &[Value], pid: u32) -> bool {
    l.iter()
        .any(|v| v["type"] == "exit" && v["process"]["pid"] == pid)
}

#[test]
fn logrotate_moves_the_file_and_nothing_is_lost_or_doubled() {
    require_root_memcg!();
    skip_unless!(
        Path::new("/usr/sbin/logrotate").exists(),
        "Debian's logrotate is not installed (scripts/bootstrap.sh installs it)"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("oomtrace.jsonl");
    let err_path = dir.path().join("oomtrace.err");
    let mut oomtrace = Command::new(bin("oomtrace"))
        .args(["run", "--output"])
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("oomtrace");
    wait_line(&out, "start line", |v| v["type"] == "start");
    let before = kill_sleepers(3);
    for &p in &before {
        wait_line(&out, "exit line", |v| {
            v["type"] == "exit" && v["process"]["pid"] == p
        });
    }

    let conf = dir.path().join("logrotate.conf");
    fs::write(
        &conf,
        format!(
            "{} {{\n  rotate 3\n  missingok\n  nocompress\n  create 0640 root root\n  postrotate\n    kill -HUP {}\n  endscript\n}}\n",
            out.display(),
            oomtrace.id()
        ),
    )
    .unwrap();
    let st = Command::new("/usr/sbin/logrotate")
        .arg("-f")
        .arg("-s")
        .arg(dir.path().join("logrotate.state"))
        .arg(&conf)
        .output()
        .expect("logrotate");
    assert!(
        st.status.success(),
        "logrotate: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let rotated = dir.path().join("oomtrace.jsonl.1");
    assert!(rotated.exists(), "logrotate did not rotate");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fs::read_to_string(&err_path)
        .unwrap_or_default()
        .contains("SIGHUP: reopened")
    {
        assert!(
            Instant::now() < deadline,
            "no reopen on stderr: {}",
            fs::read_to_string(&err_path).unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        oomtrace.try_wait().unwrap(),
        None,
        "SIGHUP must not stop oomtrace"
    );

    let after = kill_sleepers(3);
    for &p in &after {
        wait_line(&out, "exit line after the rotation", |v| {
            v["type"] == "exit" && v["process"]["pid"] == p
        });
    }
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(oomtrace.id() as i32, libc::SIGTERM) };
    let status = oomtrace.wait().unwrap();
    assert!(
        status.success(),
        "{status:?}: {}",
        fs::read_to_string(&err_path).unwrap()
    );

    let old = lines(&rotated);
    let new = lines(&out);
    assert!(!old.is_empty() && !new.is_empty());
    let all: Vec<Value> = old.iter().chain(&new).cloned().collect();
    // One run, numbered without a gap or a repeat across the two files.
    for (i, l) in all.iter().enumerate() {
        assert_eq!(l["seq"], i as u64, "seq across the rotation: {l}");
    }
    assert_eq!(all[0]["type"], "start");
    assert_eq!(all.last().unwrap()["type"], "stop");
    check_schema(&all);
    for &p in &before {
        assert!(exited(&old, p) && !exited(&new, p), "pid {p} before the rotation");
    }
    for &p in &after {
        assert!(exited(&new, p) && !exited(&old, p), "pid {p} after the rotation");
    }
}

/// SIGHUP with stdout as the output: said on stderr, the run goes on.
#[test]
fn sighup_on_stdout_is_harmless() {
    require_root_memcg!();
    let t = Tracer::start_capturing_stderr(&[]);
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(t.pid(), libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !t.stderr().contains("nothing to reopen") {
        assert!(Instant::now() < deadline, "no word of the SIGHUP: {}", t.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, lines) = t.stop();
    assert!(status.success(), "{status:?}");
    assert_eq!(lines.last().unwrap()["type"], "stop");
}
