//! The pipeline: turns a decoded kernel record into a public event (see [`crate::event`]) —
//! names cgroups, symbolizes stacks, reads the memory breakdown, infers what the tracepoint
//! modes cannot read, groups memory.oom.group kills, gives each SIGKILL death its verdict, and
//! applies `--pid` / `--cgroup`. It reads the system (procfs, cgroupfs, binaries) but never the
//! ring buffer, and never writes: [`crate::stream`] feeds it and hands its events to a sink.

pub mod buildid;
pub mod cgroups;
pub mod filter;
pub mod kube;
pub mod memstat;
pub mod oom_kill;
pub mod python;
pub mod unwind;
pub mod ustack;
pub mod whodunit;

use oomtrace_common::flags;

use self::{cgroups::Cgroups, filter::Filter, kube::Kube, oom_kill::OomKills, whodunit::Whodunit};
use crate::{
    event::{Attach, Cgroup, Event, MemcgOomEv},
    kernel::{memcg_watch::MemcgOom, record::Record},
};

/// An event and the boot-time instant it happened at.
#[derive(Debug)]
pub struct Timed {
    pub boot_ns: u64,
    pub event: Event,
}

/// Everything between a decoded record and its event. Built complete by [`Pipeline::new`].
pub struct Pipeline {
    cgroups: Cgroups,
    kills: OomKills,
    whodunit: Whodunit,
    filter: Filter,
    /// The mode `oom_kill` records are labelled with.
    attach: Attach,
    /// signal_generate is attached, so the kernel side can tell a kill from a mark without one
    /// (`flags::KILLED`).
    kills_paired: bool,
    /// Pods and containers of the cgroups, and which limit fired.
    kube: Kube,
}

impl Pipeline {
    pub fn new(
        cgroups: Cgroups,
        kills: OomKills,
        filter: Filter,
        attach: Attach,
        kills_paired: bool,
        kube: Kube,
    ) -> Self {
        Self {
            cgroups,
            kills,
            whodunit: Whodunit::default(),
            filter,
            attach,
            kills_paired,
            kube,
        }
    }

    /// The pod and container of a cgroup path (for the metrics of memcg OOMs).
    pub fn kubernetes(&mut self, path: Option<&str>) -> Option<crate::event::Kubernetes> {
        self.kube.describe(path)
    }

    /// The name service, if names are looked up (for the metrics' expiry of gone pods).
    pub fn name_service(&self) -> Option<&kube::names::NameService> {
        self.kube.name_service()
    }

    /// Loads what the first records would otherwise wait for.
    pub fn warm_up(&mut self) {
        self.kills.warm_up();
    }

    /// The event of one record, or None when a filter or a duplicate drops it. `seq` is the
    /// sequence number the event will carry (kills are identified by their first record's).
    pub fn record(&mut self, rec: Record, seq: u64) -> Option<Timed> {
        let f = &self.filter;
        let (boot_ns, event) = match rec {
            Record::OomKill(rec) => {
                if self.kills_paired && rec.flags & flags::KILLED == 0 {
                    // The kernel marked a task that was already dying (it was killed before, or is
                    // exiting) as an OOM victim so that it may use memory reserves, and killed
                    // nothing: no kill for the kernel's counters, none for ours.
                    log::debug!(
                        "tid {} ({}) marked as an OOM victim without a kill (already dying)",
                        rec.victim.tid,
                        crate::kernel::record::comm(&rec.victim.comm)
                    );
                    return None;
                }
                let mut ev = self.kills.build(&rec, seq, self.attach, &mut self.cgroups);
                self.kube.annotate(&mut ev);
                self.whodunit.note_oom_kill(&ev, seq, rec.ts_boot_ns);
                let keep = !f.active() || {
                    let oom_memcg = ev.oom_memcg.as_ref().map(|m| Cgroup {
                        id: m.id,
                        path: m.path.clone(),
                    });
                    f.matches(
                        &[ev.victim.pid, Some(ev.trigger.pid)],
                        &[
                            ev.victim.cgroup.as_ref(),
                            ev.trigger.cgroup.as_ref(),
                            oom_memcg.as_ref(),
                        ],
                    )
                };
                (rec.ts_boot_ns, keep.then(|| Event::OomKill(Box::new(ev))))
            }
            Record::Signal(rec) => {
                let ev = self.whodunit.signal(&rec, seq, &mut self.cgroups);
                let keep = f.matches(
                    &[ev.target.pid, Some(ev.target.tid), ev.sender.process.pid],
                    &[ev.target.cgroup.as_ref(), ev.sender.process.cgroup.as_ref()],
                );
                (rec.ts_boot_ns, keep.then(|| Event::Signal(Box::new(ev))))
            }
            Record::Reap(rec) => {
                let ev = self.whodunit.reap(&rec);
                let keep = f.matches(&[ev.pid, Some(ev.tid)], &[]);
                (rec.ts_boot_ns, keep.then_some(Event::OomReap(ev)))
            }
            Record::Exit(rec) => {
                if self.whodunit.duplicate_exit(&rec) {
                    return None;
                }
                let ev = self.whodunit.exit(&rec, &mut self.cgroups);
                let oom_cg = ev.oom.as_ref().and_then(|o| o.oom_memcg.as_ref());
                let keep = f.matches(&[ev.process.pid], &[ev.process.cgroup.as_ref(), oom_cg]);
                (rec.ts_boot_ns, keep.then(|| Event::Exit(Box::new(ev))))
            }
        };
        event.map(|event| Timed { boot_ns, event })
    }

    /// The event of one memcg OOM notification, or None when a filter drops it.
    pub fn memcg_oom(&mut self, m: MemcgOom) -> Option<Timed> {
        let ev = MemcgOomEv {
            memcg: Cgroup {
                id: m.id,
                path: Some(m.path),
            },
            source: m.source,
            under_oom: m.under_oom,
            oom_kill_disable: m.oom_kill_disable,
            oom_kills: m.oom_kills,
            oom_events: m.oom_events,
        };
        self.filter.matches(&[], &[Some(&ev.memcg)]).then_some(Timed {
            boot_ns: m.ts_boot_ns,
            event: Event::MemcgOom(ev),
        })
    }
}
