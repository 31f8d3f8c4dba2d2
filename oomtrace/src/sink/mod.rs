//! Where events go: JSON Lines (or one human line per kill) to stdout or a file. Timestamps:
//! boot-time nanoseconds from the kernel, turned into RFC 3339 wall-clock time with the offset
//! measured at start.
//!
//! The event loop never waits for the output. It numbers and serializes each line and hands it
//! to a bounded queue ([`OUTPUT_QUEUE_BYTES`]); a writer thread writes the queue out, flushing
//! whenever it is empty, so a log shipper sees each kill at once. A reader that stops reading
//! fills the queue, and then records are dropped — counted, their `seq` numbers left as a hole,
//! and reported by a `lost` line of reason `output_backpressure` once the queue has drained —
//! while the kernel's ring buffer keeps being emptied and signals keep being handled.

use std::{
    collections::VecDeque,
    fs::{File, OpenOptions},
    io::{self, Write},
    os::fd::{AsRawFd, BorrowedFd},
    path::Path,
    sync::{Arc, Condvar, Mutex, MutexGuard},
    thread,
    time::Duration,
};

use anyhow::{Context, Result};
use clap::ValueEnum;
use tokio::sync::{Notify, oneshot};

pub use self::text::{escape_controls, human_bytes};
use crate::{
    event::{Event, Line, Lost, LostReason, SCHEMA_VERSION},
    kernel::clock::Clock,
};

pub mod metrics;
pub mod text;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One JSON object per line (the contract in docs/events.md).
    Json,
    /// One human-readable line per kill.
    Text,
}

