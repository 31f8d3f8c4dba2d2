//! Turns a raw kernel record into the public `oom_kill` event: names cgroups, symbolizes the
//! stack, infers what the tracepoint modes cannot read, and groups `memory.oom.group` kills.

use std::{fs, sync::Arc};

use oomtrace_common::{MemcgLevel, OomKill, VictimSource, flags};

use crate::{
    enrich::{memstat, ustack::UserSymbolizer},
    event::{self, Allocation, Cgroup, OomMemcg, Trigger, Victim},
    kernel::{
        cgroup::Resolver,
        gfp::GfpBits,
        ksyms::{self, Ksyms},
        record::comm,
    },
};

/// `PAGE_COUNTER_MAX` is LONG_MAX / PAGE_SIZE (include/linux/page_counter.h, v6.18); anything this
/// large is "no limit".
const UNLIMITED_PAGES: u64 = 1 << 50;
/// How far apart the lines of one memory.oom.group kill may be.
const GROUP_WINDOW_NS: u64 = 1_000_000_000;

/// `enum oom_constraint` (include/linux/oom.h, v6.18; unchanged since 2.6.35).
fn constraint_name(c: u32) -> &'static str {
    match c {
        1 => "cpuset",
        2 => "mempolicy",
        3 => "memcg",
        _ => "global",
    }
}

/// System-wide facts the inference needs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Machine {
    pub page_size: u64,
    pub ram_pages: u64,
    pub swap_pages: u64,
}

