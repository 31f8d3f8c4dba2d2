//! What a memory cgroup's memory was made of when the OOM killer fired.
//!
//! The page counters (usage, limit, peak, swap) are read in the kernel at `mark_victim`, exactly at
//! the kill. The breakdown (`memory.stat`: anon, file, THP, shmem, kernel...) has no cheap in-kernel
//! source: the kernel keeps it in per-CPU counters folded lazily by rstat (mm/memcontrol.c, v6.18),
//! and its own OOM report flushes them first. So it is read from cgroupfs the moment the record
//! arrives — before anything else is done with the record — and says so: `stat_source: "cgroupfs"`
//! with `stat_read_after_kill_ns`. By then the victim may already have released memory; the root
//! tests measure that drift.

use std::{fs, path::Path};

use oomtrace_common::{MemcgLevel, memcg};

use crate::event::{Memory, Stat, StatSource};

/// The breakdown of one memcg level, `version` being the cgroup version, `dir` its cgroupfs directory,
/// `page` the running kernel's page size in bytes.
pub fn memory(level: &MemcgLevel, page: u64, version: u8, dir: Option<&Path>, kill_ns: u64) -> Memory {
    let bytes = |pages: u64| pages.saturating_mul(page);
    // "max" is PAGE_COUNTER_MAX of this kernel's page size (see oomtrace_common::memcg).
    let limit = |pages: u64| memcg::is_limited(pages, page.trailing_zeros()).then(|| bytes(pages));
    let (swap, memsw) = if level.swap_max_pages == 0 && level.swap_usage_pages == 0 {
        ((None, None), (None, None))
    } else if version == 1 {
        (
            (None, None),
            (limit(level.swap_max_pages), Some(bytes(level.swap_usage_pages))),
        )
    } else {
        (
            (limit(level.swap_max_pages), Some(bytes(level.swap_usage_pages))),
            (None, None),
        )
    };
    let stat = dir.and_then(|d| read_stat(d, version));
    Memory {
        limit_bytes: limit(level.max_pages),
        usage_bytes: bytes(level.usage_pages),
        peak_bytes: (level.watermark_pages != 0).then(|| bytes(level.watermark_pages)),
        swap_limit_bytes: swap.0,
        swap_usage_bytes: swap.1,
        memsw_limit_bytes: memsw.0,
        memsw_usage_bytes: memsw.1,
        stat_source: stat.is_some().then_some(StatSource::Cgroupfs),
        stat_read_after_kill_ns: stat
            .is_some()
            .then(|| crate::kernel::clock::Clock::now_boot_ns().saturating_sub(kill_ns)),
        stat,
    }
}

