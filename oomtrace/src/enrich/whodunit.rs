//! One verdict per death. Joins three kernel streams by process: the signals generated for it
//! (`signal`), the OOM killer's choice of it (`oom_kill`), and its exit (`exit`), and names the
//! killer: the kernel OOM killer, a process (with its name and executable), other kernel code, or
//! unknown when nothing was seen.

use std::{collections::HashMap, fs};

use oomtrace_common::{
    Exit, Signal,
    signal::{
        self as sigs, SI_ASYNCIO, SI_ASYNCNL, SI_DETHREAD, SI_KERNEL, SI_MESGQ, SI_QUEUE, SI_SIGIO, SI_TIMER,
        SI_TKILL, SI_USER, SIGKILL,
    },
};

use crate::{
    enrich::cgroups::Cgroups,
    event::{self, Cgroup, ExitEv, OomCause, Process, ReapPhase, Sender, SignalEv, SignalResult, Verdict},
    kernel::record::comm,
};

/// The OOM killer's SIGKILLs to processes sharing the victim's mm follow its oom_kill record on the
/// same thread within the same __oom_kill_process() call (mm/oom_kill.c, v6.18).
const SHARED_MM_WINDOW_NS: u64 = 100_000_000;
/// Forget what we know of a process that has not exited after this long (a kill that never
/// completed, or a pid that was never a target of ours).
const PENDING_TTL_NS: u64 = 600_000_000_000;
const PENDING_MAX: usize = 16_384;

