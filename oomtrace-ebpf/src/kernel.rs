//! Reading kernel structures at offsets resolved from the running kernel's BTF (see the loader's
//! `btf.rs`). rustc cannot emit CO-RE relocations, so every offset arrives through `CONFIG`; an
//! offset of `ABSENT` means the field does not exist on this kernel and reads as `None`.

use aya_ebpf::helpers::bpf_probe_read_kernel;
use oomtrace_common::{ABSENT, MEMCG_LEVELS, MemcgLevel, MmCounters, TaskIds, memcg};

use crate::cfg;

/// Reads a `T` at `base + off`, or `None` if the field is absent, `base` is NULL or the read faults.
#[inline(always)]
pub fn read<T>(base: *const u8, off: u32) -> Option<T> {
    if off == ABSENT || base.is_null() {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel never faults: a bad address returns an error instead.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(off as usize) as *const T).ok() }
}

#[inline(always)]
pub fn read_ptr(base: *const u8, off: u32) -> *const u8 {
    read::<*const u8>(base, off).unwrap_or(core::ptr::null())
}

/// The task's memory-controller css (`task->cgroups->subsys[memory_cgrp_id]`), NULL without memcg.
/// `struct mem_cgroup` starts with its css (include/linux/memcontrol.h, v6.18), so this is also the memcg.
#[inline(always)]
pub fn task_memcg(task: *const u8) -> *const u8 {
    let id = cfg!(memory_cgrp_id);
    if id == ABSENT || id >= 16 {
        return core::ptr::null();
    }
    let cgroups = read_ptr(task, cfg!(task_cgroups));
    let subsys = cfg!(css_set_subsys);
    if subsys == ABSENT {
        return core::ptr::null();
    }
    read_ptr(cgroups, subsys + id * 8)
}

/// `css->cgroup->kn->id`: the cgroup directory's inode number on 64-bit kernels (fs/kernfs, v5.5+).
#[inline(always)]
pub fn css_id(css: *const u8) -> u64 {
    let cgroup = read_ptr(css, cfg!(css_cgroup));
    let kn = read_ptr(cgroup, cfg!(cgroup_kn));
    read::<u64>(kn, cfg!(kn_id)).unwrap_or(0)
}

/// Fills `ids` (but not its comm) from a task pointer.
#[inline(always)]
pub fn task_ids(task: *const u8, ids: &mut TaskIds) {
    ids.tid = read::<i32>(task, cfg!(task_pid)).unwrap_or(0) as u32;
    ids.tgid = read::<i32>(task, cfg!(task_tgid)).unwrap_or(0) as u32;
    ids.memcg_id = css_id(task_memcg(task));
}

#[inline(always)]
pub fn task_comm(task: *const u8, comm: &mut [u8; 16]) {
    if let Some(c) = read::<[u8; 16]>(task, cfg!(task_comm)) {
        *comm = c;
    }
}

/// Walks from `css` to the root, recording each memcg's id and `memory` page counter.
/// Returns the number of levels written.
#[inline(always)]
pub fn memcg_levels(mut css: *const u8, out: &mut [MemcgLevel; MEMCG_LEVELS]) -> u32 {
    let memory = cfg!(memcg_memory);
    if memory == ABSENT {
        return 0;
    }
    let usage = memory.wrapping_add(cfg!(page_counter_usage));
    let max = memory.wrapping_add(cfg!(page_counter_max));
    let watermark = memory.wrapping_add(cfg!(page_counter_watermark));
    let swap = cfg!(memcg_swap);
    let swap_usage = swap.wrapping_add(cfg!(page_counter_usage));
    let swap_max = swap.wrapping_add(cfg!(page_counter_max));
    let parent = cfg!(css_parent);
    let mut n = 0;
    for level in out.iter_mut() {
        if css.is_null() {
            break;
        }
        level.id = css_id(css);
        level.usage_pages = read::<u64>(css, usage).unwrap_or(0);
        level.max_pages = read::<u64>(css, max).unwrap_or(u64::MAX);
        if cfg!(page_counter_watermark) != ABSENT {
            level.watermark_pages = read::<u64>(css, watermark).unwrap_or(0);
        }
        if swap != ABSENT {
            level.swap_usage_pages = read::<u64>(css, swap_usage).unwrap_or(0);
            level.swap_max_pages = read::<u64>(css, swap_max).unwrap_or(u64::MAX);
        }
        n += 1;
        css = read_ptr(css, parent);
    }
    n
}