fn kv(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

pub fn read_stat(dir: &Path, version: u8) -> Option<Stat> {
    let text = fs::read_to_string(dir.join("memory.stat")).ok()?;
    Some(if version == 1 {
        parse_v1(&text, dir)
    } else {
        parse_v2(&text)
    })
}

/// cgroup v1 memory.stat (Documentation/admin-guide/cgroup-v1/memory.rst): the `total_*` keys
/// are hierarchical, like the counters the OOM killer compares with the limit.
pub fn parse_v1(text: &str, dir: &Path) -> Stat {
    let t = |k: &str| kv(text, &format!("total_{k}")).or_else(|| kv(text, k));
    Stat {
        anon: t("rss"),
        file: t("cache"),
        anon_thp: t("rss_huge"),
        shmem: t("shmem"),
        file_mapped: t("mapped_file"),
        kernel: fs::read_to_string(dir.join("memory.kmem.usage_in_bytes"))
            .ok()
            .and_then(|s| s.trim().parse().ok()),
        slab: None,
        sock: None,
        pagetables: None,
        pgfault: t("pgfault"),
        pgmajfault: t("pgmajfault"),
        thp_fault_alloc: None,
    }
}

/// cgroup v2 memory.stat (Documentation/admin-guide/cgroup-v2.rst): hierarchical already.
pub fn parse_v2(text: &str) -> Stat {
    let k = |key: &str| kv(text, key);
    Stat {
        anon: k("anon"),
        file: k("file"),
        anon_thp: k("anon_thp"),
        shmem: k("shmem"),
        file_mapped: k("file_mapped"),
        kernel: k("kernel"),
        slab: k("slab"),
        sock: k("sock"),
        pagetables: k("pagetables"),
        pgfault: k("pgfault"),
        pgmajfault: k("pgmajfault"),
        thp_fault_alloc: k("thp_fault_alloc"),
    }
}

/// `AnonHugePages` of a live process (/proc/<pid>/smaps_rollup), in KiB.
pub fn anon_thp_kb(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    text.lines().find_map(|l| {
        l.strip_prefix("AnonHugePages:")?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v1_hierarchical_stat() {
        let text = "cache 100\nrss 200\nrss_huge 0\nshmem 1\nmapped_file 2\npgfault 9\npgmajfault 1\n\
                    total_cache 1000\ntotal_rss 2000\ntotal_rss_huge 2097152\ntotal_shmem 10\n\
                    total_mapped_file 20\ntotal_pgfault 90\ntotal_pgmajfault 3\n";
        let s = parse_v1(text, Path::new("/nonexistent"));
        assert_eq!(
            (s.anon, s.file, s.anon_thp),
            (Some(2000), Some(1000), Some(2097152))
        );
        assert_eq!(
            (s.shmem, s.file_mapped, s.pgfault, s.pgmajfault),
            (Some(10), Some(20), Some(90), Some(3))
        );
        assert_eq!((s.kernel, s.slab, s.thp_fault_alloc), (None, None, None));
    }

    #[test]
    fn parses_v2_stat() {
        let text = "anon 4096\nfile 8192\nkernel 12\nkernel_stack 1\npagetables 5\nsock 0\nshmem 3\n\
                    file_mapped 4\nanon_thp 2097152\nslab 7\npgfault 100\npgmajfault 2\nthp_fault_alloc 1\n";
        let s = parse_v2(text);
        assert_eq!(
            (s.anon, s.file, s.kernel, s.anon_thp),
            (Some(4096), Some(8192), Some(12), Some(2097152))
        );
        assert_eq!(
            (s.slab, s.sock, s.pagetables, s.thp_fault_alloc),
            (Some(7), Some(0), Some(5), Some(1))
        );
    }

    #[test]
    fn counters_from_the_kernel() {
        let l = MemcgLevel {
            id: 1,
            usage_pages: 16384,
            max_pages: 16384,
            watermark_pages: 16384,
            swap_usage_pages: 16384,
            swap_max_pages: memcg::page_counter_max(12),
        };
        let m = memory(&l, 4096, 1, None, 0);
        assert_eq!(
            (m.limit_bytes, m.usage_bytes, m.peak_bytes),
            (Some(64 << 20), 64 << 20, Some(64 << 20))
        );
        assert_eq!((m.memsw_limit_bytes, m.memsw_usage_bytes), (None, Some(64 << 20)));
        assert_eq!((m.swap_limit_bytes, m.stat, m.stat_source), (None, None, None));
        let m2 = memory(&l, 4096, 2, None, 0);
        assert_eq!(
            (m2.swap_usage_bytes, m2.memsw_usage_bytes),
            (Some(64 << 20), None)
        );
    }

    #[test]
    fn unlimited_on_a_64k_page_kernel_has_no_limit() {
        // arm64/ppc64 with 64 KiB pages: "max" is LONG_MAX / 65536 = 2^47 - 1 pages, below the
        // 2^50 once taken for "unlimited" (then reported as a limit of 8 EiB).
        let unlimited = memcg::page_counter_max(16);
        let l = MemcgLevel {
            id: 1,
            usage_pages: 1000,
            max_pages: unlimited,
            watermark_pages: 0,
            swap_usage_pages: 1,
            swap_max_pages: unlimited,
        };
        for version in [1, 2] {
            let m = memory(&l, 64 << 10, version, None, 0);
            assert_eq!(m.limit_bytes, None, "v{version}");
            assert_eq!(
                (m.swap_limit_bytes, m.memsw_limit_bytes),
                (None, None),
                "v{version}"
            );
            assert_eq!(m.usage_bytes, 1000 << 16);
        }
        // A real limit just below "max" is still one.
        let limited = MemcgLevel {
            max_pages: unlimited - 1,
            ..l
        };
        assert_eq!(
            memory(&limited, 64 << 10, 2, None, 0).limit_bytes,
            Some((unlimited - 1) << 16)
        );
    }
}
