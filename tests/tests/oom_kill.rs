//! Root tests: real memory cgroups, real OOM kills, oomtrace's records checked field by field
//! against the kernel's own report (dmesg), its cgroup counters and /proc/vmstat.

use std::{os::unix::process::ExitStatusExt, thread, time::Duration};

use oomtrace_tests::*;
use serde_json::Value;

/// Modes this kernel can attach, per `oomtrace check`.
fn attachable_modes() -> Vec<&'static str> {
    let out = std::process::Command::new(bin("oomtrace"))
        .arg("check")
        .output()
        .expect("oomtrace check");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    ["fentry", "kprobe", "tp_btf", "tracepoint"]
        .into_iter()
        .filter(|m| {
            text.lines()
                .any(|l| l.starts_with(&format!("attach {m}")) && l.trim_end().ends_with(" ok"))
        })
        .collect()
}

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Causes one OOM kill of a hog in a 64 MiB cgroup and checks the record against the kernel.
fn single_kill(mode: &str) {
    let _lock = kill_lock();
    // The kernel's full report (the oom-kill: line) is rate-limited to 10 per 5 s; retry once
    // after the window if an earlier storm used it up.
    for attempt in 0..2 {
        let cg = TestCgroup::new("oomtrace-single", 64 * MIB).expect("cgroup");
        let tracer = Tracer::start(&["--attach", mode]);
        let vm_before = vmstat_oom_kills();
        let dir = cg.dir.to_string_lossy().into_owned();
        let child = spawn_hog(&["--cgroup", &dir, "--adj", "500"]);
        let pid = child.id();
        let status = wait_child(child);
        assert_eq!(
            status.signal(),
            Some(9),
            "the hog should die of SIGKILL, got {status:?}"
        );
        assert_eq!(128 + status.signal().unwrap(), 137);
        let mut tracer = tracer;
        let rec = tracer
            .wait_for(Duration::from_secs(10), |v| {
                v["type"] == "oom_kill" && v["victim"]["pid"] == pid
            })
            .unwrap_or_else(|| panic!("no oom_kill record for pid {pid} (mode {mode})"));
        let (status, lines) = tracer.stop();
        assert!(status.success(), "oomtrace exited with {status:?}");
        assert_eq!(cg.oom_kills(), 1, "kernel's memcg oom_kill counter");
        // Exactly one: the tests that make OOMs hold kill_lock, and the storm test requires the
        // exact delta too.
        assert_eq!(vmstat_oom_kills() - vm_before, 1, "/proc/vmstat oom_kill delta");

        let killed = killed_line(pid).unwrap_or_else(|| panic!("no 'Killed process {pid}' in dmesg"));
        let report = oom_kill_line(pid);
        let invoked = invoked_line(pid);
        if (report.is_none() || invoked.is_none()) && attempt == 0 {
            // Waiting for time: the kernel's ratelimit window (DEFAULT_RATELIMIT_INTERVAL, 5 s).
            eprintln!("kernel OOM report for {pid} was rate-limited; retrying after the window");
            thread::sleep(Duration::from_secs(6));
            continue;
        }
        let report = report.unwrap_or_else(|| panic!("no oom-kill: report line for {pid}"));
        let invoked = invoked.unwrap_or_else(|| panic!("no 'invoked oom-killer' line for {pid}"));

        // Envelope.
        assert_eq!(rec["schema"], 1);
        assert_eq!(rec["attach"], mode);
        assert!(rec["seq"].as_u64().unwrap() >= 1);
        assert!(rec["time"].as_str().unwrap().ends_with('Z'));
        // Victim against the kernel's "Killed process" line.
        let v = &rec["victim"];
        assert_eq!(v["pid"], pid);
        // A single-threaded hog: its only thread is the one marked and the one allocating.
        assert_eq!(v["tid"], pid);
        assert_eq!(v["comm"], killed["comm"]);
        assert_eq!(v["comm"], "oomtrace-hog");
        assert_eq!(num(&v["total_vm_kb"]).to_string(), killed["total-vm"]);
        assert_eq!(num(&v["anon_rss_kb"]).to_string(), killed["anon-rss"]);
        assert_eq!(num(&v["file_rss_kb"]).to_string(), killed["file-rss"]);
        assert_eq!(num(&v["shmem_rss_kb"]).to_string(), killed["shmem-rss"]);
        assert_eq!(num(&v["pgtables_kb"]).to_string(), killed["pgtables"]);
        assert_eq!(num(&v["uid"]).to_string(), killed["UID"]);
        assert_eq!(v["oom_score_adj"], 500);
        assert_eq!(killed["oom_score_adj"], "500");
        // Cgroups against the kernel's report.
        assert_eq!(v["cgroup"]["id"], cg.inode());
        assert_eq!(v["cgroup"]["path"], cg.path.as_str());
        assert_eq!(report["task_memcg"], cg.path);
        assert_eq!(rec["trigger"]["pid"], pid);
        assert_eq!(rec["trigger"]["tid"], pid);
        assert_eq!(rec["trigger"]["comm"], "oomtrace-hog");
        assert_eq!(rec["trigger"]["cgroup"]["path"], cg.path.as_str());
        assert_eq!(rec["trigger"]["cgroup"]["id"], cg.inode());
        assert_eq!(
            invoked["oom_score_adj"], "500",
            "the trigger is the hog: {invoked:?}"
        );
        assert_eq!(report["constraint"], "CONSTRAINT_MEMCG");
        assert_eq!(rec["constraint"], "memcg");
        assert_eq!(rec["oom_memcg"]["path"], report["oom_memcg"].as_str());
        assert_eq!(rec["oom_memcg"]["id"], cg.inode());
        assert_eq!(rec["oom_memcg"]["limit_bytes"], 64 * MIB);
        assert_eq!(rec["totalpages"], 64 * MIB / 4096);
        // The allocation: a user page fault charged to the memcg.
        let stack = strs(&rec["allocation"]["kernel_stack"]);
        assert!(
            stack.first().is_some_and(|f| !f.starts_with("bpf_")),
            "BPF frames not stripped: {stack:?}"
        );
        assert!(stack.iter().any(|f| f.starts_with("out_of_memory+")), "{stack:?}");
        assert!(
            stack.iter().any(|f| f.starts_with("mem_cgroup_out_of_memory+")),
            "{stack:?}"
        );
        assert!(stack.iter().any(|f| f.contains("page_fault")), "{stack:?}");
        check_allocation(&rec["allocation"], &invoked, &lines[0]);
        // Exactly one record for this victim, and no loss.
        assert_eq!(kills_in(&lines, &cg).len(), 1, "one kill, one record");
        assert!(!lines.iter().any(|l| l["type"] == "lost"), "unexpected loss");
        assert_eq!(lines.last().unwrap()["type"], "stop");
        return;
    }
}

