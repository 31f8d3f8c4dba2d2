//! Why it ran out: the allocation's flags, size, path and stacks, and what the cgroup's memory
//! was made of — checked against the kernel's own report on real OOMs.

use std::{os::unix::process::ExitStatusExt, time::Duration};

use oomtrace_tests::*;
use serde_json::Value;

fn kill_record(t: &mut Tracer, pid: u32) -> Value {
    t.wait_for(Duration::from_secs(10), |v| {
        v["type"] == "oom_kill" && v["victim"]["pid"] == pid
    })
    .unwrap_or_else(|| panic!("no oom_kill record for pid {pid}"))
}

fn functions(rec: &Value) -> Vec<String> {
    rec["allocation"]["user_stack"]["frames"]
        .as_array()
        .map(|f| {
            f.iter()
                .filter_map(|f| f["function"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A hog that allocates through `grow_buffer` is OOM-killed: its own record names that function
/// with file:line, the kernel stack shows the fault path, and the path is `page_fault`.
#[test]
fn user_stack_names_the_allocating_function() {
    require_root_memcg!();
    let _lock = kill_lock();
    let cg = TestCgroup::new("oomtrace-ustack", 32 * MIB).expect("cgroup");
    let mut t = Tracer::start(&[]);
    let mut hog = spawn_hog(&["--cgroup", &cg.dir.to_string_lossy()]);
    let pid = hog.id();
    assert_eq!(hog.wait().unwrap().signal(), Some(9));
    let rec = kill_record(&mut t, pid);
    let _ = t.stop();
    let a = &rec["allocation"];
    assert_eq!(a["path"], "page_fault", "{a}");
    assert_eq!(a["path_detail"], "anonymous");
    assert_eq!(a["order"], 0);
    assert_eq!(a["size_bytes"], 4096);
    let flags = strs(&a["gfp_flags"]);
    assert!(
        !flags.is_empty()
            && flags
                .iter()
                .all(|f| f.starts_with("GFP_") || f.starts_with("__GFP_")),
        "{flags:?}"
    );
    let us = &a["user_stack"];
    assert!(us["depth"].as_u64().unwrap() >= 2, "{us}");
    let frames = us["frames"].as_array().unwrap();
    // The innermost frames are the hog's own; a frame in a shared library (libc) may be named
    // from a build-id cache even when the hog's own are not.
    let named = !frames[0]["function"].is_null();
    if named {
        let frame = frames
            .iter()
            .find(|f| f["function"].as_str().is_some_and(|n| n.contains("grow_buffer")))
            .unwrap_or_else(|| panic!("grow_buffer not in the user stack: {us}"));
        assert!(
            frame["file"]
                .as_str()
                .is_some_and(|f| f.ends_with("oomtrace-hog.rs")),
            "{frame}"
        );
        assert!(frame["line"].as_u64().is_some(), "{frame}");
        assert!(
            frame["module"]
                .as_str()
                .is_some_and(|m| m.ends_with("oomtrace-hog")),
            "{frame}"
        );
    } else {
        // The victim was also the trigger and had already released its memory map when the record
        // was handled (a loaded machine): the frames must then carry what symbolizes them later —
        // the hog binary's build id and file offsets — and no name at all rather than a wrong one.
        // "build_id", or "process" when the map was read but the process vanished before its
        // files could be opened (the note says so): either way, offsets and build ids, no names.
        assert!(
            us["symbolized"] == "build_id" || us["note"].as_str().is_some(),
            "{us}"
        );
        let out = std::process::Command::new("readelf")
            .arg("-n")
            .arg(bin("oomtrace-hog"))
            .output();
        let build_id = out.ok().and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find_map(|l| l.trim().strip_prefix("Build ID: ").map(str::to_owned))
        });
        if let Some(id) = build_id {
            assert_eq!(frames[0]["build_id"], id.as_str(), "{us}");
        }
        assert!(frames[0]["module_offset"].as_u64().is_some(), "{us}");
        assert!(
            frames
                .iter()
                .filter(|f| f["build_id"] == frames[0]["build_id"])
                .all(|f| f["function"].is_null()),
            "no name for the hog's frames without the trigger's mapping: {us}"
        );
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"note: the trigger exited before symbolization; checked the build-id fallback instead\n",
        );
    }
    let k = a["kernel_stack"].as_array().unwrap();
    assert!(
        k.iter()
            .any(|f| f.as_str().unwrap().starts_with("handle_mm_fault")),
        "{k:?}"
    );
}

/// The trigger's stack, symbolized against the trigger — not the victim (bcc's oomkill bug).
#[test]
fn user_stack_is_the_triggers() {
    require_root_memcg!();
    let _lock = kill_lock();
    let cg = TestCgroup::new("oomtrace-ustack-tv", 64 * MIB).expect("cgroup");
    let dir = cg.dir.to_string_lossy().into_owned();
    let mut t = Tracer::start(&[]);
    // The victim sleeps in main (not in grow_buffer) once it holds its memory.
    let mut victim = spawn_hog_ready(&["--cgroup", &dir, "--adj", "1000", "--mb", "40", "--hold"]);
    // The trigger holds on after its allocation, so that it is alive when the record is handled.
    // It says when it holds its 40 MiB; if it dies first, a second OOM killed it too (see
    // oom_kill::trigger_and_victim_differ): after that it allocates nothing more.
    let mut cmd = std::process::Command::new(bin("oomtrace-hog"));
    cmd.args(["--cgroup", &dir, "--mb", "40", "--hold", "--ready-fd", "3"]);
    let (mut trigger, ready) = spawn_ready(&mut cmd, Duration::from_secs(20));
    assert_ne!(ready, Ready::Timeout, "the trigger neither got ready nor died");
    let trigger_killed = ready == Ready::Died;
    let tpid = trigger.id();
    let vpid = victim.id();
    assert_eq!(victim.wait().unwrap().signal(), Some(9));
    let rec = kill_record(&mut t, vpid);
    let _ = trigger.kill();
    let tstatus = trigger.wait().unwrap();
    let _ = t.stop();
    // The kernel agrees on who died of the OOM killer.
    assert_eq!(
        cg.oom_kills(),
        1 + u64::from(trigger_killed),
        "kernel memcg counter (trigger killed: {trigger_killed})"
    );
    assert_eq!(killed_line(tpid).is_some(), trigger_killed, "dmesg on {tpid}");
    if trigger_killed {
        assert_eq!(tstatus.signal(), Some(9));
    }
    assert_eq!(rec["trigger"]["pid"], tpid);
    let us = &rec["allocation"]["user_stack"];
    if us["symbolized"] == "process" {
        assert!(functions(&rec).iter().any(|f| f.contains("grow_buffer")), "{us}");
    } else {
        // Only when the trigger died before its record was handled: then no name at all.
        assert!(trigger_killed, "the trigger was alive: {us}");
        assert!(functions(&rec).is_empty(), "{us}");
    }
}

/// THP: a process holds transparent huge pages (MADV_HUGEPAGE, this machine's mode is madvise)
/// when another one's allocation sets off the OOM; `oom_memcg.memory.stat.anon_thp` accounts for
/// them, as the cgroup's own memory.stat and the kernel's report do.
#[test]
fn memory_breakdown_shows_transparent_huge_pages() {
    require_root_memcg!();
    let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    skip_unless!(
        thp.contains("[madvise]") || thp.contains("[always]"),
        "transparent hugepages are off"
    );
    let _lock = kill_lock();
    let cg = TestCgroup::new("oomtrace-thp", 64 * MIB).expect("cgroup");
    let dir = cg.dir.to_string_lossy().into_owned();
    let mut t = Tracer::start(&[]);
    let mut holder = spawn_hog_ready(&["--cgroup", &dir, "--thp", "--mb", "40", "--hold"]);
    let own = |k: &str| {
        let s = cg.read("memory.stat");
        s.lines()
            .find_map(|l| l.strip_prefix(&format!("{k} "))?.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let (thp_key, v1) = if cg.version == 1 {
        ("rss_huge", true)
    } else {
        ("anon_thp", false)
    };
    let thp_before = own(thp_key);
    if thp_before < 16 * MIB {
        let _ = holder.kill();
        let _ = holder.wait();
        skip_unless!(
            false,
            format!("no huge pages were allocated ({thp_key} = {thp_before})")
        );
    }
    let mut victim = spawn_hog(&["--cgroup", &dir, "--adj", "1000"]);
    let vpid = victim.id();
    assert_eq!(victim.wait().unwrap().signal(), Some(9));
    let rec = kill_record(&mut t, vpid);
    let thp_after = own(thp_key);
    let _ = holder.kill();
    let _ = holder.wait();
    let _ = t.stop();
    let mem = &rec["oom_memcg"]["memory"];
    assert_eq!(mem["stat_source"], "cgroupfs", "{mem}");
    let got = mem["stat"]["anon_thp"].as_u64().unwrap();
    assert_eq!(
        got, thp_after,
        "the holder's huge pages, as the cgroup's own memory.stat says"
    );
    assert_eq!(got, thp_before, "the holder's huge pages did not change");
    assert_eq!(mem["limit_bytes"], 64 * MIB);
    assert!(mem["usage_bytes"].as_u64().unwrap() >= 63 * MIB, "{mem}");
    assert!(mem["peak_bytes"].as_u64().unwrap() >= mem["usage_bytes"].as_u64().unwrap());
    if let Some(report) = oom_report_stats(&cg.path) {
        let key = if v1 { "rss_huge" } else { "anon_thp" };
        assert_eq!(
            report.get(key).copied(),
            Some(got),
            "the kernel's OOM report: {report:?}"
        );
    } else {
        eprintln!("note: the kernel's OOM report for {} was rate-limited", cg.path);
    }
    assert!(mem["stat_read_after_kill_ns"].as_u64().unwrap() < 1_000_000_000);
}

/// The victim held THP itself: how far does `memory.stat` drift between the kill and our read?
/// Measured and printed; the counters read in the kernel at the kill must not drift at all.
#[test]
fn breakdown_drift_when_the_victim_held_the_memory() {
    require_root_memcg!();
    let _lock = kill_lock();
    let cg = TestCgroup::new("oomtrace-drift", 64 * MIB).expect("cgroup");
    let mut t = Tracer::start(&[]);
    let mut hog = spawn_hog(&["--cgroup", &cg.dir.to_string_lossy(), "--thp"]);
    let pid = hog.id();
    assert_eq!(hog.wait().unwrap().signal(), Some(9));
    let rec = kill_record(&mut t, pid);
    let _ = t.stop();
    let mem = &rec["oom_memcg"]["memory"];
    let usage = mem["usage_bytes"].as_u64().unwrap();
    assert!(usage >= 63 * MIB, "the kernel's counter at the kill: {mem}");
    // The cgroup still exists when the record arrives, so its memory.stat was there to be read
    // (docs/events.md, memory objects): a number, however much of it is already gone.
    assert_eq!(mem["stat_source"], "cgroupfs", "{mem}");
    let anon = mem["stat"]["anon"]
        .as_u64()
        .unwrap_or_else(|| panic!("no stat.anon: {mem}"));
    let after = mem["stat_read_after_kill_ns"]
        .as_u64()
        .unwrap_or_else(|| panic!("no stat_read_after_kill_ns: {mem}"));
    // A note, not an assertion: how much of the victim's memory was already gone when read.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!(
            "drift: memory.stat anon {} MiB read {} us after the kill; usage at the kill {} MiB\n",
            anon / MIB,
            after / 1000,
            usage / MIB
        )
        .as_bytes(),
    );
}

/// Overcommit: far more reserved than touched; total_vm far above rss, as the kernel says.
#[test]
fn overcommit_shows_in_total_vm() {
    require_root_memcg!();
    let _lock = kill_lock();
    let cg = TestCgroup::new("oomtrace-overcommit", 32 * MIB).expect("cgroup");
    let mut t = Tracer::start(&[]);
    let mut hog = spawn_hog(&["--cgroup", &cg.dir.to_string_lossy(), "--reserve-mb", "1024"]);
    let pid = hog.id();
    assert_eq!(hog.wait().unwrap().signal(), Some(9));
    let rec = kill_record(&mut t, pid);
    let _ = t.stop();
    let v = &rec["victim"];
    let total = v["total_vm_kb"].as_u64().unwrap();
    let anon = v["anon_rss_kb"].as_u64().unwrap();
    assert!(total > 1024 * 1024, "1 GiB reserved: {v}");
    assert!(total > 20 * anon, "virtual far above resident: {v}");
    let killed = killed_line(pid).expect("kernel kill line");
    assert_eq!(total.to_string(), killed["total-vm"]);
    assert_eq!(anon.to_string(), killed["anon-rss"]);
    let ratio = v["mm"]["overcommit_ratio"].as_f64().unwrap();
    assert!(ratio > 20.0, "{ratio}");
}
