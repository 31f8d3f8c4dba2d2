//! The text format: one human line per event (`--format text`). Kernel strings (comm, cgroup
//! names, symbol names) are bytes anyone can choose, so control characters are escaped: a
//! newline in one must not start a line of its own.

use crate::event::{Cgroup, Event, ExitEv, Lost, MemcgOomEv, OomKill, Verdict};

/// The text of one event, or None for events the text format leaves out.
pub fn render(ev: &Event) -> Option<String> {
    match ev {
        Event::OomKill(k) => Some(oom_kill(k)),
        Event::Exit(e) => Some(escape_controls(&exit(e))),
        Event::MemcgOom(m) => Some(memcg_oom(m)),
        Event::Lost(l) => Some(lost(l)),
        Event::Start(_) | Event::Signal(_) | Event::OomReap(_) | Event::Stop(_) => None,
    }
}

/// The text form of a `lost` line.
pub fn lost(l: &Lost) -> String {
    format!(
        "lost {} record(s): {} ({} since start)",
        l.count, l.reason, l.total
    )
}

fn memcg_oom(ev: &MemcgOomEv) -> String {
    format!(
        "memcg_oom {} hit its limit and entered OOM handling{}; {} OOM kill(s) in it so far",
        escape_controls(ev.memcg.path.as_deref().unwrap_or("?")),
        if ev.oom_kill_disable == Some(true) {
            " (oom_kill_disable: tasks wait, nothing is killed)"
        } else {
            ""
        },
        ev.oom_kills.map_or("?".to_owned(), |k| k.to_string()),
    )
}

fn oom_kill(ev: &OomKill) -> String {
    let v = &ev.victim;
    // Saturating: a corrupt record may carry any counter; the line must still be written.
    let kb = |x: Option<u64>| x.map_or("?".to_owned(), |k| human_bytes(k.saturating_mul(1024)));
    let cg = |c: &Option<Cgroup>| {
        c.as_ref()
            .map(|c| c.path.clone().unwrap_or_else(|| format!("id:{}", c.id)))
            .unwrap_or_else(|| "?".to_owned())
    };
    let limit = match &ev.oom_memcg {
        Some(m) => format!(
            "memcg limit {} of {}",
            m.limit_bytes.map_or("?".to_owned(), human_bytes),
            m.path.clone().unwrap_or_else(|| format!("id:{}", m.id))
        ),
        None => format!("{} OOM", ev.constraint),
    };
    let overcommit =
        v.mm.as_ref()
            .and_then(|m| m.overcommit_ratio)
            .map_or(String::new(), |r| format!(" (overcommit {r:.2}x)"));
    let mut line = format!(
        "oom_kill pid {} ({}) in {} killed; trigger pid {} ({}) in {}; {}; rss anon {} file {} shmem {}, total-vm {}{overcommit}",
        v.pid.unwrap_or(v.tid),
        v.comm,
        cg(&v.cgroup),
        ev.trigger.pid,
        ev.trigger.comm,
        cg(&ev.trigger.cgroup),
        limit,
        kb(v.anon_rss_kb),
        kb(v.file_rss_kb),
        kb(v.shmem_rss_kb),
        kb(v.total_vm_kb),
    );
    // Kernel strings (comm, cgroup names, symbol names) are bytes anyone can choose: a newline
    // in one must not start a line of its own.
    line = escape_controls(&line);
    line.push_str("\n    ");
    line.push_str(&escape_controls(&allocation_line(ev)));
    line
}

/// `order 0 (4.0 KiB) page fault (anonymous) in grow_buffer (hog.rs:42); memcg 64.0 MiB limit: anon 60.1 MiB, anon_thp 0 B, file 0.3 MiB`
fn allocation_line(ev: &OomKill) -> String {
    let a = &ev.allocation;
    let size = a
        .size_bytes
        .map_or(String::new(), |s| format!(" ({})", human_bytes(s)));
    let order = a
        .order
        .map_or("order ?".to_owned(), |o| format!("order {o}{size}"));
    let path = match a.path_detail {
        Some(d) => format!("{} ({d})", a.path.as_str().replace('_', " ")),
        None => a.path.as_str().replace('_', " "),
    };
    let place = a
        .user_stack
        .as_ref()
        .and_then(|u| u.frames.iter().find(|f| f.function.is_some()))
        .map_or(String::new(), |f| {
            let loc = match (&f.file, f.line) {
                (Some(file), Some(line)) => {
                    let base = file.rsplit('/').next().unwrap_or(file);
                    format!(" ({base}:{line})")
                }
                _ => String::new(),
            };
            format!(" in {}{loc}", f.function.as_deref().unwrap_or("?"))
        });
    let mut out = format!("{order} {path}{place}");
    if let Some(mem) = ev.oom_memcg.as_ref().and_then(|m| m.memory.as_ref()) {
        let b = |x: Option<u64>| x.map_or("?".to_owned(), human_bytes);
        let limit = mem.limit_bytes.map_or("no".to_owned(), human_bytes);
        match &mem.stat {
            Some(s) => out.push_str(&format!(
                "; memcg {limit} limit: anon {}, anon_thp {}, file {}, shmem {}",
                b(s.anon),
                b(s.anon_thp),
                b(s.file),
                b(s.shmem)
            )),
            None => out.push_str(&format!(
                "; memcg {limit} limit, usage {}",
                human_bytes(mem.usage_bytes)
            )),
        }
    }
    out
}

/// `pid 4242 (python3) died of SIGKILL from ...`: the verdict as one sentence.
pub fn exit(ev: &ExitEv) -> String {
    let p = &ev.process;
    let who = format!("pid {} ({})", p.pid.unwrap_or(p.tid), p.comm);
    let from = match (ev.verdict, &ev.oom, &ev.killer) {
        (Verdict::KernelOom, Some(o), _) => {
            let scope = match (&o.oom_memcg, o.constraint) {
                (Some(m), _) => format!(
                    "the kernel memcg OOM killer (limit of {} hit",
                    m.path.clone().unwrap_or_else(|| format!("cgroup id {}", m.id))
                ),
                (None, c) => format!("the kernel {c} OOM killer (out of memory"),
            };
            let by = o.trigger.as_ref().map_or(String::new(), |t| {
                format!(" by pid {} ({})", t.pid.unwrap_or(t.tid), t.comm)
            });
            let shared = if o.shared_mm {
                ", shared the victim's memory"
            } else {
                ""
            };
            format!("{scope}{by}{shared})")
        }
        (Verdict::Process, _, Some(k)) => {
            let exe = k
                .exe_path
                .as_deref()
                .or(k.exe.as_deref())
                .map_or(String::new(), |e| format!(", {e}"));
            format!(
                "pid {} ({}{exe}, uid {})",
                k.process.pid.unwrap_or(k.process.tid),
                k.process.comm,
                k.uid
            )
        }
        (Verdict::KernelOther, _, Some(k)) => format!(
            "the kernel, not the OOM killer (in pid {} ({}))",
            k.process.pid.unwrap_or(k.process.tid),
            k.process.comm
        ),
        _ => "an unknown sender".to_owned(),
    };
    format!(
        "exit {who} died of {} from {from}; exit code {}",
        ev.signal, ev.exit_code
    )
}

/// Text-format safety: control characters (newline, tab, escape, …) in kernel strings — a
/// `comm`, a cgroup name, a symbol — are shown escaped (`\n`, `\u{1b}`) so that they can
/// neither start a line of their own nor drive the terminal. JSON escapes them itself.
pub fn escape_controls(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// Bytes as a short human size: "64.0 MiB".
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