impl Machine {
    pub fn read() -> Self {
        let page_size = 1u64 << crate::kernel::layout::page_shift();
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let kb = |key: &str| {
            meminfo
                .lines()
                .find_map(|l| {
                    l.strip_prefix(key)?
                        .trim()
                        .strip_suffix("kB")?
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .unwrap_or(0)
        };
        Self {
            page_size,
            ram_pages: kb("MemTotal:") * 1024 / page_size,
            swap_pages: kb("SwapTotal:") * 1024 / page_size,
        }
    }
}

pub struct Enricher {
    pub cgroups: Resolver,
    pub ksyms: Option<Arc<Ksyms>>,
    pub machine: Machine,
    /// The running kernel's gfp flag bits (BTF enum, or a per-version table).
    pub gfp: Option<GfpBits>,
    /// None with --no-user-stacks.
    pub ustack: Option<UserSymbolizer>,
    /// The previous record, to group one OOM's victims.
    last_kill: Option<LastKill>,
}

/// Picks the memcg whose limit fired from the trigger's hierarchy walk: the nearest level that
/// could not take `1 << order` more pages — try_charge_memcg() charges bottom-up and stops at the
/// first counter over its max (mm/memcontrol.c, v6.18). A little slack covers pages freed or
/// charged by other tasks between the failed charge and the kill.
pub fn infer_oom_memcg(levels: &[MemcgLevel], order: i32) -> Option<usize> {
    let nr = 1u64 << order.clamp(0, 10);
    let limited = |l: &&MemcgLevel| l.max_pages < UNLIMITED_PAGES;
    let exact = levels
        .iter()
        .position(|l| limited(&l) && l.usage_pages.saturating_add(nr) > l.max_pages);
    exact.or_else(|| {
        let slack = nr.max(64);
        levels
            .iter()
            .position(|l| limited(&l) && l.usage_pages.saturating_add(slack) > l.max_pages)
    })
}

/// The previous oom_kill record, for grouping the victims of one OOM.
#[derive(Clone, Copy)]
struct LastKill {
    ts_ns: u64,
    trigger_tid: u32,
    /// `oom_control` identity of the kill (its entry time), 0 without one.
    key: u64,
    kill_id: u64,
    /// The memcg whose limit fired, 0 for none.
    oom_memcg_id: u64,
}

impl Enricher {
    pub fn new(cgroups: Resolver, ksyms: Option<Arc<Ksyms>>, machine: Machine) -> Self {
        Self {
            cgroups,
            ksyms,
            machine,
            gfp: None,
            ustack: None,
            last_kill: None,
        }
    }

    pub fn cgroup(&mut self, id: u64, pid_hint: u32) -> Option<Cgroup> {
        if id == 0 {
            return None;
        }
        let mut path = self.cgroups.path(id);
        if path.is_none() && pid_hint != 0 {
            path = self
                .cgroups
                .hint_pid(pid_hint)
                .filter(|(i, _)| *i == id)
                .map(|(_, p)| p);
        }
        Some(Cgroup { id, path })
    }

    fn stack(&self, rec: &OomKill) -> Vec<String> {
        let n = usize::try_from(rec.kstack_bytes.max(0)).unwrap_or(0) / 8;
        let frames = rec.kstack.iter().take(n.min(rec.kstack.len())).copied();
        let mut out: Vec<String> = match &self.ksyms {
            Some(k) => frames.map(|a| k.symbolize(a)).collect(),
            None => frames.map(|a| format!("{a:#x}")).collect(),
        };
        // Leading frames of the BPF program itself: its JIT image (a bare address unless
        // net.core.bpf_jit_kallsyms names it) and the tracepoint glue.
        let symbolized = self.ksyms.is_some();
        let glue = out
            .iter()
            .take_while(|f| (symbolized && f.starts_with("0x")) || ksyms::is_bpf_glue(f))
            .count();
        out.drain(..glue);
        out
    }

    /// The breakdown of the memcg at `level`, read now (the victim is releasing memory already).
    fn memory_of(&mut self, level: &MemcgLevel, kill_ns: u64) -> memstat::Memory {
        let version = self.cgroups.version().unwrap_or(2);
        let dir = self.cgroups.path(level.id).and_then(|p| self.cgroups.dir_of(&p));
        memstat::memory(level, self.machine.page_size, version, dir.as_deref(), kill_ns)
    }

    /// Builds the event. `seq` is the sequence number this record will carry.
    pub fn oom_kill(&mut self, rec: &OomKill, seq: u64, attach: &'static str) -> event::OomKill {
        let mut inferred = Vec::new();
        let exact = rec.flags & flags::EXACT != 0;
        let has = |f: u32| rec.flags & f != 0;
        let levels = &rec.memcg[..(rec.memcg_depth as usize).min(rec.memcg.len())];
        let page = self.machine.page_size;

        // First what decays: the cgroup's memory.stat and the victim's THP, while it still holds them.
        let order_hint = if has(flags::RECLAIM) { rec.reclaim.order } else { 0 };
        // One OOM can kill several tasks (memory.oom.group): they share a kill_id. With
        // oom_control we know the kill exactly; otherwise a group member is recognised by its
        // stack (mem_cgroup_scan_tasks -> oom_kill_memcg_member, mm/oom_kill.c v6.18), on the
        // same trigger thread as the kill before it.
        let kernel_stack = self.stack(rec);
        let member = !exact
            && kernel_stack
                .iter()
                .any(|f| f.starts_with("oom_kill_memcg_member"));
        // A whole group is killed within milliseconds; an older previous line (its first member's
        // record lost to a full ring buffer, say) is another OOM.
        let group = self.last_kill.filter(|k| {
            member
                && k.trigger_tid == rec.trigger.tid
                && rec.ts_boot_ns.saturating_sub(k.ts_ns) < GROUP_WINDOW_NS
        });
        let oom_level = if exact {
            levels
                .iter()
                .position(|l| l.id == rec.exact.memcg_id && rec.exact.memcg_id != 0)
        } else if let Some(g) = group {
            // The group's first victim was chosen at the limit; by the time the later members are
            // killed the first ones may have freed memory, so the page counters alone would no
            // longer point at the memcg. One OOM, one memcg (or none, as the first line said).
            levels
                .iter()
                .position(|l| g.oom_memcg_id != 0 && l.id == g.oom_memcg_id)
        } else {
            infer_oom_memcg(levels, order_hint).or_else(|| {
                // Nothing at its limit any more at mark_victim (in a storm, earlier victims free
                // memory meanwhile): the memcg that was at its limit when this thread's reclaim
                // began, right after its charge failed.
                let r = &rec.reclaim;
                (has(flags::RECLAIM) && r.kind == flags::RECLAIM_MEMCG && r.memcg_id != 0)
                    .then(|| levels.iter().position(|l| l.id == r.memcg_id))
                    .flatten()
            })
        };
        let oom_memory = oom_level.map(|i| self.memory_of(&levels[i], rec.ts_boot_ns));
        let victim_level = levels
            .iter()
            .position(|l| l.id == rec.victim.memcg_id && rec.victim.memcg_id != 0)
            .filter(|&i| Some(i) != oom_level);
        let victim_memory = victim_level.map(|i| self.memory_of(&levels[i], rec.ts_boot_ns));
        let anon_thp_kb = match rec.victim.tgid {
            0 => None,
            pid => memstat::anon_thp_kb(pid),
        };
        let user_stack = match &mut self.ustack {
            Some(u) => u.symbolize(
                rec.trigger.tgid,
                rec.ustack_bytes,
                &rec.ustack,
                rec.ubuild_bytes,
                &rec.ubuild,
            ),
            None => None,
        };

        // The memcg whose limit fired, the constraint and totalpages.
        let (oom_memcg, constraint, totalpages) = if exact {
            let e = &rec.exact;
            let memcg = (e.memcg_id != 0).then(|| {
                let lvl = levels.iter().find(|l| l.id == e.memcg_id);
                OomMemcg {
                    id: e.memcg_id,
                    path: self.cgroups.path(e.memcg_id),
                    source: "oom_control",
                    limit_bytes: lvl.map(|l| l.max_pages.saturating_mul(page)),
                    usage_bytes: lvl.map(|l| l.usage_pages.saturating_mul(page)),
                    memory: oom_memory.clone(),
                }
            });
            (memcg, constraint_name(e.constraint), Some(e.totalpages))
        } else {
            inferred.extend(["oom_memcg", "constraint", "totalpages"]);
            match oom_level {
                Some(i) => {
                    let l = levels[i];
                    let memcg = OomMemcg {
                        id: l.id,
                        path: self.cgroups.path(l.id),
                        source: "inferred",
                        limit_bytes: Some(l.max_pages.saturating_mul(page)),
                        usage_bytes: Some(l.usage_pages.saturating_mul(page)),
                        memory: oom_memory.clone(),
                    };
                    // mem_cgroup_get_max(): the limit plus the swap it may use (mm/memcontrol.c v6.18).
                    (
                        Some(memcg),
                        "memcg",
                        Some(l.max_pages.saturating_add(self.machine.swap_pages)),
                    )
                }
                None => (
                    None,
                    "global",
                    Some(self.machine.ram_pages + self.machine.swap_pages),
                ),
            }
        };

        // Victim.
        let v = &rec.victim;
        let mm = has(flags::VICTIM_MM).then_some(&rec.victim_mm);
        // Every counter (swap, hiwater too) was read from the victim's mm_struct: always with
        // tp_btf, and with the classic tracepoint when the victim was the trigger.
        let full_mm = has(flags::VICTIM_MM_TASK) || rec.victim_source == VictimSource::TpBtf as u8;
        let victim_tgid = if v.tgid != 0 { Some(v.tgid) } else { tgid_of(v.tid) };
        let victim_cgroup = if has(flags::VICTIM_MEMCG) {
            self.cgroup(v.memcg_id, victim_tgid.unwrap_or(0))
        } else {
            // Classic tracepoint, victim != trigger: ask procfs while the victim still exists.
            // Once it is exiting, /proc/<pid>/cgroup no longer names its cgroup (cgroup_exit() in
            // kernel/cgroup/cgroup.c, v6.18), so an answer counts only if it was read before.
            inferred.push("victim.cgroup");
            self.cgroups
                .hint_pid(v.tid)
                .filter(|_| !is_exiting(v.tid))
                .map(|(id, path)| Cgroup { id, path: Some(path) })
        };
        let points = if exact {
            (rec.exact.chosen_tgid == v.tgid).then_some(rec.exact.chosen_points)
        } else {
            // oom_badness(): rss + swap + page tables (in pages) + oom_score_adj * totalpages / 1000
            // (mm/oom_kill.c, v6.18).
            match (mm, has(flags::VICTIM_SCORE_ADJ), totalpages) {
                (Some(m), true, Some(total)) if full_mm => {
                    inferred.push("victim.points");
                    // Saturating: a corrupt record must give a wrong number at worst, never a panic.
                    let kb_per_page = (page / 1024).max(1);
                    let rss_kb = [m.anon_rss_kb, m.file_rss_kb, m.shmem_rss_kb, m.swap_kb]
                        .iter()
                        .fold(0u64, |a, b| a.saturating_add(*b));
                    let pages = (rss_kb / kb_per_page)
                        .saturating_add(m.pgtables_kb.saturating_mul(1024) / page.max(1));
                    let adj = i64::from(rec.victim_oom_score_adj).saturating_mul((total / 1000) as i64);
                    Some((pages as i64).saturating_add(adj))
                }
                _ => None,
            }
        };
        let victim = Victim {
            pid: victim_tgid,
            tid: v.tid,
            comm: comm(&v.comm),
            uid: has(flags::VICTIM_UID).then_some(rec.victim_uid),
            oom_score_adj: has(flags::VICTIM_SCORE_ADJ).then_some(rec.victim_oom_score_adj),
            points,
            total_vm_kb: mm.map(|m| m.total_vm_kb),
            anon_rss_kb: mm.map(|m| m.anon_rss_kb),
            file_rss_kb: mm.map(|m| m.file_rss_kb),
            shmem_rss_kb: mm.map(|m| m.shmem_rss_kb),
            pgtables_kb: mm.map(|m| m.pgtables_kb),
            swap_kb: mm.filter(|_| full_mm).map(|m| m.swap_kb),
            hiwater_rss_kb: mm.filter(|_| full_mm).map(hiwater_kb),
            cgroup: victim_cgroup,
            mm: mm.map(|m| {
                let rss = m
                    .anon_rss_kb
                    .saturating_add(m.file_rss_kb)
                    .saturating_add(m.shmem_rss_kb);
                event::VictimMm {
                    total_vm_kb: m.total_vm_kb,
                    hiwater_rss_kb: full_mm.then(|| hiwater_kb(m)),
                    anon_rss_kb: m.anon_rss_kb,
                    file_rss_kb: m.file_rss_kb,
                    shmem_rss_kb: m.shmem_rss_kb,
                    swap_kb: full_mm.then_some(m.swap_kb),
                    pgtables_kb: m.pgtables_kb,
                    anon_thp_kb,
                    overcommit_ratio: (rss > 0)
                        .then(|| (m.total_vm_kb as f64 / rss as f64 * 100.0).round() / 100.0),
                }
            }),
            cgroup_memory: victim_memory,
        };

        let t = &rec.trigger;
        let trigger = Trigger {
            pid: t.tgid,
            tid: t.tid,
            comm: comm(&t.comm),
            cgroup: self.cgroup(t.memcg_id, t.tgid),
        };

        let (gfp_mask, order, source) = if exact {
            (
                Some(rec.exact.gfp_mask),
                Some(rec.exact.order),
                Some("oom_control"),
            )
        } else if has(flags::RECLAIM) {
            inferred.extend(["allocation.gfp_mask", "allocation.order"]);
            let src = if rec.reclaim.kind == flags::RECLAIM_DIRECT {
                "direct_reclaim"
            } else {
                "memcg_reclaim"
            };
            (Some(rec.reclaim.gfp_mask), Some(rec.reclaim.order), Some(src))
        } else {
            (None, None, None)
        };
        let (path, path_detail) = classify(&kernel_stack, order);
        let allocation = Allocation {
            gfp_mask: gfp_mask.map(|g| format!("{g:#x}")),
            gfp_flags: gfp_mask.and_then(|g| self.gfp.as_ref().map(|b| b.decode(g))),
            size_bytes: order.filter(|o| (0..=20).contains(o)).map(|o| page << o),
            order,
            source,
            path,
            path_detail,
            kernel_stack,
            user_stack,
        };

        let key = if exact { rec.exact.kill_ns } else { 0 };
        let kill_id = match (self.last_kill, group) {
            (_, Some(g)) => g.kill_id,
            (Some(k), _) if exact && k.trigger_tid == t.tid && k.key == key => k.kill_id,
            _ => seq,
        };
        if !exact {
            inferred.push("kill_id");
        }
        self.last_kill = Some(LastKill {
            ts_ns: rec.ts_boot_ns,
            trigger_tid: t.tid,
            key,
            kill_id,
            oom_memcg_id: oom_level.map_or(0, |i| levels[i].id),
        });

        event::OomKill {
            kill_id,
            attach,
            victim,
            trigger,
            oom_memcg,
            constraint,
            totalpages,
            allocation,
            inferred,
        }
    }
}

/// True if the thread has started exiting (PF_EXITING, include/linux/sched.h v6.18) or is gone.
fn is_exiting(tid: u32) -> bool {
    const PF_EXITING: u64 = 0x4;
    let Ok(stat) = fs::read_to_string(format!("/proc/{tid}/stat")) else {
        return true;
    };
    // Fields after the parenthesised comm: state is field 3, flags field 9.
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return true;
    };
    rest.split(' ')
        .nth(6)
        .and_then(|f| f.parse::<u64>().ok())
        .is_none_or(|f| f & PF_EXITING != 0)
}

/// Where an allocation came from, read from its kernel stack (innermost frame first), e.g.
/// `do_anonymous_page` -> a user page fault on anonymous memory; `do_huge_pmd_anonymous_page` ->
/// a transparent-huge-page fault (function names of mm/memory.c and mm/huge_memory.c, v6.18).
pub fn classify(stack: &[String], order: Option<i32>) -> (&'static str, Option<&'static str>) {
    if order == Some(-1) {
        return ("sysrq", None);
    }
    let names: Vec<&str> = stack.iter().map(|f| f.split('+').next().unwrap_or("")).collect();
    let has = |pats: &[&str]| names.iter().any(|n| pats.iter().any(|p| n.starts_with(p)));
    let fault = has(&[
        "handle_mm_fault",
        "__handle_mm_fault",
        "exc_page_fault",
        "do_user_addr_fault",
    ]);
    if has(&[
        "do_huge_pmd_anonymous_page",
        "__do_huge_pmd_anonymous_page",
        "do_huge_pmd_wp_page",
        "vma_alloc_anon_folio_pmd",
    ]) {
        return ("thp_fault", Some("anonymous"));
    }
    if fault {
        let file = has(&[
            "filemap_fault",
            "do_read_fault",
            "do_shared_fault",
            "__do_fault",
            "shmem_fault",
        ]) && !has(&["do_anonymous_page"]);
        return ("page_fault", Some(if file { "file" } else { "anonymous" }));
    }
    if has(&[
        "kmem_cache_alloc",
        "__kmalloc",
        "kmalloc_",
        "___slab_alloc",
        "allocate_slab",
        "new_slab",
    ]) {
        return ("slab", None);
    }
    if has(&[
        "filemap_add_folio",
        "__filemap_get_folio",
        "page_cache_ra",
        "pagecache_get_page",
        "filemap_alloc_folio",
    ]) {
        return ("page_cache", None);
    }
    if has(&[
        "try_charge_memcg",
        "charge_memcg",
        "__mem_cgroup_charge",
        "obj_cgroup_charge",
    ]) {
        return ("memcg_charge", None);
    }
    ("other", None)
}

/// `mm->hiwater_rss` is only updated lazily (on unmap, exit); the peak is at least the current
/// rss — what get_mm_hiwater_rss() computes (include/linux/mm.h, v6.18).
fn hiwater_kb(m: &oomtrace_common::MmCounters) -> u64 {
    m.hiwater_rss_kb.max(
        m.anon_rss_kb
            .saturating_add(m.file_rss_kb)
            .saturating_add(m.shmem_rss_kb),
    )
}

/// Tgid of a live thread, from /proc/<tid>/status.
pub(crate) fn tgid_of(tid: u32) -> Option<u32> {
    let s = fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("Tgid:")?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::record::tests::sample;

    /// 4 KiB pages, 4 GiB of RAM, no swap; no cgroup hierarchy.
    fn enricher(ksyms: Option<Arc<Ksyms>>) -> Enricher {
        let machine = Machine {
            page_size: 4096,
            ram_pages: 1 << 20,
            swap_pages: 0,
        };
        Enricher::new(Resolver::new(None), ksyms, machine)
    }

    fn lvl(id: u64, usage: u64, max: u64) -> MemcgLevel {
        MemcgLevel {
            id,
            usage_pages: usage,
            max_pages: max,
            ..Default::default()
        }
    }

    fn frames(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| format!("{n}+0x10")).collect()
    }

