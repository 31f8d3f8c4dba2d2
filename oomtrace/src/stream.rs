//! The pipeline thread: where one kernel record becomes one line of the stream.
//!
//! ```text
//!  kernel (eBPF) ──ring buffer──> run's event loop ──bounded queue──> Stream (this thread)
//!                                 (reads, never waits)                 decode   kernel::record
//!  memcg notifications ──────────────────────────────────────────────> enrich   enrich::Pipeline
//!                                                                      write    sink::Sink ──> writer thread
//! ```
//!
//! The event loop only empties the kernel's ring buffer into a bounded queue, so slow work here
//! (a cold symbolization, cgroupfs reads) never holds up the ring buffer; records that find the
//! queue full are counted and reported as `lost` (reason `pipeline_backpressure`). Order is kept:
//! one thread numbers and writes every line in arrival order.

use std::{
    collections::HashMap,
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use crate::{
    enrich::{Pipeline, Timed},
    event::{Event, EventType, Lost, LostReason, Start, Stop, StopReason},
    kernel::{
        clock::Clock,
        memcg_watch::MemcgOom,
        record::{self},
    },
    queue,
    sink::{
        Sink,
        metrics::{KillLabels, Metrics, scope_of_kill},
    },
};

/// What the event loop feeds the pipeline thread.
pub enum Input {
    /// One ring-buffer record, as the kernel wrote it.
    Record(Box<[u8]>),
    MemcgOom(MemcgOom),
    /// The 1 s tick (and after each ring-buffer drain): report losses, refresh the clock.
    /// `ring_lost` is the kernel's count of records it could not reserve room for, since start.
    Tick {
        ring_lost: u64,
    },
    /// Write the last `lost` lines and the `stop` line, and end.
    Stop {
        ring_lost: u64,
    },
}

/// The most bytes of records waiting for the pipeline thread: about 1,600 `oom_kill` records
/// (the default ring buffer holds ~380), enough for a multi-second stall of a cold start.
pub const PIPELINE_QUEUE_BYTES: usize = 4 << 20;

/// What the pipeline thread hands back when it ends.
pub struct Ended {
    pub sink: Sink,
    pub oom_kills: u64,
}

/// How a pipeline thread is built (on the thread itself: the symbolizer is not `Send`).
pub struct Parts {
    pub sink: Sink,
    pub start: Start,
    pub build: Box<dyn FnOnce() -> Pipeline + Send>,
    /// `--metrics`: counts of what the stream carries.
    pub metrics: Option<Arc<Metrics>>,
}

/// Starts the pipeline thread; it writes the `start` line first.
pub fn spawn(parts: Parts, rx: queue::Receiver<Input>) -> Result<thread::JoinHandle<Ended>> {
    thread::Builder::new()
        .name("oomtrace-pipeline".into())
        .spawn(move || {
            let Parts {
                mut sink,
                start,
                build,
                metrics,
            } = parts;
            sink.emit(Clock::now_boot_ns(), &Event::Start(Box::new(start)));
            let mut stream = Stream::new(sink, build(), metrics);
            stream.run(&rx);
            Ended {
                oom_kills: stream.oom_kills,
                sink: stream.sink,
            }
        })
        .context("failed to start the pipeline thread")
}

/// Counts of one loss reason: how many were lost, how many a `lost` line has reported.
#[derive(Default)]
struct Losses {
    lost: u64,
    reported: u64,
}

struct Stream {
    sink: Sink,
    pipeline: Pipeline,
    oom_kills: u64,
    ring: Losses,
    decode: Losses,
    queue: Losses,
    metrics: Option<Arc<Metrics>>,
    memcg_ooms: MemcgOoms,
    /// When the metrics of gone pods were last expired.
    expired: Instant,
}

/// How often the metrics of pods that are gone are looked for.
const EXPIRE_INTERVAL: Duration = Duration::from_secs(60);

impl Stream {
    fn new(sink: Sink, pipeline: Pipeline, metrics: Option<Arc<Metrics>>) -> Self {
        Self {
            sink,
            pipeline,
            oom_kills: 0,
            ring: Losses::default(),
            decode: Losses::default(),
            queue: Losses::default(),
            metrics,
            memcg_ooms: MemcgOoms::default(),
            expired: Instant::now(),
        }
    }

    fn run(&mut self, rx: &queue::Receiver<Input>) {
        let mut warm = false;
        loop {
            // The first idle moment loads what the first records would otherwise wait for
            // (kernel symbols, the C library's symbols); a record that is already waiting goes
            // first: its trigger's memory map may be about to vanish.
            if !warm && rx.is_empty() {
                self.pipeline.warm_up();
                crate::trim_heap();
                warm = true;
            }
            let Some(input) = rx.recv() else { return };
            match input {
                Input::Record(bytes) => self.record(&bytes),
                Input::MemcgOom(m) => {
                    self.sink.backlogged();
                    let t = self.pipeline.memcg_oom(m);
                    self.emit(t);
                }
                Input::Tick { ring_lost } => self.tick(ring_lost, rx.refused()),
                Input::Stop { ring_lost } => return self.stop(ring_lost, rx.refused()),
            }
        }
    }

    /// One kernel record, from the ring buffer to its line.
    fn record(&mut self, bytes: &[u8]) {
        // Before a record takes its seq: a drained output first gets the `lost` line that closes
        // the hole of the records dropped while it was full.
        self.sink.backlogged();
        match record::decode(bytes) {
            Ok(rec) => {
                let event = self.pipeline.record(rec, self.sink.next_seq());
                self.emit(event);
            }
            Err(e) => {
                log::warn!("dropping an undecodable record: {e:#}");
                self.decode.lost += 1;
                if !self.sink.backlogged() {
                    self.report(LostReason::DecodeError);
                }
            }
        }
    }

    fn emit(&mut self, t: Option<Timed>) {
        let Some(t) = t else { return };
        // The metrics count what the kernel did, also when the output drops the line.
        self.count(&t.event);
        if self.sink.emit(t.boot_ns, &t.event) && t.event.event_type() == EventType::OomKill {
            self.oom_kills += 1;
        }
    }

    fn count(&mut self, event: &Event) {
        let Some(m) = &self.metrics else { return };
        match event {
            Event::OomKill(k) => {
                m.record_kill(&KillLabels::new(scope_of_kill(k), k.victim.kubernetes.as_ref()));
                if let Some(memcg) = &k.oom_memcg {
                    self.memcg_ooms.kill(memcg.id);
                }
            }
            Event::Exit(e) if e.exit_signal == libc::SIGKILL => m.record_sigkill_exit(e.verdict.as_str()),
            Event::MemcgOom(o) => {
                let path = o.memcg.path.as_deref();
                let scope = path.map_or(crate::event::Scope::Other, crate::event::Scope::of_memcg);
                let labels = KillLabels::new(scope, self.pipeline.kubernetes(path).as_ref());
                // v1 notifies once per OOM; v2 says how many OOMs the notification covers.
                self.memcg_ooms.oom(o.memcg.id, o.oom_events.unwrap_or(1), labels);
            }
            _ => {}
        }
    }

    /// Writes a `lost` line for each reason whose count grew. While the output is backlogged
    /// the lines wait (the counts keep growing) so that they are never themselves dropped.
    fn tick(&mut self, ring_lost: u64, queue_refused: u64) {
        self.sink.refresh_clock();
        if let Some(m) = &self.metrics {
            let now = Instant::now();
            for (labels, n) in self.memcg_ooms.settled(now) {
                for _ in 0..n {
                    m.record_memcg_oom_without_kill(&labels);
                }
            }
            if now.duration_since(self.expired) >= EXPIRE_INTERVAL {
                self.expired = now;
                let names = self.pipeline.name_service();
                m.expire(now, |ns, pod| names.is_some_and(|n| n.knows_pod_named(ns, pod)));
            }
        }
        if self.sink.drained_after_filling() {
            crate::trim_heap();
        }
        if !self.sink.backlogged() {
            self.report_all(ring_lost, queue_refused);
        }
    }

    fn report_all(&mut self, ring_lost: u64, queue_refused: u64) {
        self.ring.lost = self.ring.lost.max(ring_lost);
        self.queue.lost = self.queue.lost.max(queue_refused);
        for reason in [
            LostReason::RingBufferFull,
            LostReason::PipelineBackpressure,
            LostReason::DecodeError,
        ] {
            self.report(reason);
        }
    }

    fn losses(&mut self, reason: LostReason) -> &mut Losses {
        match reason {
            LostReason::RingBufferFull => &mut self.ring,
            LostReason::PipelineBackpressure => &mut self.queue,
            LostReason::DecodeError | LostReason::OutputBackpressure => &mut self.decode,
        }
    }

    fn report(&mut self, reason: LostReason) {
        let l = self.losses(reason);
        if l.lost <= l.reported {
            return;
        }
        let (count, total) = (l.lost - l.reported, l.lost);
        l.reported = total;
        if let Some(m) = &self.metrics {
            m.record_lost(reason.as_str(), count);
        }
        let lost = Event::Lost(Lost { reason, count, total });
        self.sink.emit(Clock::now_boot_ns(), &lost);
    }

    fn stop(&mut self, ring_lost: u64, queue_refused: u64) {
        // At stop the `lost` lines are written even if the output is still backlogged.
        self.sink.finish();
        self.report_all(ring_lost, queue_refused);
        let stop = Event::Stop(Stop {
            reason: StopReason::Signal,
            oom_kills: self.oom_kills,
            lost: self.ring.lost + self.queue.lost + self.decode.lost + self.sink.dropped_total(),
        });
        self.sink.emit(Clock::now_boot_ns(), &stop);
        self.sink.close();
    }
}

/// Matches memcg OOM notifications with the OOM kills of the same memcg, to count the OOMs that
/// killed nothing. The two arrive by different paths (cgroupfs notifications, the ring buffer) in
/// either order, so a memcg's counts settle for [`MEMCG_OOM_SETTLE`] after the first of them.
#[derive(Default)]
struct MemcgOoms {
    pending: HashMap<u64, PendingOoms>,
}

struct PendingOoms {
    ooms: u64,
    kills: u64,
    since: Instant,
    labels: Option<KillLabels>,
}

const MEMCG_OOM_SETTLE: Duration = Duration::from_secs(2);
/// Memcgs tracked at once (a bound against a storm across many cgroups).
const MAX_PENDING_MEMCGS: usize = 10_000;

impl MemcgOoms {
    fn entry(&mut self, id: u64) -> Option<&mut PendingOoms> {
        if !self.pending.contains_key(&id) && self.pending.len() >= MAX_PENDING_MEMCGS {
            return None;
        }
        Some(self.pending.entry(id).or_insert_with(|| PendingOoms {
            ooms: 0,
            kills: 0,
            since: Instant::now(),
            labels: None,
        }))
    }

    fn oom(&mut self, id: u64, n: u64, labels: KillLabels) {
        if let Some(p) = self.entry(id) {
            p.ooms += n;
            p.labels = Some(labels);
        }
    }

    fn kill(&mut self, id: u64) {
        if let Some(p) = self.entry(id) {
            p.kills += 1;
        }
    }

    /// The OOMs without a kill of the memcgs whose counts have settled.
    fn settled(&mut self, now: Instant) -> Vec<(KillLabels, u64)> {
        let mut out = Vec::new();
        self.pending.retain(|_, p| {
            if now.duration_since(p.since) < MEMCG_OOM_SETTLE {
                return true;
            }
            let without = p.ooms.saturating_sub(p.kills);
            if let (Some(labels), true) = (p.labels.take(), without > 0) {
                out.push((labels, without));
            }
            false
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::{self, Write},
        sync::{Arc, Mutex},
    };

    use super::*;
    use crate::{
        enrich::{
            cgroups::Cgroups,
            filter::Filter,
            oom_kill::{KernelSymbols, Machine, OomKills},
        },
        event::Attach,
        kernel::cgroup::Resolver,
        sink::Format,
    };

    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn pipeline() -> Pipeline {
        let kills = OomKills::new(Machine::default(), None, KernelSymbols::Ready(None), None);
        Pipeline::new(
            Cgroups::new(Resolver::new(None)),
            kills,
            Filter::default(),
            Attach::TpBtf,
            false,
            crate::enrich::kube::Kube::new(None),
        )
    }

    /// A stream writing JSON into memory, with `clock`.
    fn stream(clock: Clock) -> (Stream, crate::sink::Writer, Arc<Mutex<Vec<u8>>>) {
        let got = Arc::new(Mutex::new(Vec::new()));
        let (sink, writer) = Sink::new(
            Format::Json,
            Box::new(Shared(got.clone())),
            "test".into(),
            "h".into(),
            clock,
        )
        .unwrap();
        (Stream::new(sink, pipeline(), None), writer, got)
    }

    /// The wall clock was stepped (NTP) by a day after start: the next tick re-reads the
    /// boot-time -> wall-clock offset, so later lines carry the right time.
    #[test]
    fn the_tick_refreshes_a_stepped_clock() {
        const DAY_NS: i128 = 86_400 * 1_000_000_000;
        let (mut stream, writer, got) = stream(Clock::skewed(-DAY_NS));
        let lost = || {
            Event::Lost(Lost {
                reason: LostReason::DecodeError,
                count: 1,
                total: 1,
            })
        };
        stream.sink.emit(Clock::now_boot_ns(), &lost());
        stream.tick(0, 0);
        stream.sink.emit(Clock::now_boot_ns(), &lost());
        stream.sink.close();
        writer.done.blocking_recv().unwrap().unwrap();
        let text = String::from_utf8(got.lock().unwrap().clone()).unwrap();
        let times: Vec<String> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["time"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        let now = crate::sink::rfc3339(Clock::new().unix_ns(Clock::now_boot_ns()));
        assert_eq!(times.len(), 2);
        assert_ne!(
            times[0][..10],
            now[..10],
            "the first line carries the stale clock"
        );
        assert_eq!(times[1][..13], now[..13], "after the tick: {times:?} vs {now}");
    }

    /// Losses of every reason reach the stream, each as its own `lost` line, and the `stop`
    /// line sums them.
    #[test]
    fn losses_are_reported_per_reason_and_summed_at_stop() {
        let (mut stream, writer, got) = stream(Clock::new());
        stream.record(&[0xff; 8]); // not a record kind
        stream.tick(3, 2);
        stream.stop(5, 2);
        writer.done.blocking_recv().unwrap().unwrap();
        let text = String::from_utf8(got.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let summary: Vec<(String, u64, u64)> = lines
            .iter()
            .filter(|l| l["type"] == "lost")
            .map(|l| {
                (
                    l["reason"].as_str().unwrap().to_owned(),
                    l["count"].as_u64().unwrap(),
                    l["total"].as_u64().unwrap(),
                )
            })
            .collect();
        let want = [
            ("decode_error", 1, 1),
            ("ring_buffer_full", 3, 3),
            ("pipeline_backpressure", 2, 2),
            ("ring_buffer_full", 2, 5),
        ];
        assert_eq!(summary, want.map(|(r, c, t)| (r.to_owned(), c, t)).to_vec());
        let stop = lines.last().unwrap();
        assert_eq!(
            (stop["type"].as_str(), stop["lost"].as_u64()),
            (Some("stop"), Some(8))
        );
    }
}