/// The allocation's GFP mask and order against the kernel's `invoked oom-killer: gfp_mask=...,
/// order=...` line for the same OOM.
fn check_allocation(a: &Value, invoked: &std::collections::HashMap<String, String>, start: &Value) {
    let exact = !start["attach"]["oom_kill_process"].is_null();
    if exact {
        // fentry/kprobe read oc->gfp_mask and oc->order: what dump_header() prints.
        assert_eq!(a["source"], "oom_control", "{a}");
        assert_eq!(a["gfp_mask"], invoked["gfp_mask"].as_str(), "{a} vs {invoked:?}");
        assert_eq!(a["order"].to_string(), invoked["order"], "{a} vs {invoked:?}");
        return;
    }
    // tp_btf/tracepoint: from mm_vmscan_memcg_reclaim_begin, which the kernel has (as a
    // tracepoint and as tp_btf) on every kernel tested; "not available" (docs/events.md,
    // allocation.source: null) is not this kernel. The trigger's memcg charge reclaimed before
    // it OOMed (try_charge_memcg(), mm/memcontrol.c v6.18), so the record has that reclaim.
    assert!(
        !start["attach"]["reclaim_begin"].is_null(),
        "the reclaim-begin tracepoints exist on this kernel but were not attached: {}",
        start["attach"]
    );
    assert_eq!(a["source"], "memcg_reclaim", "{a}");
    // try_to_free_mem_cgroup_pages() traces order 0 and the reclaim context's mask:
    // (current_gfp_context(gfp) & GFP_RECLAIM_MASK) | (GFP_HIGHUSER_MOVABLE & ~GFP_RECLAIM_MASK)
    // (mm/vmscan.c v6.18). For the hog's GFP_KERNEL charge of a faulted page (mem_cgroup_charge()
    // in alloc_anon_folio(), mm/memory.c) that is GFP_HIGHUSER_MOVABLE exactly: GFP_KERNEL's bits
    // (__GFP_RECLAIM | __GFP_IO | __GFP_FS) are all reclaim bits, and the same as
    // GFP_HIGHUSER_MOVABLE's.
    assert_eq!(a["order"], 0, "{a}");
    assert!(a["gfp_mask"].as_str().is_some_and(|g| g.starts_with("0x")), "{a}");
    if invoked["gfp_flags"] == "GFP_KERNEL" {
        assert_eq!(strs(&a["gfp_flags"]), ["GFP_HIGHUSER_MOVABLE"], "{a}");
    }
}