    #[test]
    fn classifies_allocation_paths() {
        let anon = frames(&[
            "mark_oom_victim",
            "out_of_memory",
            "try_charge_memcg",
            "do_anonymous_page",
            "__handle_mm_fault",
            "handle_mm_fault",
            "exc_page_fault",
        ]);
        assert_eq!(classify(&anon, Some(0)), ("page_fault", Some("anonymous")));
        let file = frames(&[
            "out_of_memory",
            "try_charge_memcg",
            "filemap_fault",
            "__do_fault",
            "handle_mm_fault",
        ]);
        assert_eq!(classify(&file, Some(0)), ("page_fault", Some("file")));
        let thp = frames(&[
            "__alloc_pages_slowpath",
            "vma_alloc_folio",
            "do_huge_pmd_anonymous_page",
            "handle_mm_fault",
        ]);
        assert_eq!(classify(&thp, Some(9)), ("thp_fault", Some("anonymous")));
        let slab = frames(&[
            "out_of_memory",
            "__alloc_pages_slowpath",
            "allocate_slab",
            "___slab_alloc",
            "kmem_cache_alloc_noprof",
            "__x64_sys_openat",
        ]);
        assert_eq!(classify(&slab, Some(0)), ("slab", None));
        let pc = frames(&[
            "out_of_memory",
            "try_charge_memcg",
            "filemap_add_folio",
            "page_cache_ra_unbounded",
            "vfs_read",
        ]);
        assert_eq!(classify(&pc, Some(0)), ("page_cache", None));
        let charge = frames(&[
            "out_of_memory",
            "try_charge_memcg",
            "__mem_cgroup_charge",
            "shmem_alloc_folio",
            "vfs_write",
        ]);
        assert_eq!(classify(&charge, Some(0)), ("memcg_charge", None));
        assert_eq!(
            classify(&frames(&["sysrq_handle_moom"]), Some(-1)),
            ("sysrq", None)
        );
        assert_eq!(classify(&[], None), ("other", None));
    }