pub fn signal_name(sig: i32) -> String {
    const NAMES: [&str; 32] = [
        "0",
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    usize::try_from(sig)
        .ok()
        .and_then(|i| NAMES.get(i))
        .map_or_else(|| format!("SIG{sig}"), |s| (*s).to_owned())
}

/// `si_code` values common to all signals (include/uapi/asm-generic/siginfo.h, v6.18).
pub fn code_name(code: i32) -> String {
    match code {
        SI_USER => "SI_USER".into(),
        SI_KERNEL => "SI_KERNEL".into(),
        SI_QUEUE => "SI_QUEUE".into(),
        SI_TIMER => "SI_TIMER".into(),
        SI_MESGQ => "SI_MESGQ".into(),
        SI_ASYNCIO => "SI_ASYNCIO".into(),
        SI_SIGIO => "SI_SIGIO".into(),
        SI_TKILL => "SI_TKILL".into(),
        SI_DETHREAD => "SI_DETHREAD".into(),
        SI_ASYNCNL => "SI_ASYNCNL".into(),
        c => c.to_string(),
    }
}

/// `enum trace_signal_deliver` (include/trace/events/signal.h, v6.18).
pub fn result_name(r: i32) -> SignalResult {
    match r {
        0 => SignalResult::Delivered,
        1 => SignalResult::Ignored,
        2 => SignalResult::AlreadyPending,
        3 => SignalResult::OverflowFail,
        _ => SignalResult::LoseInfo,
    }
}

#[derive(Clone, Debug)]
struct SigNote {
    seq: u64,
    sig: i32,
    code: i32,
    result: i32,
    sender: Sender,
}

#[derive(Clone, Debug, Default)]
struct Pending {
    since_ns: u64,
    signals: Vec<SigNote>,
    oom: Option<OomCause>,
}

#[derive(Clone, Debug)]
struct LastOom {
    trigger_tid: u32,
    victim_tgid: Option<u32>,
    ts_ns: u64,
    cause: OomCause,
}

#[derive(Debug, Default)]
pub struct Whodunit {
    pending: HashMap<u32, Pending>,
    last_oom: Option<LastOom>,
    recent_exits: HashMap<u32, u64>,
    /// Victim tid and tgid → (kill_id, tgid, comm, when), for the reaper records that follow.
    victims: HashMap<u32, (u64, Option<u32>, String, u64)>,
}

/// Window in which a second exit record of the same tgid is a duplicate, not a reused pid.
const EXIT_DEDUP_NS: u64 = 1_000_000_000;

fn read_proc(pid: u32) -> (Option<String>, Option<String>) {
    let exe = fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .filter(|c| !c.is_empty())
        .map(|c| {
            let c = c.strip_suffix(&[0]).unwrap_or(&c);
            String::from_utf8_lossy(c).replace('\0', " ")
        });
    (exe, cmdline)
}

impl Whodunit {
    fn entry(&mut self, tgid: u32, now: u64) -> &mut Pending {
        if self.pending.len() >= PENDING_MAX {
            self.pending
                .retain(|_, p| now.saturating_sub(p.since_ns) < PENDING_TTL_NS);
            if self.pending.len() >= PENDING_MAX {
                self.pending.clear();
            }
        }
        self.pending.entry(tgid).or_insert_with(|| Pending {
            since_ns: now,
            ..Default::default()
        })
    }

    /// Remembers that the OOM killer chose this victim.
    pub fn note_oom_kill(&mut self, ev: &event::OomKill, seq: u64, ts_ns: u64) {
        let cause = OomCause {
            kill_id: ev.kill_id,
            oom_kill_seq: Some(seq),
            oom_memcg: ev.oom_memcg.as_ref().map(|m| Cgroup {
                id: m.id,
                path: m.path.clone(),
            }),
            constraint: ev.constraint,
            trigger: Some(Process {
                pid: Some(ev.trigger.pid),
                tid: ev.trigger.tid,
                comm: ev.trigger.comm.clone(),
                cgroup: ev.trigger.cgroup.clone(),
            }),
            shared_mm: false,
        };
        let key = ev.victim.pid.unwrap_or(ev.victim.tid);
        self.entry(key, ts_ns).oom = Some(cause.clone());
        if self.victims.len() >= PENDING_MAX {
            self.victims
                .retain(|_, v| ts_ns.saturating_sub(v.3) < PENDING_TTL_NS);
        }
        let victim = (ev.kill_id, ev.victim.pid, ev.victim.comm.clone(), ts_ns);
        self.victims.insert(ev.victim.tid, victim.clone());
        if let Some(pid) = ev.victim.pid {
            self.victims.insert(pid, victim);
        }
        self.last_oom = Some(LastOom {
            trigger_tid: ev.trigger.tid,
            victim_tgid: ev.victim.pid,
            ts_ns,
            cause,
        });
    }

    pub fn signal(&mut self, rec: &Signal, seq: u64, cgroups: &mut Cgroups) -> SignalEv {
        let s = &rec.sender;
        let kernel = rec.code == SI_KERNEL;
        let (exe_path, cmdline) = if kernel { (None, None) } else { read_proc(s.tgid) };
        let exe = comm(&rec.sender_exe);
        let sender = Sender {
            process: Process {
                pid: Some(s.tgid),
                tid: s.tid,
                comm: comm(&s.comm),
                cgroup: cgroups.name(s.memcg_id, s.tgid),
            },
            uid: rec.sender_uid,
            exe: (!exe.is_empty()).then_some(exe),
            exe_path,
            cmdline,
        };
        let t = &rec.target;
        // Classic tracepoint and a thread the tid map missed: /proc, while the thread lives.
        let target_tgid = if t.tgid != 0 {
            Some(t.tgid)
        } else {
            crate::enrich::oom_kill::tgid_of(t.tid)
        };
        let target = Process {
            pid: target_tgid,
            tid: t.tid,
            comm: comm(&t.comm),
            cgroup: cgroups.name(t.memcg_id, t.tgid),
        };
        let key = target_tgid.unwrap_or(t.tid);

        // The OOM killer's SIGKILL to a process that shares the victim's memory.
        let mut kill_id = None;
        if kernel
            && rec.sig == SIGKILL
            && let Some(last) = &self.last_oom
        {
            let fresh = rec.ts_boot_ns.saturating_sub(last.ts_ns) < SHARED_MM_WINDOW_NS;
            if fresh && last.trigger_tid == s.tid && last.victim_tgid != Some(key) {
                kill_id = Some(last.cause.kill_id);
                let cause = OomCause {
                    oom_kill_seq: None,
                    shared_mm: true,
                    ..last.cause.clone()
                };
                self.entry(key, rec.ts_boot_ns).oom = Some(cause);
            }
        }
        let note = SigNote {
            seq,
            sig: rec.sig,
            code: rec.code,
            result: rec.result,
            sender: sender.clone(),
        };
        self.entry(key, rec.ts_boot_ns).signals.push(note);
        SignalEv {
            sig: rec.sig,
            signal: signal_name(rec.sig),
            sender,
            target,
            code: code_name(rec.code),
            code_value: rec.code,
            group: rec.group != 0,
            result: result_name(rec.result),
            kill_id,
        }
    }

    /// The verdict for a process that died of a signal.
    /// The reaper's progress on a victim, linked to its kill.
    pub fn reap(&mut self, rec: &oomtrace_common::Reap) -> event::OomReap {
        use oomtrace_common::reap_phase;
        let v = self.victims.get(&rec.pid);
        event::OomReap {
            tid: rec.pid,
            pid: v.and_then(|v| v.1),
            comm: v.map(|v| v.2.clone()),
            phase: match rec.phase {
                reap_phase::WAKE => ReapPhase::Wake,
                reap_phase::START => ReapPhase::Start,
                reap_phase::FINISH => ReapPhase::Finish,
                _ => ReapPhase::Skip,
            },
            kill_id: v.map(|v| v.0),
        }
    }

    /// True if an exit for this thread group was already reported: before 6.16 two threads of
    /// one group dying at once can both see `signal->live == 0` (kernel/exit.c).
    pub fn duplicate_exit(&mut self, rec: &Exit) -> bool {
        let tgid = rec.task.tgid;
        let now = rec.ts_boot_ns;
        self.recent_exits
            .retain(|_, t| now.saturating_sub(*t) < EXIT_DEDUP_NS);
        self.recent_exits.insert(tgid, now).is_some()
    }

    pub fn exit(&mut self, rec: &Exit, cgroups: &mut Cgroups) -> ExitEv {
        let t = &rec.task;
        let sig = sigs::exit_signal(rec.exit_code);
        let pending = self
            .pending
            .remove(&t.tgid)
            .or_else(|| self.pending.remove(&t.tid));
        let process = Process {
            pid: Some(t.tgid),
            tid: t.tid,
            comm: comm(&t.comm),
            cgroup: cgroups.name(t.memcg_id, 0),
        };
        let runtime_ns = (rec.start_boot_ns != 0).then(|| rec.ts_boot_ns.saturating_sub(rec.start_boot_ns));
        let mut ev = ExitEv {
            process,
            exit_signal: sig,
            signal: signal_name(sig),
            core_dumped: sigs::core_dumped(rec.exit_code),
            exit_code: 128 + sig,
            runtime_ns,
            verdict: Verdict::Unknown,
            oom: None,
            killer: None,
            signal_code: None,
            signal_seq: None,
            reason: None,
        };
        let Some(p) = pending else {
            ev.reason = Some(format!(
                "no {} for this process was seen while oomtrace ran (sent before it started, or lost)",
                ev.signal
            ));
            return ev;
        };
        // The signal that killed it. SIGKILL: the first one delivered (later ones find the group
        // already exiting). A catchable signal: the last one delivered (earlier ones may have
        // been handled).
        let delivered = |s: &&SigNote| s.sig == sig && s.result == 0;
        let same = |s: &&SigNote| s.sig == sig;
        let fatal = if sig == SIGKILL {
            p.signals
                .iter()
                .find(delivered)
                .or_else(|| p.signals.iter().find(same))
        } else {
            p.signals
                .iter()
                .rev()
                .find(delivered)
                .or_else(|| p.signals.iter().rev().find(same))
        }
        .cloned();
        if let Some(oom) = p.oom {
            ev.verdict = Verdict::KernelOom;
            ev.oom = Some(oom);
            if let Some(f) = fatal.filter(|f| f.code == SI_KERNEL) {
                ev.signal_seq = Some(f.seq);
                ev.signal_code = Some(code_name(f.code));
            }
            return ev;
        }
        match fatal {
            Some(f) => {
                ev.signal_seq = Some(f.seq);
                ev.signal_code = Some(code_name(f.code));
                // SI_KERNEL, or a positive fault code (SEGV_MAPERR, BUS_ADRALN...): the kernel.
                if f.code == SI_KERNEL || f.code > 0 {
                    ev.verdict = Verdict::KernelOther;
                    ev.reason = Some(format!(
                        "{} generated by the kernel (SI_KERNEL) in the context of pid {} ({}), not by the OOM killer: \
                         e.g. a seccomp kill, a fatal fault, or a coredump/exec teardown",
                        ev.signal,
                        f.sender.process.pid.unwrap_or(f.sender.process.tid),
                        f.sender.process.comm
                    ));
                } else {
                    ev.verdict = Verdict::Process;
                    if f.code != SI_USER {
                        ev.reason = Some(format!("sent with {}", code_name(f.code)));
                    }
                }
                ev.killer = Some(f.sender);
            }
            None => {
                ev.reason = Some(format!(
                    "no {} for this process was seen while oomtrace ran",
                    ev.signal
                ));
            }
        }
        ev
    }
}

#[cfg(test)]
mod tests {
    use oomtrace_common::{RecordKind, TaskIds, VictimSource};

    use super::*;
    use crate::event::Attach;
    use crate::{
        enrich::oom_kill::{Machine, OomKills},
        kernel::{cgroup::Resolver, record::tests::sample},
    };

    fn cgroups() -> Cgroups {
        Cgroups::new(Resolver::new(None))
    }

    fn kills() -> OomKills {
        let machine = Machine {
            page_size: 4096,
            ram_pages: 1 << 20,
            swap_pages: 0,
        };
        OomKills::new(
            machine,
            None,
            crate::enrich::oom_kill::KernelSymbols::Ready(None),
            None,
        )
    }

    fn ids(tgid: u32, tid: u32, name: &str) -> TaskIds {
        let mut comm = [0u8; 16];
        comm[..name.len()].copy_from_slice(name.as_bytes());
        TaskIds {
            tgid,
            tid,
            memcg_id: 0,
            comm,
        }
    }

    fn signal(sender: TaskIds, target: TaskIds, code: i32, ts: u64) -> Signal {
        Signal {
            kind: RecordKind::Signal as u8,
            source: VictimSource::TpBtf as u8,
            _pad0: [0; 2],
            sig: 9,
            ts_boot_ns: ts,
            sender,
            target,
            sender_uid: 0,
            code,
            group: 1,
            result: 0,
            sender_exe: [0; 32],
        }
    }

    fn exit(task: TaskIds, ts: u64) -> Exit {
        Exit {
            kind: RecordKind::Exit as u8,
            _pad0: [0; 3],
            exit_code: 9,
            ts_boot_ns: ts,
            task,
            start_boot_ns: 1,
        }
    }

    #[test]
    fn user_kill_names_the_sender() {
        let mut en = cgroups();
        let mut w = Whodunit::default();
        let s = w.signal(
            &signal(
                ids(4_000_000, 4_000_000, "the-butler"),
                ids(77, 77, "victim"),
                SI_USER,
                10,
            ),
            3,
            &mut en,
        );
        assert_eq!(
            (s.code.as_str(), s.result, s.group),
            ("SI_USER", SignalResult::Delivered, true)
        );
        let e = w.exit(&exit(ids(77, 77, "victim"), 20), &mut en);
        assert_eq!(e.verdict, Verdict::Process);
        assert_eq!(e.killer.as_ref().unwrap().process.comm, "the-butler");
        assert_eq!(
            (e.exit_code, e.signal_seq, e.runtime_ns),
            (137, Some(3), Some(19))
        );
        assert!(
            crate::sink::text::exit(&e).contains("died of SIGKILL from pid 4000000 (the-butler"),
            "{}",
            crate::sink::text::exit(&e)
        );
        // the state is gone after the exit: a second exit of the same pid is unknown
        assert_eq!(
            w.exit(&exit(ids(77, 77, "victim"), 30), &mut en).verdict,
            Verdict::Unknown
        );
    }

    #[test]
    fn oom_kill_wins_over_its_own_si_kernel_signal_and_covers_shared_mm() {
        let mut en = cgroups();
        let mut w = Whodunit::default();
        let rec = sample(); // victim tgid 100, trigger 200
        let trigger = ids(200, 200, "trigger");
        w.signal(
            &signal(trigger, ids(100, 100, "hog"), SI_KERNEL, 1_000),
            1,
            &mut en,
        );
        let ev = kills().build(&rec, 2, Attach::TpBtf, &mut en);
        w.note_oom_kill(&ev, 2, 1_100);
        // The OOM killer then kills a process sharing the victim's mm.
        let shared = w.signal(
            &signal(trigger, ids(300, 300, "sharer"), SI_KERNEL, 1_200),
            3,
            &mut en,
        );
        assert_eq!(shared.kill_id, Some(2));
        let v = w.exit(&exit(ids(100, 100, "hog"), 5_000), &mut en);
        assert_eq!(v.verdict, Verdict::KernelOom);
        assert_eq!(v.oom.as_ref().unwrap().kill_id, 2);
        assert_eq!(v.oom.as_ref().unwrap().oom_kill_seq, Some(2));
        assert_eq!(v.signal_seq, Some(1));
        let s = w.exit(&exit(ids(300, 300, "sharer"), 5_000), &mut en);
        assert_eq!(s.verdict, Verdict::KernelOom);
        assert!(s.oom.as_ref().unwrap().shared_mm);
        assert!(
            crate::sink::text::exit(&v).contains("memcg OOM killer"),
            "{}",
            crate::sink::text::exit(&v)
        );
    }

    #[test]
    fn kernel_signal_without_oom_and_nothing_seen() {
        let mut en = cgroups();
        let mut w = Whodunit::default();
        // Much later than any OOM: not linked to it.
        w.signal(&signal(ids(5, 5, "x"), ids(6, 6, "y"), SI_KERNEL, 10), 1, &mut en);
        assert_eq!(
            w.exit(&exit(ids(6, 6, "y"), 20), &mut en).verdict,
            Verdict::KernelOther
        );
        let u = w.exit(&exit(ids(8, 8, "z"), 20), &mut en);
        assert_eq!(u.verdict, Verdict::Unknown);
        assert!(u.reason.unwrap().contains("no SIGKILL"));
    }

    #[test]
    fn reaper_records_name_their_kill() {
        let mut en = cgroups();
        let mut w = Whodunit::default();
        let ev = kills().build(&sample(), 4, Attach::TpBtf, &mut en); // victim tgid 100, tid 101
        w.note_oom_kill(&ev, 4, 1_000);
        let r = w.reap(&oomtrace_common::Reap {
            kind: RecordKind::Reap as u8,
            phase: oomtrace_common::reap_phase::SKIP,
            _pad0: [0; 2],
            pid: 101,
            ts_boot_ns: 3_000,
        });
        assert_eq!((r.phase, r.kill_id, r.pid), (ReapPhase::Skip, Some(4), Some(100)));
        assert_eq!(r.comm.as_deref(), Some("hog"));
        let unknown = w.reap(&oomtrace_common::Reap {
            pid: 999,
            ..oomtrace_common::Reap {
                kind: RecordKind::Reap as u8,
                phase: oomtrace_common::reap_phase::WAKE,
                _pad0: [0; 2],
                pid: 0,
                ts_boot_ns: 0,
            }
        });
        assert_eq!((unknown.phase, unknown.kill_id), (ReapPhase::Wake, None));
    }

    #[test]
    fn names() {
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(15), "SIGTERM");
        assert_eq!(signal_name(64), "SIG64");
        assert_eq!(code_name(-6), "SI_TKILL");
        assert_eq!(code_name(3), "3");
        assert_eq!(result_name(2), SignalResult::AlreadyPending);
    }
}