fn wait_child(mut child: std::process::Child) -> std::process::ExitStatus {
    child.wait().expect("wait hog")
}

#[test]
fn kill_is_reported_exactly_in_fentry_mode() {
    require_root_memcg!();
    skip_unless!(
        attachable_modes().contains(&"fentry"),
        "fentry cannot attach on this kernel"
    );
    single_kill("fentry");
}

#[test]
fn kill_is_reported_exactly_in_kprobe_mode() {
    require_root_memcg!();
    skip_unless!(
        attachable_modes().contains(&"kprobe"),
        "kprobes cannot attach on this kernel"
    );
    single_kill("kprobe");
}

#[test]
fn kill_is_reported_exactly_in_tp_btf_mode() {
    require_root_memcg!();
    skip_unless!(
        attachable_modes().contains(&"tp_btf"),
        "tp_btf cannot attach on this kernel"
    );
    single_kill("tp_btf");
}

#[test]
fn kill_is_reported_exactly_in_tracepoint_mode() {
    require_root_memcg!();
    skip_unless!(
        attachable_modes().contains(&"tracepoint"),
        "tracepoint cannot attach on this kernel"
    );
    single_kill("tracepoint");
}

#[test]
fn auto_mode_reports_a_kill() {
    require_root_memcg!();
    let modes = attachable_modes();
    let best = modes.first().copied().unwrap_or("none");
    // `auto` is one mode of its own: in the VM tests it runs in the pass of the mode it picks.
    skip_unless!(
        attach_under_test().is_none_or(|m| m == best),
        format!("auto mode is tested in the {best} pass")
    );
    let _lock = kill_lock();
    let cg = TestCgroup::new("oomtrace-auto", 32 * MIB).expect("cgroup");
    let mut tracer = Tracer::start(&["--attach", "auto"]);
    let start = tracer.seen[0].clone();
    let mode = start["attach"]["mode"].as_str().unwrap().to_owned();
    assert_eq!(
        start["btf"],
        std::path::Path::new("/sys/kernel/btf/vmlinux").exists(),
        "{start}"
    );
    // The best mode `oomtrace check` says attaches: fentry, kprobe, tp_btf, tracepoint.
    assert_eq!(mode, best, "auto chose {mode}; attachable: {modes:?}");
    let status = run_hog(&["--cgroup", &cg.dir.to_string_lossy()]);
    assert_eq!(status.signal(), Some(9));
    let n = tracer.wait_count(1, Duration::from_secs(10), |v| v["type"] == "oom_kill");
    let (_, lines) = tracer.stop();
    assert_eq!(n, 1);
    assert_eq!(kills_in(&lines, &cg).len(), 1);
    assert_eq!(kills_in(&lines, &cg)[0]["attach"], mode.as_str());
}

