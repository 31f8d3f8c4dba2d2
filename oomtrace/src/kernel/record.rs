//! Decoding ring-buffer records. A record that is too short or of an unknown kind is an error the
//! caller counts and reports as `lost`; it never panics.

use std::mem::size_of;

use anyhow::{Result, bail};
use oomtrace_common::{Exit, OomKill, Reap, RecordKind, Signal};

#[derive(Debug)]
pub enum Record {
    OomKill(Box<OomKill>),
    Signal(Box<Signal>),
    Exit(Box<Exit>),
    Reap(Reap),
}

/// Copies a `T` out of `bytes` after checking the length.
///
/// # Safety
/// `T` must be a `repr(C)` type made only of integers (valid for any bit pattern).
unsafe fn copy_out<T>(bytes: &[u8], what: &str) -> Result<T> {
    if bytes.len() < size_of::<T>() {
        bail!(
            "{what} record of {} bytes, expected {}",
            bytes.len(),
            size_of::<T>()
        );
    }
    // SAFETY: length checked above; any bit pattern is valid per the caller's contract;
    // read_unaligned copes with the ring buffer's 8-byte alignment.
    Ok(unsafe { bytes.as_ptr().cast::<T>().read_unaligned() })
}

pub fn decode(bytes: &[u8]) -> Result<Record> {
    let Some(&kind) = bytes.first() else {
        bail!("empty record");
    };
    // SAFETY (all three): the record types are repr(C) integers and arrays of integers.
    match kind {
        k if k == RecordKind::OomKill as u8 => {
            Ok(Record::OomKill(Box::new(unsafe { copy_out(bytes, "oom_kill") }?)))
        }
        k if k == RecordKind::Signal as u8 => {
            Ok(Record::Signal(Box::new(unsafe { copy_out(bytes, "signal") }?)))
        }
        k if k == RecordKind::Exit as u8 => Ok(Record::Exit(Box::new(unsafe { copy_out(bytes, "exit") }?))),
        k if k == RecordKind::Reap as u8 => Ok(Record::Reap(unsafe { copy_out(bytes, "oom_reap") }?)),
        k => bail!("unknown record kind {k}"),
    }
}

/// A NUL-terminated kernel `comm` as text (lossy: comm is bytes, not necessarily UTF-8).
pub fn comm(raw: &[u8]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

#[cfg(test)]
pub(crate) mod tests {
    use oomtrace_common::{MemcgLevel, MmCounters, OomControl, Reclaim, TaskIds, VictimSource};

    use super::*;

    pub(crate) fn sample() -> OomKill {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"hog\0");
        let mut tcomm = [0u8; 16];
        tcomm[..7].copy_from_slice(b"trigger");
        let mut memcg = [MemcgLevel::default(); 8];
        memcg[0] = MemcgLevel {
            id: 4242,
            usage_pages: 16384,
            max_pages: 16384,
            ..Default::default()
        };
        memcg[1] = MemcgLevel {
            id: 1,
            usage_pages: 900_000,
            max_pages: u64::MAX >> 12,
            ..Default::default()
        };
        let mut kstack = [0u64; 32];
        kstack[0] = 0xffff_ffff_8100_0010;
        OomKill {
            kind: RecordKind::OomKill as u8,
            victim_source: VictimSource::TpBtf as u8,
            _pad0: [0; 2],
            flags: oomtrace_common::flags::VICTIM_MM | oomtrace_common::flags::VICTIM_MEMCG,
            ts_boot_ns: 1_000_000_000,
            victim: TaskIds {
                tgid: 100,
                tid: 101,
                memcg_id: 4242,
                comm,
            },
            trigger: TaskIds {
                tgid: 200,
                tid: 200,
                memcg_id: 4242,
                comm: tcomm,
            },
            victim_mm: MmCounters {
                total_vm_kb: 70000,
                anon_rss_kb: 65000,
                ..Default::default()
            },
            victim_uid: 1000,
            victim_oom_score_adj: 500,
            memcg,
            memcg_depth: 2,
            _pad1: 0,
            exact: OomControl::default(),
            reclaim: Reclaim::default(),
            kstack_bytes: 8,
            kstack,
            ustack_bytes: 0,
            ustack: [0; oomtrace_common::USTACK_DEPTH],
            ubuild_bytes: 0,
            ubuild: [oomtrace_common::BuildIdFrame {
                status: 0,
                build_id: [0; 20],
                offset_or_ip: 0,
            }; oomtrace_common::USTACK_BUILD_ID_DEPTH],
        }
    }

    pub(crate) fn bytes_of(rec: &OomKill) -> Vec<u8> {
        // SAFETY: OomKill is repr(C) plain data without implicit padding (layout pinned in common).
        unsafe { std::slice::from_raw_parts((rec as *const OomKill).cast::<u8>(), size_of::<OomKill>()) }
            .to_vec()
    }

    #[test]
    fn decodes_a_record_at_any_alignment() {
        let rec = sample();
        let mut buf = vec![0u8; 1];
        buf.extend(bytes_of(&rec));
        let Record::OomKill(got) = decode(&buf[1..]).unwrap() else {
            panic!("wrong kind")
        };
        assert_eq!(got.victim, rec.victim);
        assert_eq!(got.memcg[0], rec.memcg[0]);
        assert_eq!(comm(&got.victim.comm), "hog");
        assert_eq!(comm(&got.trigger.comm), "trigger");
    }

    #[test]
    fn rejects_short_empty_and_unknown_records() {
        let bytes = bytes_of(&sample());
        assert!(decode(&bytes[..100]).is_err());
        assert!(decode(&[]).is_err());
        let mut bad = bytes.clone();
        bad[0] = 0;
        assert!(decode(&bad).is_err());
        bad[0] = 77;
        assert!(decode(&bad).is_err());
        // a signal record is shorter than an oom_kill one: a truncated one is refused too
        bad[0] = RecordKind::Signal as u8;
        assert!(decode(&bad[..40]).is_err());
        assert!(matches!(decode(&bad).unwrap(), Record::Signal(_)));
    }

    #[test]
    fn comm_is_lossy_and_stops_at_nul() {
        assert_eq!(comm(b"a\xffb\0zz"), "a\u{fffd}b");
        assert_eq!(comm(b"0123456789abcdef"), "0123456789abcdef");
    }
}
