//! Whodunit, for real: processes killed by other processes (kill, tgkill, pidfd_send_signal, an
//! earlyoom-like killer) and by the kernel OOM killer each get exactly one `exit` record whose
//! verdict names the killer.

use std::{
    os::unix::process::ExitStatusExt,
    path::PathBuf,
    process::{Child, Command},
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

/// A hog holding 1 MiB, returned once it says it is ready (exec'd, its comm `oomtrace-hog`).
fn sleeper() -> Child {
    spawn_hog_ready(&["--mb", "1", "--hold"])
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

/// Before checking that the hog got no `oom_kill` or `exit` line: every such record would have
/// been made before its wait() returned, so once a later record is out ([`Tracer::fence`]) they
/// would be too. Without the signal hook there is nothing to wait for: then a bounded wait.
fn settle(t: &mut Tracer) {
    if !t.fence() {
        let _ = t.wait_for(Duration::from_millis(300), |_| false);
    }
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
    let mut butler = Command::new(the_butler())
        .args(["-9", &pid.to_string()])
        .spawn()
        .unwrap();
    let butler_pid = butler.id();
    assert!(butler.wait().unwrap().success());
    assert_eq!(victim.wait().unwrap().signal(), Some(9));
    let ex = exit_of(&mut t, pid);
    let (_, lines) = t.stop();
    assert_eq!(ex["verdict"], "process", "{ex}");
    assert_eq!(ex["killer"]["pid"], butler_pid);
    assert_eq!(ex["killer"]["tid"], butler_pid);
    assert_eq!(ex["killer"]["comm"], "the-butler");
    assert_eq!(ex["killer"]["exe"], "the-butler");
    assert_eq!(ex["exit_code"], 137);
    assert_eq!(ex["exit_signal"], 9);
    assert_eq!(ex["signal_code"], "SI_USER");
    assert_eq!(ex["process"]["tid"], pid, "a single-threaded process");
    assert_eq!(ex["process"]["comm"], "oomtrace-hog");
    let sig = lines
        .iter()
        .find(|v| v["type"] == "signal" && v["seq"] == ex["signal_seq"])
        .expect("the signal record the verdict names");
    assert_eq!(sig["code"], "SI_USER");
    assert_eq!(sig["target"]["pid"], pid);
    assert_eq!(sig["sender"]["pid"], butler_pid);
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
        let mut killer = Command::new(bin("oomtrace-killer"))
            .args([how, &pid.to_string()])
            .spawn()
            .unwrap();
        let killer_pid = killer.id();
        assert!(killer.wait().unwrap().success(), "{how}");
        assert_eq!(victim.wait().unwrap().signal(), Some(9));
        let ex = exit_of(&mut t, pid);
        assert_eq!(ex["verdict"], "process", "{how}: {ex}");
        assert_eq!(ex["killer"]["pid"], killer_pid, "{how}");
        assert_eq!(ex["killer"]["comm"], "oomtrace-killer", "{how}");
        assert_eq!(ex["signal_code"], code, "{how}");
        // tgkill(2) addresses one thread, kill(2) and pidfd_send_signal(2) the process.
        let sig = t
            .seen
            .iter()
            .find(|v| v["type"] == "signal" && v["seq"] == ex["signal_seq"])
            .unwrap_or_else(|| panic!("{how}: the signal record the verdict names"));
        assert_eq!(sig["group"], how != "tgkill", "{how}: {sig}");
        assert_eq!(sig["target"]["tid"], pid, "{how}: {sig}");
        assert_eq!(sig["sender"]["pid"], killer_pid, "{how}: {sig}");
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
    assert_eq!(ex["oom"]["oom_memcg"]["id"], cg.inode());
    assert_eq!(ex["oom"]["constraint"], "memcg");
    assert_eq!(ex["oom"]["shared_mm"], false, "{ex}");
    // The hog hit its own limit: it is the trigger too.
    assert_eq!(ex["oom"]["trigger"]["pid"], pid, "{ex}");
    assert_eq!(ex["process"]["cgroup"]["id"], cg.inode(), "{ex}");
    // Documented null for kernel_oom (docs/events.md, exit fields, killer).
    assert!(ex["killer"].is_null());
    // One kill, one SIGKILL: __oom_kill_process() sends it once, with SEND_SIG_PRIV (SI_KERNEL),
    // before mark_oom_victim() (mm/oom_kill.c v6.18); a later OOM skips a task already marked.
    let sigs: Vec<&Value> = lines
        .iter()
        .filter(|v| v["type"] == "signal" && v["target"]["pid"] == pid)
        .collect();
    assert_eq!(
        sigs.len(),
        1,
        "the OOM killer's SIGKILL is one signal record: {sigs:?}"
    );
    let sig = sigs[0];
    assert_eq!(sig["code"], "SI_KERNEL", "{sig}");
    assert_eq!(sig["sender"]["pid"], pid, "sent in the trigger's context: {sig}");
    assert!(sig["kill_id"].is_null(), "it precedes its oom_kill line: {sig}");
    assert!(
        sig["seq"].as_u64() < kill["seq"].as_u64(),
        "the signal precedes mark_victim"
    );
    // The signal was seen, so the verdict names it (signal_seq is null only when it was not,
    // docs/events.md, exit fields).
    assert_eq!(ex["signal_seq"], sig["seq"], "{ex}");
    assert_eq!(ex["signal_code"], "SI_KERNEL", "{ex}");
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
    let killer_pid = killer.id();
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
    assert_eq!(ex["killer"]["pid"], killer_pid);
    assert_eq!(ex["killer"]["comm"], "oomtrace-killer");
    assert_eq!(ex["killer"]["exe"], "oomtrace-killer");
    assert_eq!(ex["process"]["cgroup"]["path"], cg.path.as_str());
    assert_eq!(ex["process"]["cgroup"]["id"], cg.inode());
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
    settle(&mut t);
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
    settle(&mut t);
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