/// The task whose allocation sets the OOM off is not the one the OOM killer picks.
#[test]
fn trigger_and_victim_differ() {
    require_root_memcg!();
    let _lock = kill_lock();
    // Every attachable mode here, or just the one under test in a VM pass.
    let under = attach_under_test();
    for mode in attachable_modes().into_iter().filter(|m| match &under {
        Some(u) => u == m,
        None => ["tp_btf", "tracepoint"].contains(m),
    }) {
        let cg = TestCgroup::new("oomtrace-tv", 64 * MIB).expect("cgroup");
        let dir = cg.dir.to_string_lossy().into_owned();
        let mut tracer = Tracer::start(&["--attach", mode]);
        // The victim: 40 MiB held, the highest score the OOM killer can see.
        let mut victim = spawn_hog_ready(&["--cgroup", &dir, "--adj", "1000", "--mb", "40", "--hold"]);
        // The trigger: oom_score_adj 0 (lowering it needs CAP_SYS_RESOURCE), asks for 40 MiB more
        // than fits. The kernel may OOM again before the dead victim's pages are uncharged and
        // kill the trigger too (seen on 6.18: the trigger killed 3 ms after the victim); then
        // there are two kills, and two records.
        let trigger = run_hog(&["--cgroup", &dir, "--mb", "40"]);
        let trigger_killed = trigger.signal() == Some(9);
        assert!(
            trigger.success() || trigger_killed,
            "the trigger should finish or be OOM-killed: {trigger:?}"
        );
        // Dead, but not reaped until its record is out: /proc/<pid> stays (a zombie).
        let vstatus = wait_dead_unreaped(&victim);
        assert_eq!(
            vstatus.signal(),
            Some(9),
            "the victim should have been OOM-killed"
        );
        let vpid = victim.id();
        let rec = tracer
            .wait_for(Duration::from_secs(10), |v| {
                v["type"] == "oom_kill" && v["victim"]["tid"] == vpid
            })
            .unwrap_or_else(|| panic!("no record for victim {vpid} in mode {mode}"));
        let _ = victim.wait();
        // The classic record names only the thread; its tgid comes from the task_newtask map, or
        // from /proc/<tid>/status. victim.pid is null only when the map had no entry *and*
        // /proc/<tid> no longer existed (docs/events.md, oom_kill fields, victim.pid): the
        // victim is kept a zombie until its record is out, so it is exact in every mode.
        assert_eq!(
            rec["victim"]["pid"], vpid,
            "mode {mode}, tid map: {}",
            tracer.seen[0]["attach"]["task_newtask"]
        );
        let (_, lines) = tracer.stop();
        assert_eq!(rec["victim"]["comm"], "oomtrace-hog");
        assert_eq!(rec["victim"]["oom_score_adj"], 1000);
        assert_ne!(rec["trigger"]["pid"], rec["victim"]["pid"], "mode {mode}");
        assert_eq!(rec["trigger"]["cgroup"]["path"], cg.path.as_str());
        if rec["attach"] == "tracepoint" {
            // Only here may it be null: the classic record carries no cgroup, so procfs is asked
            // (docs/events.md, oom_kill fields, victim.cgroup: "`tracepoint` mode with victim ≠
            // trigger when `/proc/<tid>/cgroup` was already gone"). oomtrace takes no answer from
            // an exiting task (on cgroup v1, proc_cgroup_show() prints "/" for a PF_EXITING task,
            // kernel/cgroup/cgroup.c v6.18), and a SIGKILLed victim is exiting: null, or right.
            let p = &rec["victim"]["cgroup"];
            assert!(
                p.is_null() || (p["path"] == cg.path.as_str() && p["id"] == cg.inode()),
                "wrong victim cgroup {p}"
            );
            assert!(
                strs(&rec["inferred"]).contains(&"victim.cgroup"),
                "a procfs victim.cgroup is listed in inferred: {rec}"
            );
        } else {
            assert_eq!(rec["victim"]["cgroup"]["id"], cg.inode(), "mode {mode}");
            assert_eq!(rec["victim"]["cgroup"]["path"], cg.path.as_str(), "mode {mode}");
        }
        assert_eq!(rec["oom_memcg"]["path"], cg.path.as_str());
        let killed = killed_line(vpid).expect("kernel kill line");
        let (ours, kernels) = (num(&rec["victim"]["anon_rss_kb"]), num_str(&killed["anon-rss"]));
        if split_rss_counting() {
            // Before 6.2 each task caches up to TASK_RSS_EVENTS_THRESH (64) page-count changes
            // and folds them into the mm when it exits (sync_mm_rss(), mm/memory.c v6.1): the
            // victim, running its exit on another CPU, may fold them between mark_victim and the
            // kernel's "Killed process" line. Seen once: 16 kB apart. The cache is folded after
            // more than 64 events, a fault each (one page for anonymous memory): allow 128 pages.
            // SAFETY: sysconf has no preconditions.
            let page_kb = (unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64 / 1024).max(1);
            assert!(
                ours.abs_diff(kernels) <= 128 * page_kb,
                "anon_rss_kb {ours} vs kernel {kernels}"
            );
        } else {
            assert_eq!(ours, kernels, "anon_rss_kb");
        }
        let id = cg.inode();
        let n = lines
            .iter()
            .filter(|l| l["type"] == "oom_kill" && l["oom_memcg"]["id"] == id)
            .count();
        assert_eq!(
            n,
            1 + usize::from(trigger_killed),
            "one record per kill in the cgroup"
        );
        assert_eq!(cg.oom_kills(), n as u64);
    }
}

