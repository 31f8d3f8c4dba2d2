//! `oomtrace run`: check privileges, attach, start the pipeline thread (see [`crate::stream`]),
//! then empty the kernel's ring buffer into it until SIGINT/SIGTERM, then drain what the kernel
//! already handed over and stop cleanly.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, thread, time::Duration};

use anyhow::{Context, Result, bail};
use aya::maps::{MapData, RingBuf};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{Signal, SignalKind, signal},
};

pub use crate::enrich::filter::Filter;
use crate::{
    enrich::{
        Pipeline,
        cgroups::Cgroups,
        kube::{
            Kube,
            names::{self, NameService},
        },
        oom_kill::{KernelSymbols, Machine, OomKills},
        ustack::UserSymbolizer,
    },
    event::{CgroupReport, Start},
    kernel::{
        self,
        attach::{self as loader, AttachMode, KernelInfo},
        btf::BtfSource,
        caps, cgroup,
        clock::Clock,
        features,
        ksyms::Ksyms,
        memcg_watch, record,
    },
    queue,
    sink::{FLUSH_TIMEOUT, Format, Sink, WriteError, Writer, metrics::Metrics},
    stream::{self, Ended, Input, PIPELINE_QUEUE_BYTES},
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
    pub btf: BtfSource,
    /// Serve Prometheus metrics on this address.
    pub metrics: Option<SocketAddr>,
    /// The container runtime's CRI socket to name pods and containers from (None: detected).
    pub cri_socket: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Signals {
    /// SIGKILL only.
    Kill,
    /// Every signal whose default action terminates the process.
    All,
}

/// How often kernel-side drop counters are polled and the clock re-read when no record arrives.
const TICK: Duration = Duration::from_secs(1);

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

/// Fails naming the capabilities `run` lacks; warns about those that only cost detail.
fn require_privileges() -> Result<()> {
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
    Ok(())
}

/// What this kernel offers, with the run's options in the eBPF programs' configuration.
fn probe(opts: &Options) -> Result<KernelInfo> {
    let mut info = KernelInfo::probe(&opts.btf)?;
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
    Ok(info)
}

pub async fn run(opts: Options) -> Result<()> {
    let exec_boot_ns = Clock::now_boot_ns();
    require_privileges()?;
    // Handlers first: a SIGINT/SIGTERM from here on (while attaching, say) is a clean stop after
    // the `start` record, not a kill.
    let mut sigint = signal(SignalKind::interrupt()).context("failed to install SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("failed to install SIGTERM handler")?;
    // SIGHUP (logrotate's postrotate) reopens --output; it never stops the run.
    let mut sighup = signal(SignalKind::hangup()).context("failed to install SIGHUP handler")?;
    let (sink, mut writer) = Sink::open(
        opts.format,
        opts.output.as_deref(),
        hostname(opts.host.clone()),
        Clock::new(),
    )?;

    // Kallsyms takes tens of ms to parse: do it off the start-up path.
    let ksyms = thread::spawn(|| {
        Ksyms::load()
            .map_err(|e| log::warn!("{e:#}: kernel stacks stay raw"))
            .ok()
    });

    let mut info = probe(&opts)?;
    let attached = loader::attach(&info, opts.attach, opts.ring_size)?;
    let mut report = attached.report;
    let mut ebpf = attached.ebpf;
    let attached_off = attached.off;
    for f in &report.fallbacks {
        log::info!("not using {f}");
    }
    log::info!(
        "attached: mode {} (oom_kill_process: {}, mark_victim: {}, reclaim: {}, signal_generate: {}, process_exit: {})",
        report.mode,
        hook(report.oom_kill_process),
        report.mark_victim,
        hook(report.reclaim_begin),
        hook(report.signal_generate),
        hook(report.process_exit)
    );
    // Kernel BTF (~15 MB parsed) is only needed to attach: give it back before idling.
    let have_btf = info.btf.take().is_some();
    crate::trim_heap();
    let (ring, drops) = loader::take_maps(&mut ebpf)?;
    // SAFETY: the RingBuf owns its map fd, which stays open and unchanged until the AsyncFd (its
    // owner from here on) is dropped.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("failed to poll the ring buffer: {e}"))?;

    let (tx, rx) = queue::bounded::<Input>(PIPELINE_QUEUE_BYTES);
    let hierarchy = cgroup::detect();
    let memcg_oom = match &hierarchy {
        Some(h) => {
            let memcg_tx = tx.clone();
            memcg_watch::spawn(h.clone(), move |m| {
                // Refused when full: counted as pipeline_backpressure.
                memcg_tx.try_send(Input::MemcgOom(m), 256);
                true
            })
            .map(|()| memcg_watch::source(h))
            .map_err(|e| {
                log::warn!("memcg_oom records are off: {e:#}");
                format!("{e:#}")
            })
        }
        None => Err("no cgroup hierarchy with the memory controller".to_owned()),
    };
    report.memcg_oom = memcg_oom.as_ref().ok().copied();
    let features = features::features(&features::Inputs {
        report: &report,
        off: &attached_off,
        memcg_oom,
        user_stacks: opts.user_stacks,
        kallsyms: caps::has(caps::effective(), caps::CAP_SYSLOG),
        btf: have_btf,
    });
    let start = Start {
        version: env!("CARGO_PKG_VERSION"),
        kernel: kernel::release(),
        attach: report.clone(),
        cgroup: CgroupReport {
            version: hierarchy.as_ref().map(|h| h.version),
            memory_controller: hierarchy.is_some(),
            mount: hierarchy.as_ref().map(|h| h.mount.display().to_string()),
        },
        btf: have_btf,
        ring_buffer_bytes: opts.ring_size,
        pid: std::process::id(),
        features,
    };
    // Pod and container names, from the runtime's CRI socket or kubelet's logs, refreshed in the
    // background on this runtime; the pipeline thread only reads the cache.
    let names = NameService::spawn(names::Config {
        socket: opts.cri_socket.clone(),
        ..names::Config::default()
    });
    let metrics = match opts.metrics {
        Some(addr) => {
            let m = Arc::new(Metrics::new(env!("CARGO_PKG_VERSION"), &start.kernel));
            let (bound, _server) = m
                .clone()
                .serve(addr)
                .await
                .with_context(|| format!("failed to serve metrics on {addr}"))?;
            log::info!("metrics on http://{bound}/metrics");
            Some(m)
        }
        None => None,
    };
    let mut resolver = cgroup::Resolver::new(hierarchy);
    resolver.walk();
    let (gfp, attach, filter, user_stacks) = (info.gfp.clone(), report.mode, opts.filter, opts.user_stacks);
    let kills_paired = report.signal_generate.is_some();
    let pipeline = stream::spawn(
        stream::Parts {
            sink,
            start,
            build: Box::new(move || {
                let kills = OomKills::new(
                    Machine::read(),
                    Some(gfp),
                    KernelSymbols::Loading(ksyms),
                    user_stacks.then(UserSymbolizer::new),
                );
                Pipeline::new(
                    Cgroups::new(resolver),
                    kills,
                    filter,
                    attach,
                    kills_paired,
                    Kube::new(Some(names)),
                )
            }),
            metrics,
        },
        rx,
    )?;
    if opts.format == Format::Text {
        eprintln!("oomtrace: watching for OOM kills (mode {})", report.mode);
    }
    log::debug!(
        "pipeline started {} µs after exec",
        (Clock::now_boot_ns() - exec_boot_ns) / 1000
    );

    // The loop never waits for the pipeline or the output: a stuck reader or a slow enrichment
    // costs records, counted in `lost` lines, never the kernel's ring buffer or the handling of
    // SIGTERM.
    let mut tick = tokio::time::interval(TICK);
    let early_end = loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("failed to poll the ring buffer")?;
                drain(guard.get_inner_mut(), &tx, false);
                tx.send(Input::Tick { ring_lost: loader::ring_drops(&drops) }, 0);
                guard.clear_ready();
            }
            _ = tick.tick() => {
                // Records the kernel submits without a wakeup (signal, oom_reap) are read here
                // when no waking record follows them.
                drain(ring.get_mut(), &tx, false);
                tx.send(Input::Tick { ring_lost: loader::ring_drops(&drops) }, 0);
            }
            () = writer.resume.notified() => tx.send(Input::Tick { ring_lost: loader::ring_drops(&drops) }, 0),
            r = &mut writer.done => break Some(r.unwrap_or_else(|_| Err(writer_died()))),
            _ = sighup.recv() => writer.reopen(),
            _ = sigint.recv() => break None,
            _ = sigterm.recv() => break None,
        }
    };
    // Whatever the kernel handed over before the signal is written before exit.
    drain(ring.get_mut(), &tx, true);
    tx.send(
        Input::Stop {
            ring_lost: loader::ring_drops(&drops),
        },
        0,
    );
    tx.close();
    let ended = join(pipeline).await?;
    let result = match early_end {
        Some(r) => r,
        None => flush(&mut writer, &ended, &mut sigint, &mut sigterm).await,
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

fn hook(a: Option<crate::event::Attach>) -> &'static str {
    a.map_or("-", |a| a.as_str())
}

/// Moves every record the kernel has handed over into the pipeline's queue. At stop (`last`)
/// they are queued past the bound: the last records of a run are never dropped.
fn drain(ring: &mut RingBuf<MapData>, tx: &queue::Sender<Input>, last: bool) {
    while let Some(item) = ring.next() {
        let bytes: Box<[u8]> = (*item).into();
        let n = bytes.len();
        if last {
            tx.send(Input::Record(bytes), n);
        } else {
            tx.try_send(Input::Record(bytes), n);
        }
    }
}

/// Waits for the pipeline thread without blocking the runtime's thread.
async fn join(h: thread::JoinHandle<Ended>) -> Result<Ended> {
    tokio::task::spawn_blocking(move || h.join())
        .await
        .context("failed to wait for the pipeline thread")?
        .map_err(|_| anyhow::anyhow!("the pipeline thread died (see the panic above)"))
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
    ended: &Ended,
    sigint: &mut Signal,
    sigterm: &mut Signal,
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
        ended.sink.unwritten()
    )))
}
