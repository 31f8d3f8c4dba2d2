//! The machine as a user has it (issue 11): tracefs is not mounted on a fresh box nor in most
//! containers. `oomtrace run` must still give every record — gfp/order, exit verdicts, memcg OOMs —
//! and leave the host's mounts as they were. Nothing here mounts tracefs: where the box has it
//! mounted already, the tests say so and check what they can.

use std::{fs, os::unix::process::ExitStatusExt, process::Command, time::Duration};

use oomtrace_tests::*;
use serde_json::Value;

/// The tracefs mounts of our own (the host's) mount namespace.
fn tracefs_mounts() -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .expect("read mountinfo")
        .lines()
        .filter(|l| l.split(" - ").nth(1).is_some_and(|t| t.starts_with("tracefs ")))
        .map(str::to_owned)
        .collect()
}

fn feature<'a>(start: &'a Value, name: &str) -> &'a Value {
    start["features"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["name"] == name))
        .unwrap_or_else(|| panic!("no feature {name} in {start}"))
}

/// One real memcg OOM kill and one `kill -9`, seen with every detail, in `mode` (None: auto).
fn records_without_tracefs(mode: Option<&str>) {
    require_root_memcg!();
    let _lock = kill_lock();
    let before = tracefs_mounts();
    if !before.is_empty() {
        skip_note(
            module_path!(),
            line!(),
            &"tracefs is mounted on this box (not fresh): checking the records and that oomtrace leaves mounts alone",
        );
    }
    let cg = TestCgroup::new("oomtrace-fresh", 32 * MIB).expect("cgroup");
    let args: Vec<&str> = mode.map_or_else(Vec::new, |m| vec!["--attach", m]);
    let mut t = Tracer::start(&args);
    let start = t.seen[0].clone();
    for name in [
        "oom_kill",
        "allocation_gfp_order",
        "signals",
        "exit_verdicts",
        "memcg_oom",
        "oom_reaper",
    ] {
        assert_eq!(
            feature(&start, name)["on"],
            true,
            "{name} off: {}",
            feature(&start, name)
        );
    }
    let hog = spawn_hog(&["--cgroup", &cg.dir.to_string_lossy()]);
    let hog_pid = hog.id();
    let mut hog = hog;
    assert_eq!(hog.wait().unwrap().signal(), Some(9));
    let mut sleeper = Command::new("sleep").arg("60").spawn().expect("sleep");
    let sleeper_pid = sleeper.id();
    sleeper.kill().expect("kill -9");
    let _ = sleeper.wait();
    for pid in [hog_pid, sleeper_pid] {
        t.wait_for(Duration::from_secs(10), |v| {
            v["type"] == "exit" && v["process"]["pid"] == pid
        })
        .unwrap_or_else(|| panic!("no exit record for pid {pid}"));
    }
    let (status, lines) = t.stop();
    assert!(status.success());
    check_schema(&lines);
    let kill = lines
        .iter()
        .find(|v| v["type"] == "oom_kill" && v["victim"]["pid"] == hog_pid)
        .expect("the hog's oom_kill");
    let a = &kill["allocation"];
    assert!(a["gfp_mask"].as_str().is_some_and(|g| g.starts_with("0x")), "{a}");
    assert_eq!(a["order"], 0, "{a}");
    let verdict = |pid: u32| {
        lines
            .iter()
            .find(|v| v["type"] == "exit" && v["process"]["pid"] == pid)
            .map(|v| v["verdict"].clone())
    };
    assert_eq!(verdict(hog_pid), Some("kernel_oom".into()));
    assert_eq!(verdict(sleeper_pid), Some("process".into()));
    assert_eq!(cg.oom_kills(), 1);
    assert_eq!(
        tracefs_mounts(),
        before,
        "oomtrace changed the host's tracefs mounts"
    );
}

/// Auto mode on a kernel with BTF: every hook is tp_btf, which needs no tracefs.
#[test]
fn every_record_without_tracefs_in_auto_mode() {
    records_without_tracefs(attach_under_test().as_deref());
}

/// Classic tracepoints need tracefs: oomtrace mounts it in a mount namespace of its own.
#[test]
fn classic_tracepoints_mount_tracefs_privately() {
    if attach_under_test().is_some_and(|m| m != "tracepoint") {
        skip_note(module_path!(), line!(), &"runs in the tracepoint pass only");
        return;
    }
    records_without_tracefs(Some("tracepoint"));
}

#[test]
fn start_reports_tp_btf_hooks_where_the_kernel_has_btf() {
    require_root_memcg!();
    skip_unless!(
        std::path::Path::new("/sys/kernel/btf/vmlinux").exists(),
        "no kernel BTF: the hooks are classic tracepoints here"
    );
    if attach_under_test().is_some_and(|m| m == "tracepoint") {
        skip_note(module_path!(), line!(), &"--attach tracepoint pass");
        return;
    }
    let t = Tracer::start(&[]);
    let attach = t.seen[0]["attach"].clone();
    let _ = t.stop();
    for hook in ["signal_generate", "process_exit", "oom_reaper"] {
        assert_eq!(attach[hook], "tp_btf", "{hook}: {attach}");
    }
    if attach["oom_kill_process"].is_null() {
        assert_eq!(attach["reclaim_begin"], "tp_btf", "{attach}");
    }
    assert!(
        attach["task_newtask"].is_null(),
        "no tid map with tp_btf: {attach}"
    );
}