fn num_str(s: &str) -> u64 {
    s.parse().unwrap_or_else(|_| panic!("not a number: {s}"))
}

/// Linux < 6.2 counts a task's rss changes in a per-task cache first (SPLIT_RSS_COUNTING; replaced
/// by percpu counters in 6.2, f1a7941243c1).
fn split_rss_counting() -> bool {
    let rel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut v = rel.split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
    (v.next().unwrap_or(0), v.next().unwrap_or(0)) < (6, 2)
}

/// A parent's limit fires while the hog sits in a child with no limit of its own.
#[test]
fn parent_limit_is_the_oom_memcg() {
    require_root_memcg!();
    let _lock = kill_lock();
    let parent = TestCgroup::new("oomtrace-parent", 48 * MIB).expect("cgroup");
    if parent.version == 1 {
        // v1 needs hierarchical accounting for a parent's limit to apply to its children.
        let h = parent.read("memory.use_hierarchy");
        skip_unless!(h.trim() == "1", "memory.use_hierarchy is off");
    }
    let child = TestCgroup::under(Some(&parent), "child", 0).expect("child cgroup");
    let mut tracer = Tracer::start(&[]);
    let status = run_hog(&["--cgroup", &child.dir.to_string_lossy()]);
    assert_eq!(status.signal(), Some(9));
    let rec = tracer
        .wait_for(Duration::from_secs(10), |v| v["type"] == "oom_kill")
        .expect("record");
    let _ = tracer.stop();
    assert_eq!(rec["victim"]["cgroup"]["path"], child.path.as_str());
    assert_eq!(rec["oom_memcg"]["path"], parent.path.as_str());
    assert_eq!(rec["oom_memcg"]["limit_bytes"], 48 * MIB);
    drop(child);
}

/// 300 kills in a row: exactly 300 records, no duplicates, equal to the kernel's counters.
#[test]
fn storm_of_300_kills_loses_nothing() {
    require_root_memcg!();
    let _lock = kill_lock();
    const N: usize = 300;
    let cg = TestCgroup::new("oomtrace-storm", 8 * MIB).expect("cgroup");
    let dir = cg.dir.to_string_lossy().into_owned();
    let mut tracer = Tracer::start(&[]);
    let vm_before = vmstat_oom_kills();
    let mut pids = Vec::with_capacity(N);
    for _ in 0..N {
        let child = spawn_hog(&["--cgroup", &dir, "--step-kb", "4096"]);
        pids.push(child.id());
        let status = wait_child(child);
        assert_eq!(status.signal(), Some(9), "hog should be OOM-killed: {status:?}");
    }
    let vm_delta = vmstat_oom_kills() - vm_before;
    let got = tracer.wait_count(N, Duration::from_secs(30), |v| v["type"] == "oom_kill");
    let (status, lines) = tracer.stop();
    assert!(status.success());
    let kills = kills_in(&lines, &cg);
    assert_eq!(got, N, "records seen");
    assert_eq!(kills.len(), N, "records for the storm cgroup");
    let id = cg.inode();
    let no_memcg: Vec<&Value> = kills
        .iter()
        .filter(|k| k["oom_memcg"]["id"] != id)
        .copied()
        .collect();
    assert!(
        no_memcg.is_empty(),
        "records without the storm cgroup as oom_memcg: {no_memcg:?}"
    );
    assert_eq!(cg.oom_kills(), N as u64, "kernel memcg counter");
    assert_eq!(
        vm_delta, N as u64,
        "/proc/vmstat oom_kill delta (another OOM ran concurrently?)"
    );
    let mut victims: Vec<u64> = kills.iter().map(|k| num(&k["victim"]["pid"])).collect();
    victims.sort_unstable();
    victims.dedup();
    assert_eq!(victims.len(), N, "duplicate victims");
    let mut want: Vec<u64> = pids.iter().map(|&p| u64::from(p)).collect();
    want.sort_unstable();
    assert_eq!(victims, want, "every hog, and only the hogs");
    assert!(!lines.iter().any(|l| l["type"] == "lost"));
    // seq has no gaps.
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(num(&l["seq"]), i as u64, "seq gap at line {i}");
    }
}

