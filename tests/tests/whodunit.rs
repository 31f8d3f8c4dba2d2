//! Whodunit, for real: processes killed by other processes (kill, tgkill, pidfd_send_signal, an
//! earlyoom-like killer) and by the kernel OOM killer each get exactly one `exit` record whose
//! verdict names the killer.

use std::{
    os::unix::process::ExitStatusExt,
    path::PathBuf,
    process::{Child, Command},
    thread,
    time::Duration,
};

use oomtrace_tests::*;
use serde_json::Value;

/// A copy of kill(1) named `the-butler`: its comm and executable name are distinctive.
fn the_butler() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("oomtrace-butler-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("the-butler");
    if !path.exists() {
        let kill = ["/bin/kill", "/usr/bin/kill"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists());
        std::fs::copy(kill.expect("kill(1) not found"), &path).unwrap();
    }
    path
}

fn sleeper() -> Child {
    let c = spawn_hog(&["--mb", "1", "--hold"]);
    thread::sleep(Duration::from_millis(30));
    c
}

fn exit_of(t: &mut Tracer, pid: u32) -> Value {
    t.wait_for(Duration::from_secs(10), |v| {
        v["type"] == "exit" && v["process"]["pid"] == pid
    })
    .unwrap_or_else(|| panic!("no exit record for pid {pid}"))
}

fn count(lines: &[Value], kind: &str, pid: u32) -> usize {
    let key = if kind == "exit" { "process" } else { "target" };
    lines
        .iter()
        .filter(|v| v["type"] == kind && v[key]["pid"] == pid)
        .count()
}

fn signal_enabled(t: &Tracer) -> bool {
    let s = &t.seen[0]["attach"];
    !s["signal_generate"].is_null() && !s["process_exit"].is_null()
}

#[test]
fn kill_minus_9_from_a_named_process() {
    require_root_memcg!();
    let _lock = kill_lock();
    let mut t = Tracer::start(&[]);
    skip_unless!(signal_enabled(&t), "signal/exit hooks unavailable on this kernel");
    let mut victim = sleeper();
    let pid = victim.id();
    let st = Command::new(the_butler())
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(victim.wait().unwrap().signal(), Some(9));
    let ex = exit_of(&mut t, pid);
    let (_, lines) = t.stop();
    assert_eq!(ex["verdict"], "process", "{ex}");
    assert_eq!(ex["killer"]["comm"], "the-butler");
    assert_eq!(ex["killer"]["exe"], "the-butler");
    assert_eq!(ex["exit_code"], 137);
    assert_eq!(ex["signal_code"], "SI_USER");
    let sig = lines
        .iter()
        .find(|v| v["type"] == "signal" && v["seq"] == ex["signal_seq"])
        .expect("the signal record the verdict names");
    assert_eq!(sig["code"], "SI_USER");
    assert_eq!(sig["target"]["pid"], pid);
    assert_eq!(sig["sender"]["comm"], "the-butler");
    assert_eq!(count(&lines, "exit", pid), 1, "exactly one exit record");
    assert!(!lines.iter().any(|v| v["type"] == "oom_kill"), "no OOM here");
}

#[test]
fn tgkill_and_pidfd_senders_are_attributed() {
    require_root_memcg!();
    let _lock = kill_lock();
    let mut t = Tracer::start(&[]);
    skip_unless!(signal_enabled(&t), "signal/exit hooks unavailable on this kernel");
    for (how, code) in [("tgkill", "SI_TKILL"), ("pidfd", "SI_USER"), ("kill", "SI_USER")] {
        let mut victim = sleeper();
        let pid = victim.id();
        let st = Command::new(bin("oomtrace-killer"))
            .args([how, &pid.to_string()])
            .status()
            .unwrap();
        assert!(st.success(), "{how}");
        assert_eq!(victim.wait().unwrap().signal(), Some(9));
        let ex = exit_of(&mut t, pid);
        assert_eq!(ex["verdict"], "process", "{how}: {ex}");
        assert_eq!(ex["killer"]["comm"], "oomtrace-killer", "{how}");
        assert_eq!(ex["signal_code"], code, "{how}");
    }
    let _ = t.stop();
}