    #[test]
    fn picks_the_nearest_memcg_at_its_limit() {
        let unl = UNLIMITED_PAGES + 5;
        // child at its limit
        assert_eq!(
            infer_oom_memcg(&[lvl(3, 100, 100), lvl(2, 500, 1000), lvl(1, 9, unl)], 0),
            Some(0)
        );
        // child has room, parent is full: the parent's limit fired
        assert_eq!(
            infer_oom_memcg(&[lvl(3, 10, 1000), lvl(2, 1000, 1000), lvl(1, 9, unl)], 0),
            Some(1)
        );
        // an order-9 charge does not fit in 100 free pages
        assert_eq!(infer_oom_memcg(&[lvl(3, 900, 1000), lvl(1, 9, unl)], 9), Some(0));
        // nobody near a limit: global
        assert_eq!(infer_oom_memcg(&[lvl(3, 10, unl), lvl(1, 9, unl)], 0), None);
        // slack: 30 pages below the limit after another task freed some
        assert_eq!(infer_oom_memcg(&[lvl(3, 970, 1000), lvl(1, 9, unl)], 0), Some(0));
        assert_eq!(infer_oom_memcg(&[], 0), None);
    }

    #[test]
    fn builds_an_inferred_event_from_a_tp_btf_record() {
        let mut e = enricher(None);
        let rec = sample();
        let ev = e.oom_kill(&rec, 7, "tp_btf");
        assert_eq!(ev.kill_id, 7);
        assert_eq!(ev.victim.pid, Some(100));
        assert_eq!(ev.victim.comm, "hog");
        assert_eq!(ev.trigger.comm, "trigger");
        let m = ev.oom_memcg.as_ref().unwrap();
        assert_eq!(
            (m.id, m.source, m.limit_bytes),
            (4242, "inferred", Some(16384 * 4096))
        );
        assert_eq!(ev.constraint, "memcg");
        assert_eq!(ev.totalpages, Some(16384));
        assert!(ev.inferred.contains(&"oom_memcg"));
        assert_eq!(ev.allocation.gfp_mask, None);
        assert_eq!(ev.allocation.kernel_stack, vec!["0xffffffff81000010".to_owned()]);
        // a second, unrelated kill by another trigger gets its own id
        let mut rec2 = sample();
        rec2.trigger.tid = 999;
        assert_eq!(e.oom_kill(&rec2, 9, "tp_btf").kill_id, 9);
    }