/// Where an exact mode (fentry/kprobe: `struct oom_control`) and an inferring mode (tp_btf) both
/// run, the inferred fields of one kill must equal the exact ones.
#[test]
fn inferred_fields_match_the_exact_ones() {
    require_root_memcg!();
    let modes = attachable_modes();
    let under = attach_under_test();
    let exact = match under.as_deref() {
        Some(m @ ("fentry" | "kprobe")) => modes.iter().find(|x| **x == m),
        _ => modes.iter().find(|m| ["fentry", "kprobe"].contains(m)),
    };
    let inferring = match under.as_deref() {
        Some("tracepoint") => "tracepoint",
        _ => "tp_btf",
    };
    skip_unless!(
        exact.is_some(),
        "no exact mode (fentry/kprobe) on this kernel to compare against"
    );
    skip_unless!(
        modes.contains(&inferring),
        format!("{inferring} cannot attach on this kernel")
    );
    let _lock = kill_lock();
    let cg = TestCgroup::new("oomtrace-cmp", 32 * MIB).expect("cgroup");
    let mut a = Tracer::start(&["--attach", exact.unwrap()]);
    let mut b = Tracer::start(&["--attach", inferring]);
    let status = run_hog(&["--cgroup", &cg.dir.to_string_lossy(), "--adj", "300"]);
    assert_eq!(status.signal(), Some(9));
    let is_kill = |v: &Value| v["type"] == "oom_kill";
    let ra = a
        .wait_for(Duration::from_secs(10), is_kill)
        .expect("exact record");
    let rb = b
        .wait_for(Duration::from_secs(10), is_kill)
        .expect("inferred record");
    let _ = (a.stop(), b.stop());
    assert!(ra["inferred"].as_array().unwrap().is_empty(), "{ra}");
    assert_eq!(ra["oom_memcg"]["source"], "oom_control");
    assert_eq!(rb["oom_memcg"]["source"], "inferred");
    for f in ["constraint", "totalpages"] {
        assert_eq!(ra[f], rb[f], "{f}");
    }
    assert_eq!(ra["oom_memcg"]["id"], rb["oom_memcg"]["id"]);
    assert_eq!(ra["oom_memcg"]["path"], rb["oom_memcg"]["path"]);
    assert_eq!(
        ra["victim"]["points"], rb["victim"]["points"],
        "oom_badness inferred vs chosen_points"
    );
    if inferring == "tp_btf" {
        // The classic tracepoint's victim is what its record carries (pid only before 6.8).
        // mm.anon_thp_kb is not from the kernel's record: each tracer reads the victim's
        // smaps_rollup when its record arrives, and one may be too late (null) where the other
        // still saw it (0): compare everything else.
        let mut va = ra["victim"].clone();
        let mut vb = rb["victim"].clone();
        for v in [&mut va, &mut vb] {
            if let Some(mm) = v["mm"].as_object_mut() {
                mm.remove("anon_thp_kb");
            }
        }
        assert_eq!(va, vb);
    }
    assert_eq!(ra["allocation"]["order"], rb["allocation"]["order"]);
}