#[test]
fn oom_kill_verdict_links_the_oom_record() {
    require_root_memcg!();
    let _lock = kill_lock();
    let cg = TestCgroup::new("oomtrace-wd-oom", 32 * MIB).expect("cgroup");
    let mut t = Tracer::start(&[]);
    skip_unless!(signal_enabled(&t), "signal/exit hooks unavailable on this kernel");
    let child = spawn_hog(&["--cgroup", &cg.dir.to_string_lossy()]);
    let pid = child.id();
    let mut child = child;
    assert_eq!(child.wait().unwrap().signal(), Some(9));
    let ex = exit_of(&mut t, pid);
    let (_, lines) = t.stop();
    let kill = lines
        .iter()
        .find(|v| v["type"] == "oom_kill" && v["victim"]["pid"] == pid)
        .expect("oom_kill record");
    assert_eq!(ex["verdict"], "kernel_oom", "{ex}");
    assert_eq!(ex["oom"]["oom_kill_seq"], kill["seq"]);
    assert_eq!(ex["oom"]["kill_id"], kill["kill_id"]);
    assert_eq!(ex["oom"]["oom_memcg"]["path"], cg.path.as_str());
    assert_eq!(ex["oom"]["constraint"], "memcg");
    assert!(ex["killer"].is_null());
    let sigs: Vec<&Value> = lines
        .iter()
        .filter(|v| v["type"] == "signal" && v["target"]["pid"] == pid)
        .collect();
    assert!(!sigs.is_empty(), "the OOM killer's SIGKILL is a signal record");
    assert!(sigs.iter().all(|s| s["code"] == "SI_KERNEL"), "{sigs:?}");
    assert!(
        sigs[0]["seq"].as_u64() < kill["seq"].as_u64(),
        "the signal precedes mark_victim"
    );
    assert_eq!(count(&lines, "exit", pid), 1);
    assert!(
        !lines
            .iter()
            .any(|v| v["type"] == "exit" && v["verdict"] == "process")
    );
}

