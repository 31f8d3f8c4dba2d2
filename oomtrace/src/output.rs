//! Where events go: JSON Lines (or one human line per kill) to stdout or a file, one flush per
//! event so a log shipper sees each kill at once. Timestamps: boot-time nanoseconds from the
//! kernel, turned into RFC 3339 wall-clock time with the offset measured at start.

use std::{
    fs::OpenOptions,
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use clap::ValueEnum;
use serde::Serialize;

use crate::event::{Line, SCHEMA_VERSION};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One JSON object per line (the contract in docs/events.md).
    Json,
    /// One human-readable line per kill.
    Text,
}

/// Boot-time → wall-clock conversion.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// CLOCK_REALTIME minus CLOCK_BOOTTIME, in ns.
    offset_ns: i128,
}

fn clock_ns(id: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec.
    unsafe { libc::clock_gettime(id, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

impl Clock {
    pub fn new() -> Self {
        let boot = clock_ns(libc::CLOCK_BOOTTIME);
        let real = clock_ns(libc::CLOCK_REALTIME);
        Self {
            offset_ns: real - boot,
        }
    }

    pub fn now_boot_ns() -> u64 {
        clock_ns(libc::CLOCK_BOOTTIME) as u64
    }

    pub fn wall(&self, boot_ns: u64) -> String {
        rfc3339((self.offset_ns + i128::from(boot_ns)) as i64)
    }
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

pub struct Sink {
    out: Box<dyn Write>,
    pub format: Format,
    seq: u64,
    host: String,
    clock: Clock,
    path: Option<PathBuf>,
}

/// What went wrong writing a line.
pub enum WriteError {
    /// The reader went away (`oomtrace run | head -1`): a clean stop.
    Closed,
    Failed(anyhow::Error),
}

impl Sink {
    pub fn open(format: Format, path: Option<&Path>, host: String, clock: Clock) -> Result<Self> {
        let out: Box<dyn Write> = match path {
            Some(p) => Box::new(BufWriter::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .with_context(|| format!("failed to open --output {} for appending", p.display()))?,
            )),
            None => Box::new(BufWriter::new(io::stdout())),
        };
        Ok(Self {
            out,
            format,
            seq: 0,
            host,
            clock,
            path: path.map(Path::to_owned),
        })
    }

    /// The sequence number the next line will carry.
    pub fn next_seq(&self) -> u64 {
        self.seq
    }

    /// Writes one event. In text format, `text` is written instead of the JSON (and events
    /// without a text form are skipped).
    pub fn emit<T: Serialize>(
        &mut self,
        kind: &'static str,
        boot_ns: u64,
        body: &T,
        text: Option<String>,
    ) -> Result<(), WriteError> {
        let seq = self.seq;
        self.seq += 1;
        let time = self.clock.wall(boot_ns);
        let res = match self.format {
            Format::Json => {
                let line = Line {
                    schema: SCHEMA_VERSION,
                    kind,
                    seq,
                    time,
                    boot_ns,
                    host: &self.host,
                    body,
                };
                serde_json::to_writer(&mut self.out, &line)
                    .map_err(io::Error::from)
                    .and_then(|()| self.out.write_all(b"\n"))
            }
            Format::Text => match text {
                Some(t) => writeln!(self.out, "{time} {t}"),
                None => return Ok(()),
            },
        };
        res.and_then(|()| self.out.flush()).map_err(|e| self.classify(e))
    }

    fn classify(&self, e: io::Error) -> WriteError {
        if e.kind() == io::ErrorKind::BrokenPipe {
            return WriteError::Closed;
        }
        let target = self
            .path
            .as_ref()
            .map_or("stdout".to_owned(), |p| p.display().to_string());
        let hint = match e.raw_os_error() {
            Some(libc::ENOSPC) => " (the filesystem is full: free space or point --output elsewhere)",
            Some(libc::EROFS) => " (the filesystem is read-only)",
            Some(libc::EDQUOT) => " (disk quota exceeded)",
            _ => "",
        };
        WriteError::Failed(anyhow::Error::new(e).context(format!("failed to write to {target}{hint}")))
    }
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
        let t = c.wall(Clock::now_boot_ns());
        assert!(t.starts_with("20"), "{t}");
    }
}