/// cgroup v2 `memory.oom.group 1` (Kubernetes >= 1.28 sets it): one OOM kills every member; each
/// gets its own `oom_kill` record and `exit` verdict, all with one `kill_id`.
#[test]
fn oom_group_members_share_one_kill_id() {
    require_root_memcg!();
    let _lock = kill_lock();
    let cg = TestCgroup::new("oomtrace-group", 64 * MIB).expect("cgroup");
    skip_unless!(cg.version == 2, "memory.oom.group exists only in cgroup v2");
    cg.write("memory.oom.group", "1");
    let dir = cg.dir.to_string_lossy().into_owned();
    let mut t = Tracer::start(&[]);
    let mut members: Vec<std::process::Child> = (0..3)
        .map(|_| spawn_hog_ready(&["--cgroup", &dir, "--mb", "12", "--hold"]))
        .collect();
    let status = run_hog(&["--cgroup", &dir]);
    assert_eq!(status.signal(), Some(9));
    let mut pids: Vec<u32> = members.iter().map(|m| m.id()).collect();
    for m in &members {
        // Not reaped until their records are out: /proc/<pid> stays for the procfs fallbacks.
        assert_eq!(
            wait_dead_unreaped(m).signal(),
            Some(9),
            "every member dies with the group"
        );
    }
    let n = t.wait_count(4, Duration::from_secs(10), |v| v["type"] == "oom_kill");
    let _ = t.wait_count(4, Duration::from_secs(5), |v| v["type"] == "exit");
    for m in &mut members {
        let _ = m.wait();
    }
    let (_, lines) = t.stop();
    assert_eq!(n, 4, "one oom_kill record per member");
    let classic = lines[0]["attach"]["mark_victim"] == "tracepoint";
    let kills: Vec<&Value> = if classic {
        // The classic record names a victim that is not the trigger by thread id only: its
        // cgroup comes from procfs, and only in this mode may it be null (docs/events.md,
        // oom_kill fields, victim.cgroup: "`tracepoint` mode with victim ≠ trigger when
        // `/proc/<tid>/cgroup` was already gone"; oomtrace takes no answer from an exiting task).
        // Find the group's records by the (inferred) OOM memcg instead, and require the cgroup
        // right or absent. The members' pids are exact (below): they are zombies until then.
        let id = cg.inode();
        let k: Vec<&Value> = lines
            .iter()
            .filter(|v| v["type"] == "oom_kill" && v["oom_memcg"]["id"] == id)
            .collect();
        for v in &k {
            let c = &v["victim"]["cgroup"];
            assert!(c.is_null() || c["id"] == id, "wrong victim cgroup {c}");
        }
        k
    } else {
        kills_in(&lines, &cg)
    };
    let ids: std::collections::BTreeSet<u64> = kills.iter().map(|k| num(&k["kill_id"])).collect();
    assert_eq!(ids.len(), 1, "one kill_id for the whole group: {ids:?}");
    let recorded: Vec<u64> = kills.iter().map(|k| num(&k["victim"]["pid"])).collect();
    pids.retain(|p| !recorded.contains(&u64::from(*p)));
    let summary: Vec<String> = lines
        .iter()
        .filter(|v| v["type"] == "oom_kill")
        .map(|v| {
            format!(
                "victim {}/{} cgroup {} oom_memcg {} kill_id {}",
                v["victim"]["pid"], v["victim"]["tid"], v["victim"]["cgroup"], v["oom_memcg"], v["kill_id"]
            )
        })
        .collect();
    assert!(
        pids.is_empty(),
        "members without a record: {pids:?}; records: {summary:?}"
    );
    let exits: Vec<&Value> = lines
        .iter()
        .filter(|v| v["type"] == "exit" && v["verdict"] == "kernel_oom")
        .collect();
    assert!(exits.len() >= 4, "an exit verdict per member");
    assert!(exits.iter().all(|e| ids.contains(&num(&e["oom"]["kill_id"]))));
}

/// A global OOM (no cgroup limit, the machine itself out of memory) is reported with
/// `constraint: global` and no `oom_memcg`. Only ever caused inside the test VM.
#[test]
fn global_oom_is_reported() {
    require_root_memcg!();
    skip_unless!(
        std::env::var_os("OOMTRACE_VM").is_some(),
        "a global OOM is only caused inside the test VM (cargo xtask vm-test)"
    );
    let _lock = kill_lock();
    // Make this test and oomtrace unattractive to the OOM killer; the hog maximally attractive.
    std::fs::write("/proc/self/oom_score_adj", "-1000").expect("set oom_score_adj");
    let mut t = Tracer::start(&[]);
    let child = spawn_hog(&["--adj", "1000"]);
    let pid = child.id();
    let mut child = child;
    assert_eq!(child.wait().unwrap().signal(), Some(9));
    let rec = t
        .wait_for(Duration::from_secs(20), |v| {
            v["type"] == "oom_kill" && v["victim"]["pid"] == pid
        })
        .expect("record for the global OOM");
    let _ = t.stop();
    std::fs::write("/proc/self/oom_score_adj", "0").ok();
    assert_eq!(rec["constraint"], "global", "{rec}");
    assert!(rec["oom_memcg"].is_null(), "{rec}");
    let report = oom_kill_line(pid).expect("kernel report");
    assert_eq!(report["constraint"], "CONSTRAINT_NONE");
}