/// RFC 3339 UTC with nanoseconds, e.g. 2026-11-27T20:31:00.123456789Z.
pub fn rfc3339(unix_ns: i64) -> String {
    let secs = unix_ns.div_euclid(1_000_000_000);
    let nanos = unix_ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Most bytes of serialized lines that wait for the output at once (the bound of a slow
/// consumer): about 850 `oom_kill` lines, or 600 OOM kills with their `signal`, `exit` and
/// `memcg_oom` lines. Past it, records are dropped (see [`Sink::emit`]) instead of piling up in
/// memory or stalling the event loop.
pub const OUTPUT_QUEUE_BYTES: usize = 4 << 20;

/// Once full, the queue takes records again when it has drained to this.
pub const OUTPUT_QUEUE_RESUME_BYTES: usize = OUTPUT_QUEUE_BYTES / 2;

/// How long a stop (SIGINT/SIGTERM) waits for the output to take the last lines.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The writer thread hands the output at most this many bytes per write(2).
const WRITE_BATCH_BYTES: usize = 64 << 10;

/// What went wrong writing a line.
#[derive(Debug)]
pub enum WriteError {
    /// The reader went away (`oomtrace run | head -1`): a clean stop.
    Closed,
    Failed(anyhow::Error),
}

/// Lines on their way from the event loop to the writer thread.
struct Queue {
    state: Mutex<QueueState>,
    /// Signalled when a line is queued or the queue is closed.
    ready: Condvar,
    /// Tells the event loop that a full queue has drained to [`OUTPUT_QUEUE_RESUME_BYTES`].
    resume: Arc<Notify>,
}

#[derive(Default)]
struct QueueState {
    lines: VecDeque<Box<[u8]>>,
    /// Bytes of the queued lines plus the batch being written: what the queue holds in memory.
    bytes: usize,
    /// Lines queued since start, and lines the output has taken.
    queued: u64,
    written: u64,
    /// No more lines will come: the writer exits once the queue is empty.
    closed: bool,
    /// The writer has exited (on error); lines queued from now on are discarded.
    dead: bool,
    /// The event loop waits for `resume`.
    want_resume: bool,
    /// SIGHUP: reopen the output file before the next write (log rotation moved it).
    reopen: bool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // A panic while holding the lock cannot leave the state inconsistent: use it anyway.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The writer thread's half: what the event loop waits on.
pub struct Writer {
    /// Fires once when the writer thread exits: after the queue was closed and drained, or on
    /// the first write error.
    pub done: oneshot::Receiver<Result<(), WriteError>>,
    /// Notified when a full queue has drained enough to take records again.
    pub resume: Arc<Notify>,
    queue: Arc<Queue>,
}

impl Writer {
    /// Asks the writer thread to reopen the output file (after log rotation moved it) between
    /// two writes: no line is lost or written twice, and `seq` runs on in the new file.
    pub fn reopen(&self) {
        self.queue.lock().reopen = true;
        self.queue.ready.notify_one();
    }
}

/// The event loop's half of the output: numbers, serializes and queues lines; a thread writes
/// them. Nothing here blocks on the output.
pub struct Sink {
    queue: Arc<Queue>,
    pub format: Format,
    seq: u64,
    host: String,
    clock: Clock,
    scratch: Vec<u8>,
    /// Records are being dropped: the queue filled up and has not drained to the resume mark.
    dropping: bool,
    /// Records dropped in the current hole (not yet reported by a `lost` line), and in all.
    dropped: u64,
    dropped_total: u64,
    /// The queue filled up since the last time it was found empty.
    filled: bool,
}

/// Where lines go: a file opened for appending, or (a duplicate of) stdout.
fn open_output(path: Option<&Path>) -> Result<File> {
    match path {
        Some(p) => OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .with_context(|| format!("failed to open --output {} for appending", p.display())),
        None => {
            // SAFETY: fcntl(F_GETFL) on any fd number is harmless.
            let flags = unsafe { libc::fcntl(1, libc::F_GETFL) };
            if flags < 0 {
                anyhow::bail!(
                    "stdout is closed ({}): give oomtrace somewhere to write, e.g. --output PATH",
                    io::Error::last_os_error()
                );
            }
            if flags & libc::O_ACCMODE == libc::O_RDONLY {
                anyhow::bail!(
                    "stdout is open read-only: give oomtrace somewhere to write, e.g. --output PATH"
                );
            }
            // `oomtrace run >&-`: the Rust runtime opens /dev/null (read-write) on a closed fd 1
            // before main, so that no file opened later becomes "stdout" by accident.
            if is_dev_null(1) {
                log::warn!(
                    "stdout is /dev/null{}: the event stream is discarded (pass --output PATH to keep it)",
                    if flags & libc::O_ACCMODE == libc::O_RDWR {
                        " (was it closed, `>&-`?)"
                    } else {
                        ""
                    }
                );
            }
            // SAFETY: fd 1 is open (checked above) for the duration of this call.
            let fd = unsafe { BorrowedFd::borrow_raw(1) };
            Ok(File::from(
                fd.try_clone_to_owned().context("failed to duplicate stdout")?,
            ))
        }
    }
}

/// Whether `fd` is the null device (char device 1:3).
fn is_dev_null(fd: i32) -> bool {
    // SAFETY: an all-zero stat is valid; fstat writes it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat(2) with a valid out-pointer.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return false;
    }
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && libc::major(st.st_rdev) == 1 && libc::minor(st.st_rdev) == 3
}

impl Sink {
    /// Opens the output (`path`, else stdout) and starts the writer thread.
    pub fn open(format: Format, path: Option<&Path>, host: String, clock: Clock) -> Result<(Self, Writer)> {
        let file = open_output(path)?;
        let target = path.map_or("stdout".to_owned(), |p| p.display().to_string());
        let reopen: Option<Reopen> = path.map(|p| {
            let p = p.to_owned();
            Box::new(move || -> io::Result<Box<dyn Write + Send>> {
                Ok(Box::new(Blocking(
                    OpenOptions::new().create(true).append(true).open(&p)?,
                )))
            }) as Reopen
        });
        Self::with_reopen(format, Box::new(Blocking(file)), target, host, clock, reopen)
    }

    /// A sink writing to `out`; `target` names it in error messages.
    pub fn new(
        format: Format,
        out: Box<dyn Write + Send>,
        target: String,
        host: String,
        clock: Clock,
    ) -> Result<(Self, Writer)> {
        Self::with_reopen(format, out, target, host, clock, None)
    }

    /// The same, with a way to open the output again (a file under log rotation).
    pub fn with_reopen(
        format: Format,
        mut out: Box<dyn Write + Send>,
        target: String,
        host: String,
        clock: Clock,
        mut reopen: Option<Reopen>,
    ) -> Result<(Self, Writer)> {
        let resume = Arc::new(Notify::new());
        let queue = Arc::new(Queue {
            state: Mutex::new(QueueState::default()),
            ready: Condvar::new(),
            resume: resume.clone(),
        });
        let (tx, done) = oneshot::channel();
        let q = queue.clone();
        thread::Builder::new()
            .name("oomtrace-writer".into())
            .spawn(move || {
                let r = write_lines(&q, &mut out, &mut reopen, &target).map_err(|e| classify(e, &target));
                {
                    let mut s = q.lock();
                    s.dead = true;
                    s.lines.clear();
                    s.bytes = 0;
                }
                let _ = tx.send(r);
            })
            .context("failed to start the writer thread")?;
        let writer = Writer {
            done,
            resume,
            queue: queue.clone(),
        };
        let sink = Self {
            queue,
            format,
            seq: 0,
            host,
            clock,
            scratch: Vec::with_capacity(8 << 10),
            dropping: false,
            dropped: 0,
            dropped_total: 0,
            filled: false,
        };
        Ok((sink, writer))
    }

    /// Measures the boot-time -> wall-clock offset again (after an NTP step, say).
    pub fn refresh_clock(&mut self) {
        self.clock = Clock::new();
    }

    /// The sequence number the next line will carry.
    pub fn next_seq(&self) -> u64 {
        self.seq
    }

    /// Queues one event under the next `seq`; returns whether it was queued. In text format,
    /// events without a text form are skipped (they still take their `seq`).
    ///
    /// Records (not [`Event::is_control`]) are dropped while the queue is full: each still takes
    /// its `seq`, so the stream has a hole there, which the next `lost` line of reason
    /// `output_backpressure` (written once the queue has drained to
    /// [`OUTPUT_QUEUE_RESUME_BYTES`], see [`Sink::backlogged`]) closes: its `count` is the width
    /// of the hole just before it. Control lines (`start`, `lost`, `stop`) are never dropped: one
    /// may take the queue past its bound by its own size; callers write `lost` lines only when
    /// [`Sink::backlogged`] says there is room, so that cannot repeat.
    pub fn emit(&mut self, boot_ns: u64, ev: &Event) -> bool {
        let seq = self.seq;
        self.seq += 1;
        let text = match self.format {
            Format::Json => None,
            Format::Text => match text::render(ev) {
                Some(t) => Some(t),
                None => return true,
            },
        };
        let control = ev.is_control();
        if self.dropping && !control {
            self.drop_one();
            return false;
        }
        let line = self.serialize(seq, boot_ns, ev, text);
        let mut s = self.queue.lock();
        let full = s.bytes + line.len() > OUTPUT_QUEUE_BYTES;
        if control {
            if full && !self.dropping {
                s.want_resume = true;
                self.dropping = true;
                self.filled = true;
            }
        } else if s.bytes > 0 && full {
            s.want_resume = true;
            drop(s);
            self.dropping = true;
            self.filled = true;
            self.drop_one();
            return false;
        }
        push(&self.queue, s, line);
        true
    }

    fn drop_one(&mut self) {
        self.dropped += 1;
        self.dropped_total += 1;
    }

    /// True while records are being dropped. Called before numbering a record: if the queue
    /// has drained to the resume mark, this first writes the `lost` line that closes the hole.
    pub fn backlogged(&mut self) -> bool {
        if self.dropping {
            let mut s = self.queue.lock();
            if s.bytes > OUTPUT_QUEUE_RESUME_BYTES && !s.dead {
                s.want_resume = true;
                return true;
            }
            s.want_resume = false;
            drop(s);
            self.dropping = false;
            self.close_hole();
        }
        false
    }

    /// Writes the `lost` line of the current hole even if the queue is still full (at stop).
    pub fn finish(&mut self) {
        self.dropping = false;
        self.close_hole();
    }

    fn close_hole(&mut self) {
        if self.dropped == 0 {
            return;
        }
        let (count, total) = (self.dropped, self.dropped_total);
        self.dropped = 0;
        let lost = Event::Lost(Lost {
            reason: LostReason::OutputBackpressure,
            count,
            total,
        });
        self.emit(Clock::now_boot_ns(), &lost);
    }

    /// True once after the queue filled up and has since been written out completely: the
    /// moment to give the memory it held back to the kernel.
    pub fn drained_after_filling(&mut self) -> bool {
        if self.filled && !self.dropping && self.queue.lock().bytes == 0 {
            self.filled = false;
            return true;
        }
        false
    }

    /// Records dropped because the output did not keep up, since start.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }

    /// No more lines: the writer thread exits once it has written what is queued.
    pub fn close(&self) {
        let mut s = self.queue.lock();
        s.closed = true;
        drop(s);
        self.queue.ready.notify_one();
    }

    /// Lines queued that the output has not taken (yet).
    pub fn unwritten(&self) -> u64 {
        let s = self.queue.lock();
        s.queued - s.written
    }

    fn serialize(&mut self, seq: u64, boot_ns: u64, body: &Event, text: Option<String>) -> Box<[u8]> {
        let kind = body.event_type();
        let time = rfc3339(self.clock.unix_ns(boot_ns));
        self.scratch.clear();
        match (self.format, text) {
            (Format::Text, Some(t)) => {
                self.scratch.extend_from_slice(time.as_bytes());
                self.scratch.push(b' ');
                self.scratch.extend_from_slice(t.as_bytes());
            }
            _ => {
                let line = Line {
                    schema: SCHEMA_VERSION,
                    kind,
                    seq,
                    time,
                    boot_ns,
                    host: &self.host,
                    body,
                };
                // Writing into a Vec fails only if a Serialize impl does; ours never do.
                if let Err(e) = serde_json::to_writer(&mut self.scratch, &line) {
                    log::error!("failed to serialize a {kind} record: {e}");
                    self.scratch.clear();
                    self.scratch.extend_from_slice(b"{}");
                }
            }
        }
        self.scratch.push(b'\n');
        // An exact-size copy: the queue's byte count is what the lines really hold.
        let line: Box<[u8]> = self.scratch.as_slice().into();
        if self.scratch.capacity() > 256 << 10 {
            self.scratch = Vec::with_capacity(8 << 10);
        }
        line
    }
}

fn push(q: &Queue, mut s: MutexGuard<'_, QueueState>, line: Box<[u8]>) {
    if s.dead || s.closed {
        return;
    }
    s.bytes += line.len();
    s.queued += 1;
    s.lines.push_back(line);
    drop(s);
    q.ready.notify_one();
}

/// The writer thread: takes lines off the queue in batches and writes them, until the queue is
/// closed and empty or a write fails.
/// Opens the output again, for SIGHUP.
pub type Reopen = Box<dyn FnMut() -> io::Result<Box<dyn Write + Send>> + Send>;

fn write_lines(
    q: &Queue,
    out: &mut Box<dyn Write + Send>,
    reopen: &mut Option<Reopen>,
    target: &str,
) -> io::Result<()> {
    let mut batch = Vec::with_capacity(WRITE_BATCH_BYTES);
    loop {
        let (lines, bytes) = {
            let mut s = q.lock();
            while s.lines.is_empty() && !s.closed && !s.reopen {
                s = q.ready.wait(s).unwrap_or_else(|p| p.into_inner());
            }
            if std::mem::take(&mut s.reopen) {
                // Between two writes: every line so far went to the old file, every later one
                // goes to the new.
                drop(s);
                match reopen.as_mut() {
                    Some(open) => match open() {
                        Ok(new) => {
                            *out = new;
                            log::info!("SIGHUP: reopened {target}");
                        }
                        Err(e) => log::error!(
                            "SIGHUP: failed to reopen {target} ({e}): still writing to the old file"
                        ),
                    },
                    None => log::info!("SIGHUP: the output is {target}, nothing to reopen"),
                }
                continue;
            }
            if s.lines.is_empty() {
                return Ok(());
            }
            batch.clear();
            let mut n = 0u64;
            while let Some(l) = s.lines.front() {
                if n > 0 && batch.len() + l.len() > WRITE_BATCH_BYTES {
                    break;
                }
                batch.extend_from_slice(l);
                s.lines.pop_front();
                n += 1;
            }
            (n, batch.len())
        };
        out.write_all(&batch)?;
        out.flush()?;
        if batch.capacity() > 4 * WRITE_BATCH_BYTES {
            batch = Vec::with_capacity(WRITE_BATCH_BYTES);
        }
        let mut s = q.lock();
        s.bytes -= bytes;
        s.written += lines;
        if s.want_resume && s.bytes <= OUTPUT_QUEUE_RESUME_BYTES {
            s.want_resume = false;
            q.resume.notify_one();
        }
    }
}

/// Writes to a file descriptor, waiting for it when it is non-blocking (a pipe whose reader set
/// O_NONBLOCK on the shared file description, say) instead of failing with EAGAIN.
struct Blocking(File);

impl Write for Blocking {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match self.0.write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let mut pfd = libc::pollfd {
                        fd: self.0.as_raw_fd(),
                        events: libc::POLLOUT,
                        revents: 0,
                    };
                    // SAFETY: pfd is one valid pollfd.
                    if unsafe { libc::poll(&mut pfd, 1, -1) } < 0 {
                        let e = io::Error::last_os_error();
                        if e.kind() != io::ErrorKind::Interrupted {
                            return Err(e);
                        }
                    }
                }
                r => return r,
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

fn classify(e: io::Error, target: &str) -> WriteError {
    if e.kind() == io::ErrorKind::BrokenPipe {
        return WriteError::Closed;
    }
    let hint = match e.raw_os_error() {
        Some(libc::ENOSPC) => " (the filesystem is full: free space or point --output elsewhere)",
        Some(libc::EROFS) => " (the filesystem is read-only: point --output elsewhere)",
        Some(libc::EDQUOT) => " (disk quota exceeded)",
        Some(libc::EFBIG) => " (the file is too large: rotate it, or point --output elsewhere)",
        Some(libc::EIO) => " (I/O error: check the device)",
        _ => "",
    };
    WriteError::Failed(anyhow::Error::new(e).context(format!("failed to write to {target}{hint}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339(1_795_811_460_123_456_789),
            "2026-11-27T20:31:00.123456789Z"
        );
        assert_eq!(rfc3339(951_782_400_000_000_001), "2000-02-29T00:00:00.000000001Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999999999Z");
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(64 << 20), "64.0 MiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }

    #[test]
    fn clock_maps_now_to_now() {
        let c = Clock::new();
        let t = rfc3339(c.unix_ns(Clock::now_boot_ns()));
        assert!(t.starts_with("20"), "{t}");
    }

    /// An output that takes nothing until the gate opens, like a pipe nobody reads.
    struct Gated {
        gate: Arc<(Mutex<bool>, Condvar)>,
        got: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Gated {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let (open, cv) = &*self.gate;
            let mut o = open.lock().unwrap();
            while !*o {
                o = cv.wait(o).unwrap();
            }
            self.got.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn start() -> Event {
        Event::Stop(crate::event::Stop {
            reason: crate::event::StopReason::Signal,
            oom_kills: 0,
            lost: 0,
        })
    }

    /// A record of about `n` bytes.
    fn rec(n: usize) -> Event {
        Event::MemcgOom(crate::event::MemcgOomEv {
            memcg: crate::event::Cgroup {
                id: 1,
                path: Some("x".repeat(n)),
            },
            source: crate::event::MemcgOomSource::CgroupV2MemoryEvents,
            under_oom: None,
            oom_kill_disable: None,
            oom_kills: None,
            oom_events: None,
        })
    }

    fn lines_of(bytes: &[u8]) -> Vec<serde_json::Value> {
        String::from_utf8_lossy(bytes)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn a_stalled_output_costs_records_not_memory_and_seq_shows_the_hole() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let got = Arc::new(Mutex::new(Vec::new()));
        let out = Gated {
            gate: gate.clone(),
            got: got.clone(),
        };
        let (mut sink, writer) = Sink::new(
            Format::Json,
            Box::new(out),
            "test".into(),
            "h".into(),
            Clock::new(),
        )
        .unwrap();
        sink.emit(1, &start());
        let rec = rec(4000);
        // 3x the bound while nobody reads: the queue stays bounded, the rest is dropped.
        let n = 3 * OUTPUT_QUEUE_BYTES / 4000;
        let queued = (0..n).filter(|_| sink.emit(2, &rec)).count();
        assert!(sink.backlogged());
        assert!(queued > 0 && queued < n, "{queued} of {n}");
        assert_eq!(sink.dropped_total(), (n - queued) as u64);
        {
            let s = sink.queue.lock();
            assert!(s.bytes <= OUTPUT_QUEUE_BYTES, "{} bytes queued", s.bytes);
        }
        // The reader comes back: once the queue has drained to the resume mark, the hole is
        // closed by a lost line and records flow again.
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while sink.backlogged() {
            assert!(std::time::Instant::now() < deadline, "never resumed");
            thread::sleep(Duration::from_millis(5));
        }
        assert!(sink.emit(3, &rec));
        sink.emit(4, &start());
        sink.close();
        writer.done.blocking_recv().unwrap().unwrap();
        assert_eq!(sink.unwritten(), 0);
        let lines = lines_of(&got.lock().unwrap());
        assert_eq!(lines.len(), 1 + queued + 1 + 1 + 1);
        let lost: Vec<&serde_json::Value> = lines.iter().filter(|l| l["type"] == "lost").collect();
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0]["reason"], "output_backpressure");
        assert_eq!(lost[0]["count"], (n - queued) as u64);
        assert_eq!(lost[0]["total"], (n - queued) as u64);
        // Every gap in seq is exactly the count of the lost line right after it.
        let mut prev = lines[0]["seq"].as_u64().unwrap();
        for l in &lines[1..] {
            let seq = l["seq"].as_u64().unwrap();
            if seq != prev + 1 {
                assert_eq!(l["reason"], "output_backpressure", "unexplained gap before {l}");
                assert_eq!(seq - prev - 1, l["count"].as_u64().unwrap());
            }
            prev = seq;
        }
        assert_eq!(prev, n as u64 + 3);
    }

    struct Failing(i32);

    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from_raw_os_error(self.0))
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn write_errors_end_the_writer_with_a_named_cause() {
        let (mut sink, writer) = Sink::new(
            Format::Json,
            Box::new(Failing(libc::ENOSPC)),
            "/mnt/full/x.jsonl".into(),
            "h".into(),
            Clock::new(),
        )
        .unwrap();
        sink.emit(1, &start());
        let Err(WriteError::Failed(e)) = writer.done.blocking_recv().unwrap() else {
            panic!("ENOSPC must fail the run")
        };
        let msg = format!("{e:#}");
        assert!(
            msg.contains("/mnt/full/x.jsonl") && msg.contains("filesystem is full"),
            "{msg}"
        );
        // Lines after the writer died are discarded, not piled up.
        for _ in 0..1000 {
            sink.emit(2, &rec(4000));
        }
        assert_eq!(sink.queue.lock().bytes, 0);

        let (mut sink, writer) = Sink::new(
            Format::Json,
            Box::new(Failing(libc::EPIPE)),
            "stdout".into(),
            "h".into(),
            Clock::new(),
        )
        .unwrap();
        sink.emit(1, &start());
        assert!(matches!(
            writer.done.blocking_recv().unwrap(),
            Err(WriteError::Closed)
        ));
    }

    #[test]
    fn text_lines_cannot_be_forged() {
        assert_eq!(escape_controls("plain /a b"), "plain /a b");
        assert_eq!(
            escape_controls("x\n2026 oom_kill\t\u{1b}[2J"),
            "x\\n2026 oom_kill\\t\\u{1b}[2J"
        );
        assert_eq!(escape_controls("caf\u{e9} \u{fffd}"), "caf\u{e9} \u{fffd}");
    }
}