/// The nearest memcg from `css` up whose `memory` page counter cannot take one more page, else
/// the nearest within a charge batch of its limit ([`memcg::oom_level`], the rule the loader
/// applies to the kill record); 0 if none. Taken when memcg reclaim begins, right after
/// page_counter_try_charge() failed at that memcg (try_charge_memcg(), mm/memcontrol.c v6.18):
/// the counters then still show which limit fired, while at mark_victim memory that other dying
/// tasks free in the meantime may already hide it. The reclaim tracepoint does not carry the
/// charge's size (try_to_free_mem_cgroup_pages() records order 0, mm/vmscan.c v6.18): one page.
#[inline(always)]
pub fn memcg_at_limit(css: *const u8) -> u64 {
    let memory = cfg!(memcg_memory);
    if memory == ABSENT {
        return 0;
    }
    let usage = memory.wrapping_add(cfg!(page_counter_usage));
    let max = memory.wrapping_add(cfg!(page_counter_max));
    let levels = Ancestors::new(css).map(|css| {
        let u = read::<u64>(css, usage).unwrap_or(0);
        let m = read::<u64>(css, max).unwrap_or(u64::MAX);
        (css, u, m)
    });
    memcg::oom_level(levels, 1, cfg!(page_shift)).map_or(0, css_id)
}

/// `css` and its parents, nearest first, at most [`MEMCG_LEVELS`]. A parent is read only when it
/// is asked for.
struct Ancestors {
    css: *const u8,
    left: usize,
}

impl Ancestors {
    #[inline(always)]
    fn new(css: *const u8) -> Self {
        Self {
            css,
            left: MEMCG_LEVELS,
        }
    }
}

impl Iterator for Ancestors {
    type Item = *const u8;

    #[inline(always)]
    fn next(&mut self) -> Option<*const u8> {
        if self.css.is_null() || self.left == 0 {
            return None;
        }
        let css = self.css;
        self.left -= 1;
        self.css = if self.left == 0 {
            core::ptr::null()
        } else {
            read_ptr(css, cfg!(css_parent))
        };
        Some(css)
    }
}

/// One `mm->rss_stat` counter in pages. Since 6.2 each is a `struct percpu_counter` whose `count`
/// is what `get_mm_counter()` reports (percpu_counter_read_positive, include/linux/mm.h v6.18);
/// before, an `atomic_long_t`. The loader describes either with `rss_stride`/`rss_value`.
#[inline(always)]
fn rss_counter(mm: *const u8, idx: u32) -> u64 {
    let base = cfg!(mm_rss_stat);
    if idx == ABSENT || base == ABSENT {
        return 0;
    }
    let off = base + idx * cfg!(rss_stride) + cfg!(rss_value);
    read::<i64>(mm, off).unwrap_or(0).max(0) as u64
}

/// The task's mm counters in KiB. Returns false if the task has no mm.
#[inline(always)]
pub fn mm_counters(task: *const u8, out: &mut MmCounters) -> bool {
    let mm = read_ptr(task, cfg!(task_mm));
    if mm.is_null() {
        return false;
    }
    let to_kb = cfg!(page_shift).saturating_sub(10);
    out.total_vm_kb = read::<u64>(mm, cfg!(mm_total_vm)).unwrap_or(0) << to_kb;
    out.hiwater_rss_kb = read::<u64>(mm, cfg!(mm_hiwater_rss)).unwrap_or(0) << to_kb;
    out.file_rss_kb = rss_counter(mm, cfg!(rss_file_idx)) << to_kb;
    out.anon_rss_kb = rss_counter(mm, cfg!(rss_anon_idx)) << to_kb;
    out.swap_kb = rss_counter(mm, cfg!(rss_swap_idx)) << to_kb;
    out.shmem_rss_kb = rss_counter(mm, cfg!(rss_shmem_idx)) << to_kb;
    out.pgtables_kb = read::<i64>(mm, cfg!(mm_pgtables_bytes)).unwrap_or(0).max(0) as u64 >> 10;
    true
}