#[test]
fn userspace_killer_is_named() {
    require_root_memcg!();
    let _lock = kill_lock();
    // No kernel limit: the earlyoom-like killer acts first, at 48 MiB.
    let cg = TestCgroup::new("oomtrace-wd-earlyoom", 0).expect("cgroup");
    let dir = cg.dir.to_string_lossy().into_owned();
    let mut t = Tracer::start(&[]);
    skip_unless!(signal_enabled(&t), "signal/exit hooks unavailable on this kernel");
    let killer = Command::new(bin("oomtrace-killer"))
        .args(["watch", &dir, &(48 * MIB).to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut small = spawn_hog(&["--cgroup", &dir, "--mb", "8", "--hold"]);
    let mut big = spawn_hog(&["--cgroup", &dir, "--mb", "64", "--hold"]);
    let out = killer.wait_with_output().unwrap();
    assert!(out.status.success());
    let killed: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(killed, big.id(), "the killer picks the largest");
    assert_eq!(big.wait().unwrap().signal(), Some(9));
    let ex = exit_of(&mut t, killed);
    let _ = small.kill();
    let _ = small.wait();
    let (_, lines) = t.stop();
    assert_eq!(ex["verdict"], "process");
    assert_eq!(ex["killer"]["comm"], "oomtrace-killer");
    assert_eq!(ex["process"]["cgroup"]["path"], cg.path.as_str());
    assert!(
        !lines.iter().any(|v| v["type"] == "oom_kill"),
        "the kernel killed nothing"
    );
}

/// 200 deaths, half OOM kills, half kill -9: exactly one exit each, each with the right verdict.
#[test]
fn storm_of_mixed_deaths() {
    require_root_memcg!();
    let _lock = kill_lock();
    const N: usize = 100;
    let cg = TestCgroup::new("oomtrace-wd-storm", 8 * MIB).expect("cgroup");
    let dir = cg.dir.to_string_lossy().into_owned();
    let butler = the_butler();
    let mut t = Tracer::start(&[]);
    skip_unless!(signal_enabled(&t), "signal/exit hooks unavailable on this kernel");
    let (mut oom, mut user) = (Vec::new(), Vec::new());
    for _ in 0..N {
        let mut c = spawn_hog(&["--cgroup", &dir, "--step-kb", "4096"]);
        oom.push(c.id());
        assert_eq!(c.wait().unwrap().signal(), Some(9));
        let mut v = spawn_hog(&["--mb", "1", "--hold"]);
        user.push(v.id());
        let st = Command::new(&butler)
            .args(["-9", &v.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(v.wait().unwrap().signal(), Some(9));
    }
    let n = t.wait_count(2 * N, Duration::from_secs(30), |v| {
        v["type"] == "exit"
            && (oom.contains(&(v["process"]["pid"].as_u64().unwrap_or(0) as u32))
                || user.contains(&(v["process"]["pid"].as_u64().unwrap_or(0) as u32)))
    });
    let (_, lines) = t.stop();
    assert_eq!(n, 2 * N, "exit records for the storm's deaths");
    assert!(!lines.iter().any(|v| v["type"] == "lost"));
    for &p in &oom {
        let e: Vec<&Value> = lines
            .iter()
            .filter(|v| v["type"] == "exit" && v["process"]["pid"] == p)
            .collect();
        assert_eq!(e.len(), 1, "pid {p}");
        assert_eq!(e[0]["verdict"], "kernel_oom", "{}", e[0]);
    }
    for &p in &user {
        let e: Vec<&Value> = lines
            .iter()
            .filter(|v| v["type"] == "exit" && v["process"]["pid"] == p)
            .collect();
        assert_eq!(e.len(), 1, "pid {p}");
        assert_eq!(e[0]["verdict"], "process", "{}", e[0]);
        assert_eq!(e[0]["killer"]["comm"], "the-butler");
    }
    assert_eq!(cg.oom_kills(), N as u64);
}

#[test]
fn pid_filter_keeps_only_that_process() {
    require_root_memcg!();
    let _lock = kill_lock();
    let mut a = sleeper();
    let mut b = sleeper();
    let mut t = Tracer::start(&["--pid", &a.id().to_string()]);
    if !signal_enabled(&t) {
        for c in [&mut a, &mut b] {
            let _ = c.kill();
            let _ = c.wait();
        }
        skip_unless!(false, "signal/exit hooks unavailable on this kernel");
    }
    let _ = b.kill();
    let _ = b.wait();
    let _ = a.kill();
    let _ = a.wait();
    let ex = exit_of(&mut t, a.id());
    let (_, lines) = t.stop();
    assert_eq!(ex["verdict"], "process");
    assert_eq!(count(&lines, "exit", b.id()), 0, "filtered out");
    assert!(
        lines
            .iter()
            .filter(|v| v["type"] == "signal" || v["type"] == "exit")
            .all(|v| { v["target"]["pid"] == a.id() || v["process"]["pid"] == a.id() })
    );
}

/// cgroup v1 `oom_kill_disable 1`: the hog blocks at the limit, a `memcg_oom` record says so, and
/// nothing is killed; raising the limit lets it finish.
#[test]
fn oom_that_kills_nothing_is_reported() {
    require_root_memcg!();
    let _lock = kill_lock();
    let cg = TestCgroup::new("oomtrace-wd-nokill", 32 * MIB).expect("cgroup");
    skip_unless!(cg.version == 1, "oom_kill_disable exists only in cgroup v1");
    cg.write("memory.oom_control", "1");
    let mut t = Tracer::start(&[]);
    skip_unless!(
        !t.seen[0]["attach"]["memcg_oom"].is_null(),
        "no memcg OOM notifications on this machine"
    );
    let id = cg.inode();
    let mut hog = spawn_hog(&["--cgroup", &cg.dir.to_string_lossy(), "--mb", "48"]);
    let rec = t.wait_for(Duration::from_secs(10), |v| {
        v["type"] == "memcg_oom" && v["memcg"]["id"] == id
    });
    let oom_control = cg.read("memory.oom_control");
    cg.write("memory.limit_in_bytes", &(128 * MIB).to_string());
    let status = hog.wait().unwrap();
    thread::sleep(Duration::from_millis(300));
    let (_, lines) = t.stop();
    let rec = rec.expect("no memcg_oom record for the blocked cgroup");
    assert!(
        oom_control.contains("under_oom 1"),
        "the kernel says it was under OOM: {oom_control}"
    );
    assert!(
        status.success(),
        "the hog should finish once the limit is raised: {status:?}"
    );
    assert_eq!(rec["memcg"]["path"], cg.path.as_str());
    assert_eq!(rec["oom_kill_disable"], true);
    assert_eq!(rec["under_oom"], true);
    assert_eq!(rec["oom_kills"], 0);
    assert_eq!(cg.oom_kills(), 0);
    let pid = hog.id();
    assert!(
        !lines.iter().any(|v| v["type"] == "oom_kill"),
        "nothing was killed"
    );
    assert_eq!(count(&lines, "exit", pid), 0, "the hog did not die");
}

/// Every task of the cgroup is unkillable (oom_score_adj -1000): the OOM kills nothing and the hog
/// waits in its page fault. cgroup v2 has no oom_kill_disable, so this is how a v2 OOM that kills
/// nothing is made (the VM tests); a `memcg_oom` line must still appear, matching the kernel's
/// own `oom` / `oom_kill` counters.
#[test]
fn oom_with_only_unkillable_tasks_is_reported() {
    require_root_memcg!();
    // Lowering oom_score_adj below 0 needs CAP_SYS_RESOURCE (bit 24 of CapEff).
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| u64::from_str_radix(l.strip_prefix("CapEff:")?.trim(), 16).ok())
        .unwrap_or(0);
    skip_unless!(
        cap_eff & (1 << 24) != 0,
        "oom_score_adj -1000 needs CAP_SYS_RESOURCE"
    );
    let _lock = kill_lock();
    let cg = TestCgroup::new("oomtrace-wd-unkillable", 32 * MIB).expect("cgroup");
    let mut t = Tracer::start(&[]);
    skip_unless!(
        !t.seen[0]["attach"]["memcg_oom"].is_null(),
        "no memcg OOM notifications on this machine"
    );
    let id = cg.inode();
    let mut hog = spawn_hog(&[
        "--cgroup",
        &cg.dir.to_string_lossy(),
        "--adj",
        "-1000",
        "--mb",
        "48",
    ]);
    let rec = t.wait_for(Duration::from_secs(10), |v| {
        v["type"] == "memcg_oom" && v["memcg"]["id"] == id
    });
    let (limit_file, events_file) = if cg.version == 1 {
        ("memory.limit_in_bytes", "memory.oom_control")
    } else {
        ("memory.max", "memory.events")
    };
    let events = cg.read(events_file);
    cg.write(limit_file, &(128 * MIB).to_string());
    let status = hog.wait().unwrap();
    thread::sleep(Duration::from_millis(300));
    let (_, lines) = t.stop();
    let rec = rec.expect("no memcg_oom record for the cgroup whose OOM killed nothing");
    assert!(
        status.success(),
        "the unkillable hog should finish once the limit is raised: {status:?}"
    );
    assert_eq!(rec["memcg"]["path"], cg.path.as_str());
    assert_eq!(rec["oom_kills"], 0, "{rec}");
    assert_eq!(cg.oom_kills(), 0);
    if cg.version == 2 {
        let oom = events
            .lines()
            .find_map(|l| l.strip_prefix("oom ")?.trim().parse::<u64>().ok())
            .unwrap_or(0);
        assert!(oom >= 1, "the kernel counted the OOM: {events}");
        assert!(rec["oom_events"].as_u64().unwrap_or(0) >= 1, "{rec}");
    }
    assert!(
        !lines.iter().any(|v| v["type"] == "oom_kill"),
        "nothing was killed"
    );
    assert_eq!(count(&lines, "exit", hog.id()), 0, "the hog did not die");
}
