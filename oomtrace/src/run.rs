//! `oomtrace run`: attach, then stream every record until SIGINT/SIGTERM, then drain what the
//! kernel already handed over and stop cleanly.

use std::{
    path::PathBuf,
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use aya::maps::{MapData, PerCpuArray, RingBuf};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

use crate::{
    enrich::{
        oom_kill::{Enricher, Machine},
        whodunit::{self, Whodunit},
    },
    event::{Cgroup, CgroupReport, Lost, MemcgOomEv, Start, Stop},
    kernel::{
        self,
        attach::{self as loader, AttachMode, KernelInfo},
        caps, cgroup,
        clock::Clock,
        ksyms::Ksyms,
        memcg_watch::{self, MemcgOom},
        record::{self, Record},
    },
    sink::{self as output, FLUSH_TIMEOUT, Format, Sink, WriteError, Writer, human_bytes},
};

pub struct Options {
    pub format: Format,
    pub output: Option<PathBuf>,
    pub attach: AttachMode,
    pub ring_size: u32,
    pub host: Option<String>,
    pub signals: Signals,
    pub filter: Filter,
    pub user_stacks: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Signals {
    /// SIGKILL only.
    Kill,
    /// Every signal whose default action terminates the process.
    All,
}

/// `--pid` / `--cgroup`: what a user watching one workload wants to see. The pid filter also runs
/// in the kernel for signals and exits; everything is checked again here.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub pid: Option<u32>,
    pub cgroup: Option<String>,
}

impl Filter {
    fn active(&self) -> bool {
        self.pid.is_some() || self.cgroup.is_some()
    }

    fn in_cgroup(&self, c: Option<&Cgroup>) -> bool {
        let (Some(want), Some(path)) = (&self.cgroup, c.and_then(|c| c.path.as_deref())) else {
            return false;
        };
        want == "/"
            || path == want
            || path
                .strip_prefix(want.as_str())
                .is_some_and(|r| r.starts_with('/'))
    }

    /// True if the record concerns one of `pids` or one of `cgroups`.
    fn matches(&self, pids: &[Option<u32>], cgroups: &[Option<&Cgroup>]) -> bool {
        let pid_ok = self.pid.is_none_or(|p| pids.contains(&Some(p)));
        let cg_ok = self.cgroup.is_none() || cgroups.iter().any(|c| self.in_cgroup(*c));
        pid_ok && cg_ok
    }
}

/// How often kernel-side drop counters are polled when no record arrives.
const DROP_POLL: Duration = Duration::from_secs(1);

struct Stream {
    sink: Sink,
    enricher: Enricher,
    whodunit: Whodunit,
    filter: Filter,
    ksyms: Option<thread::JoinHandle<Option<Ksyms>>>,
    mode: &'static str,
    kills: u64,
    /// Kernel-side ring buffer drops: counted by the kernel, and reported in `lost` lines.
    ring_lost: u64,
    ring_reported: u64,
    /// Undecodable records: counted, and reported in `lost` lines.
    decode_lost: u64,
    decode_reported: u64,
}

impl Stream {
    fn emit_lost(&mut self, reason: &'static str, count: u64, total: u64) {
        let body = Lost { reason, count, total };
        let text = output::lost_text(reason, count, total);
        self.sink
            .emit_control("lost", Clock::now_boot_ns(), &body, Some(text));
    }

    /// Reads the kernel's drop counters and writes a `lost` line for each reason whose count
    /// grew. While the output is backlogged the lines wait (the counts keep growing) so that
    /// they are never themselves dropped; `force` writes them anyway (at stop).
    fn report_losses(&mut self, drops: &PerCpuArray<MapData, u64>, force: bool) {
        if force {
            self.sink.finish();
        } else if self.sink.backlogged() {
            return;
        }
        self.ring_lost = self.ring_lost.max(loader::ring_drops(drops));
        if self.ring_lost > self.ring_reported {
            let (count, total) = (self.ring_lost - self.ring_reported, self.ring_lost);
            self.ring_reported = total;
            self.emit_lost("ring_buffer_full", count, total);
        }
        if self.decode_lost > self.decode_reported {
            let (count, total) = (self.decode_lost - self.decode_reported, self.decode_lost);
            self.decode_reported = total;
            self.emit_lost("decode_error", count, total);
        }
    }

    fn handle(&mut self, bytes: &[u8]) {
        // Before a record takes its seq: a drained output first gets the `lost` line that closes
        // the hole of the records dropped while it was full.
        self.sink.backlogged();
        match record::decode(bytes) {
            Ok(Record::OomKill(rec)) => {
                if let Some(h) = self.ksyms.take() {
                    self.enricher.ksyms = h.join().ok().flatten().map(Arc::new);
                }
                let seq = self.sink.next_seq();
                let ev = self.enricher.oom_kill(&rec, seq, self.mode);
                self.whodunit.note_oom_kill(&ev, seq, rec.ts_boot_ns);
                let f = &self.filter;
                if f.active()
                    && !f.matches(
                        &[ev.victim.pid, Some(ev.trigger.pid)],
                        &[
                            ev.victim.cgroup.as_ref(),
                            ev.trigger.cgroup.as_ref(),
                            ev.oom_memcg
                                .as_ref()
                                .map(|m| Cgroup {
                                    id: m.id,
                                    path: m.path.clone(),
                                })
                                .as_ref(),
                        ],
                    )
                {
                    return;
                }
                let text = text_line(&ev);
                if self.sink.emit("oom_kill", rec.ts_boot_ns, &ev, Some(text)) {
                    self.kills += 1;
                }
            }
            Ok(Record::Signal(rec)) => {
                let seq = self.sink.next_seq();
                let ev = self.whodunit.signal(&rec, seq, &mut self.enricher);
                let f = &self.filter;
                if f.active()
                    && !f.matches(
                        &[ev.target.pid, Some(ev.target.tid), ev.sender.process.pid],
                        &[ev.target.cgroup.as_ref(), ev.sender.process.cgroup.as_ref()],
                    )
                {
                    return;
                }
                self.sink.emit("signal", rec.ts_boot_ns, &ev, None);
            }
            Ok(Record::Reap(rec)) => {
                let ev = self.whodunit.reap(&rec);
                if self.filter.active() && !self.filter.matches(&[ev.pid, Some(ev.tid)], &[]) {
                    return;
                }
                self.sink.emit("oom_reap", rec.ts_boot_ns, &ev, None);
            }
            Ok(Record::Exit(rec)) => {
                if self.whodunit.duplicate_exit(&rec) {
                    return;
                }
                let ev = self.whodunit.exit(&rec, &mut self.enricher);
                let f = &self.filter;
                let oom_cg = ev.oom.as_ref().and_then(|o| o.oom_memcg.as_ref());
                if f.active() && !f.matches(&[ev.process.pid], &[ev.process.cgroup.as_ref(), oom_cg]) {
                    return;
                }
                let text = output::escape_controls(&whodunit::sentence(&ev));
                self.sink.emit("exit", rec.ts_boot_ns, &ev, Some(text));
            }
            Err(e) => {
                log::warn!("dropping an undecodable record: {e:#}");
                self.decode_lost += 1;
                if !self.sink.backlogged() {
                    let total = self.decode_lost;
                    self.decode_reported = total;
                    self.emit_lost("decode_error", 1, total);
                }
            }
        }
    }

    fn memcg_oom(&mut self, m: MemcgOom) {
        self.sink.backlogged();
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
        if self.filter.active() && !self.filter.matches(&[], &[Some(&ev.memcg)]) {
            return;
        }
        let text = format!(
            "memcg_oom {} hit its limit and entered OOM handling{}; {} OOM kill(s) in it so far",
            output::escape_controls(ev.memcg.path.as_deref().unwrap_or("?")),
            if ev.oom_kill_disable == Some(true) {
                " (oom_kill_disable: tasks wait, nothing is killed)"
            } else {
                ""
            },
            ev.oom_kills.map_or("?".to_owned(), |k| k.to_string()),
        );
        self.sink.emit("memcg_oom", m.ts_boot_ns, &ev, Some(text));
    }

    fn drain(&mut self, ring: &mut RingBuf<MapData>) {
        while let Some(item) = ring.next() {
            self.handle(&item);
        }
    }
}

fn text_line(ev: &crate::event::OomKill) -> String {
    let v = &ev.victim;
    let kb = |x: Option<u64>| x.map_or("?".to_owned(), |k| human_bytes(k * 1024));
    let cg = |c: &Option<crate::event::Cgroup>| {
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
    line = output::escape_controls(&line);
    line.push_str("\n    ");
    line.push_str(&output::escape_controls(&allocation_line(ev)));
    line
}

/// `order 0 (4.0 KiB) page fault (anonymous) in grow_buffer (hog.rs:42); memcg 64.0 MiB limit: anon 60.1 MiB, anon_thp 0 B, file 0.3 MiB`
fn allocation_line(ev: &crate::event::OomKill) -> String {
    let a = &ev.allocation;
    let size = a
        .size_bytes
        .map_or(String::new(), |s| format!(" ({})", human_bytes(s)));
    let order = a
        .order
        .map_or("order ?".to_owned(), |o| format!("order {o}{size}"));
    let path = match a.path_detail {
        Some(d) => format!("{} ({d})", a.path.replace('_', " ")),
        None => a.path.replace('_', " "),
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

/// Returns freed heap pages to the kernel (glibc keeps them otherwise).
fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory; no pointers are invalidated.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn hostname(over: Option<String>) -> String {
    if let Some(h) = over {
        return h;
    }
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for buf.len() bytes; gethostname NUL-terminates within it on success.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
        record::comm(&buf)
    } else {
        "unknown".to_owned()
    }
}

pub async fn run(opts: Options) -> Result<()> {
    let exec_boot_ns = Clock::now_boot_ns();
    let eff = caps::effective();
    let missing = caps::missing_for_run(eff);
    if !missing.is_empty() {
        let have: Vec<&str> = [("CAP_BPF", caps::CAP_BPF), ("CAP_PERFMON", caps::CAP_PERFMON)]
            .into_iter()
            .filter(|(_, c)| caps::has(eff, *c))
            .map(|(n, _)| n)
            .collect();
        bail!(
            "oomtrace run needs {} to load its eBPF programs (has: {}). Run it as root \
             (sudo oomtrace run) or grant them (setcap cap_bpf,cap_perfmon,cap_syslog+ep $(which oomtrace))",
            missing.join(" and "),
            if have.is_empty() {
                "neither CAP_BPF nor CAP_PERFMON, nor CAP_SYS_ADMIN".to_owned()
            } else {
                have.join(", ")
            }
        );
    }
    if !caps::has(eff, caps::CAP_SYSLOG) {
        log::warn!(
            "no CAP_SYSLOG: kernel stacks may stay as raw addresses (grant cap_syslog to symbolize them)"
        );
    }
    // Handlers first: a SIGINT/SIGTERM from here on (while attaching, say) is a clean stop after
    // the `start` record, not a kill.
    let mut sigint = signal(SignalKind::interrupt()).context("failed to install SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("failed to install SIGTERM handler")?;
    let clock = Clock::new();
    let (sink, mut writer) = Sink::open(opts.format, opts.output.as_deref(), hostname(opts.host), clock)?;

    // Kallsyms takes tens of ms to parse: do it off the start-up path.
    let ksyms = thread::spawn(|| {
        Ksyms::load()
            .map_err(|e| log::warn!("{e:#}: kernel stacks stay raw"))
            .ok()
    });

    let mut info = KernelInfo::probe();
    info.cfg.all_signals = u32::from(opts.signals == Signals::All);
    info.cfg.filter_tgid = opts.filter.pid.unwrap_or(0);
    info.cfg.user_stacks = u32::from(opts.user_stacks);
    if info.tracefs.is_none()
        && let Err(e) = std::fs::metadata("/sys/kernel/tracing/events")
        && e.kind() == std::io::ErrorKind::PermissionDenied
    {
        log::warn!(
            "tracefs (/sys/kernel/tracing) is not readable ({e}): run as root or grant CAP_DAC_READ_SEARCH; \
             without it the classic tracepoints cannot attach (see below for what is lost)"
        );
    }
    if let Some(e) = &info.btf_error {
        log::warn!("no kernel BTF ({e}): only the classic tracepoint mode works, without cgroup ids");
    }
    if !info.btf_missing.is_empty() {
        log::warn!(
            "not in this kernel's BTF (those fields stay unknown): {}",
            info.btf_missing.join(", ")
        );
    }
    // BPF memory is memcg-accounted since 5.11; older kernels need RLIMIT_MEMLOCK raised.
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: rlim is a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        log::debug!("could not raise RLIMIT_MEMLOCK (fine on kernels >= 5.11)");
    }

    let mut attached = loader::attach(&info, opts.attach, opts.ring_size)?;
    let report = attached.report.clone();
    for f in &report.fallbacks {
        log::info!("not using {f}");
    }
    log::info!(
        "attached: mode {} (oom_kill_process: {}, mark_victim: {}, reclaim: {}, signal_generate: {}, process_exit: {})",
        report.mode,
        report.oom_kill_process.unwrap_or("-"),
        report.mark_victim,
        report.reclaim_begin.unwrap_or("-"),
        report.signal_generate.unwrap_or("-"),
        report.process_exit.unwrap_or("-")
    );
    // Kernel BTF (~15 MB parsed) is only needed to attach: give it back before idling.
    let have_btf = info.btf.take().is_some();
    trim_heap();
    let (ring, drops) = loader::take_maps(&mut attached.ebpf)?;
    // SAFETY: the RingBuf owns its map fd, which stays open and unchanged until the AsyncFd (its
    // owner from here on) is dropped.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("failed to poll the ring buffer: {e}"))?;

    let hierarchy = cgroup::detect();
    let (memcg_tx, mut memcg_rx) = tokio::sync::mpsc::unbounded_channel();
    let memcg_watch = match &hierarchy {
        Some(h) => memcg_watch::spawn(h.clone(), memcg_tx)
            .map_err(|e| log::warn!("memcg_oom records are off: {e:#}"))
            .is_ok(),
        None => false,
    };
    let mut resolver = cgroup::Resolver::new(hierarchy.clone());
    resolver.walk();
    let mut stream = Stream {
        sink,
        enricher: {
            let mut e = Enricher::new(resolver, None, Machine::read());
            e.gfp = Some(info.gfp.clone());
            e.ustack = opts.user_stacks.then(crate::enrich::ustack::UserSymbolizer::new);
            e
        },
        whodunit: Whodunit::default(),
        filter: opts.filter.clone(),
        ksyms: Some(ksyms),
        mode: report.mode,
        kills: 0,
        ring_lost: 0,
        ring_reported: 0,
        decode_lost: 0,
        decode_reported: 0,
    };
    let mut report = report;
    if memcg_watch {
        report.memcg_oom = hierarchy.as_ref().map(|h| {
            if h.version == 1 {
                "cgroup_v1_oom_control"
            } else {
                "cgroup_v2_memory_events"
            }
        });
    }
    let start = Start {
        version: env!("CARGO_PKG_VERSION"),
        kernel: kernel::release(),
        attach: report,
        cgroup: CgroupReport {
            version: hierarchy.as_ref().map(|h| h.version),
            memory_controller: hierarchy.is_some(),
            mount: hierarchy.as_ref().map(|h| h.mount.display().to_string()),
        },
        btf: have_btf,
        ring_buffer_bytes: opts.ring_size,
        pid: std::process::id(),
    };
    stream
        .sink
        .emit_control("start", Clock::now_boot_ns(), &start, None);
    if opts.format == Format::Text {
        eprintln!("oomtrace: watching for OOM kills (mode {})", start.attach.mode);
    }
    log::debug!(
        "start record after {} µs",
        (Clock::now_boot_ns() - exec_boot_ns) / 1000
    );
    // Now that readers know we are up, finish loading kernel symbols and give back the parse buffers.
    if let Some(h) = stream.ksyms.take() {
        stream.enricher.ksyms = h.join().ok().flatten().map(Arc::new);
    }
    trim_heap();

    // The loop never waits for the output (see output.rs): a stuck reader costs records, counted
    // in `lost` lines, never the kernel's ring buffer or the handling of SIGTERM.
    let mut tick = tokio::time::interval(DROP_POLL);
    let early_end = loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("failed to poll the ring buffer")?;
                stream.drain(guard.get_inner_mut());
                stream.report_losses(&drops, false);
                guard.clear_ready();
            }
            Some(m) = memcg_rx.recv(), if memcg_watch => stream.memcg_oom(m),
            _ = tick.tick() => {
                stream.report_losses(&drops, false);
                if stream.sink.drained_after_filling() {
                    trim_heap();
                }
            }
            () = writer.resume.notified() => stream.report_losses(&drops, false),
            r = &mut writer.done => break Some(r.unwrap_or_else(|_| Err(writer_died()))),
            _ = sigint.recv() => break None,
            _ = sigterm.recv() => break None,
        }
    };
    let result = match early_end {
        Some(r) => r,
        None => {
            // Whatever the kernel handed over before the signal is written before exit.
            let t = Instant::now();
            stream.drain(ring.get_mut());
            stream.report_losses(&drops, true);
            let stop = Stop {
                reason: "signal",
                oom_kills: stream.kills,
                lost: stream.ring_lost + stream.decode_lost + stream.sink.dropped_total(),
            };
            stream
                .sink
                .emit_control("stop", Clock::now_boot_ns(), &stop, None);
            stream.sink.close();
            let r = flush(&mut writer, &stream.sink, &mut sigint, &mut sigterm).await;
            log::debug!("output flushed in {:?} after the stop signal", t.elapsed());
            r
        }
    };
    match result {
        Ok(()) => Ok(()),
        Err(WriteError::Closed) => {
            log::info!("the output was closed by its reader: stopping");
            Ok(())
        }
        Err(WriteError::Failed(e)) => Err(e),
    }
}

fn writer_died() -> WriteError {
    WriteError::Failed(anyhow::anyhow!(
        "the output writer thread died (see the panic above)"
    ))
}

/// Waits for the writer to write out the queue, at most [`FLUSH_TIMEOUT`] (or until a second
/// SIGINT/SIGTERM), so that a reader that stopped reading cannot hold the stop forever.
async fn flush(
    writer: &mut Writer,
    sink: &Sink,
    sigint: &mut tokio::signal::unix::Signal,
    sigterm: &mut tokio::signal::unix::Signal,
) -> Result<(), WriteError> {
    let why = tokio::select! {
        r = &mut writer.done => return r.unwrap_or_else(|_| Err(writer_died())),
        () = tokio::time::sleep(FLUSH_TIMEOUT) => format!("within {} s of the stop signal", FLUSH_TIMEOUT.as_secs()),
        _ = sigint.recv() => "before a second signal".to_owned(),
        _ = sigterm.recv() => "before a second signal".to_owned(),
    };
    Err(WriteError::Failed(anyhow::anyhow!(
        "the output did not take the last {} line(s) {why}, the stop record among them: they are lost \
         (is the reader of the output stuck?)",
        sink.unwritten()
    )))
}