    #[test]
    fn exact_records_group_by_kill() {
        let mut e = enricher(None);
        let mut rec = sample();
        rec.flags |= flags::EXACT;
        rec.exact.kill_ns = 55;
        rec.exact.constraint = 3;
        rec.exact.memcg_id = 4242;
        rec.exact.totalpages = 16384;
        rec.exact.gfp_mask = 0x140cca;
        rec.exact.chosen_tgid = 100;
        rec.exact.chosen_points = 1234;
        let a = e.oom_kill(&rec, 1, "fentry");
        let b = e.oom_kill(&rec, 2, "fentry");
        rec.exact.kill_ns = 56;
        let c = e.oom_kill(&rec, 3, "fentry");
        assert_eq!((a.kill_id, b.kill_id, c.kill_id), (1, 1, 3));
        assert_eq!(a.allocation.gfp_mask.as_deref(), Some("0x140cca"));
        assert_eq!(a.victim.points, Some(1234));
        assert_eq!(a.oom_memcg.unwrap().source, "oom_control");
        assert!(a.inferred.is_empty());
    }

    /// memory.oom.group without oom_control: the later members are killed after the first ones
    /// freed memory, so their page counters no longer show the limit; they are recognised by the
    /// oom_kill_memcg_member frame and keep the first victim's memcg and kill_id.
    #[test]
    fn group_members_keep_the_first_victims_memcg() {
        let ksyms = Ksyms::parse(
            "ffffffff81000000 T out_of_memory\nffffffff81001000 T oom_kill_memcg_member\n\
             ffffffff81002000 T mem_cgroup_scan_tasks\n",
        );
        let mut e = enricher(Some(Arc::new(ksyms)));
        let first = sample();
        let a = e.oom_kill(&first, 1, "tracepoint");
        assert_eq!(a.oom_memcg.as_ref().map(|m| m.id), Some(4242));
        let mut member = sample();
        member.victim.tgid = 300;
        member.victim.tid = 300;
        member.memcg[0].usage_pages = 8000; // half of it freed already
        member.kstack[0] = 0xffff_ffff_8100_1010;
        member.kstack[1] = 0xffff_ffff_8100_2010;
        member.kstack_bytes = 16;
        let b = e.oom_kill(&member, 2, "tracepoint");
        assert_eq!(b.kill_id, 1);
        assert_eq!(b.oom_memcg.as_ref().map(|m| m.id), Some(4242));
        assert_eq!(b.constraint, "memcg");
        // The same counters without the member frame: a new kill, and nothing at its limit.
        let mut other = member;
        other.kstack[0] = 0xffff_ffff_8100_0010;
        other.kstack_bytes = 8;
        let c = e.oom_kill(&other, 3, "tracepoint");
        assert_eq!(c.kill_id, 3);
        assert!(c.oom_memcg.is_none());
        // A member-looking line 2 s after the previous one belongs to another OOM.
        let mut late = member;
        late.ts_boot_ns += 2_000_000_000;
        assert_eq!(e.oom_kill(&late, 4, "tracepoint").kill_id, 4);
    }

    /// Nothing at its limit at mark_victim any more: the memcg that was at its limit when the
    /// trigger's memcg reclaim began names the OOM; a direct (global) reclaim names none.
    #[test]
    fn reclaim_time_memcg_when_nothing_is_at_its_limit_any_more() {
        let mut e = enricher(None);
        let mut rec = sample();
        rec.memcg[0].usage_pages = 8000; // freed since
        rec.flags |= flags::RECLAIM;
        rec.reclaim = oomtrace_common::Reclaim {
            ts_ns: rec.ts_boot_ns - 1000,
            gfp_mask: 0xcc0,
            order: 0,
            kind: flags::RECLAIM_MEMCG,
            memcg_id: 4242,
        };
        let a = e.oom_kill(&rec, 1, "tp_btf");
        assert_eq!(a.oom_memcg.as_ref().map(|m| m.id), Some(4242));
        assert_eq!(a.constraint, "memcg");
        rec.reclaim.kind = flags::RECLAIM_DIRECT;
        rec.reclaim.memcg_id = 0;
        let b = e.oom_kill(&rec, 2, "tp_btf");
        assert!(b.oom_memcg.is_none());
        assert_eq!(b.constraint, "global");
    }
}
