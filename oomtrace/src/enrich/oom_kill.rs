//! Turns a raw kernel record into the public `oom_kill` event: names cgroups, symbolizes the
//! stack, infers what the tracepoint modes cannot read, and groups `memory.oom.group` kills.

use std::{fs, sync::Arc};

use oomtrace_common::{MemcgLevel, MmCounters, OomKill, VictimSource, flags, memcg};

use crate::{
    enrich::{cgroups::Cgroups, memstat, ustack::UserSymbolizer},
    event::{
        self, AllocPath, AllocSource, Allocation, Attach, Cgroup, Constraint, FaultKind, MemcgSource,
        OomMemcg, Trigger, Victim,
    },
    kernel::{
        gfp::GfpBits,
        ksyms::{self, Ksyms},
        record::comm,
    },
};

/// How far apart the lines of one memory.oom.group kill may be.
const GROUP_WINDOW_NS: u64 = 1_000_000_000;

/// `enum oom_constraint` (include/linux/oom.h, v6.18; unchanged since 2.6.35).
fn constraint(c: u32) -> Constraint {
    match c {
        1 => Constraint::Cpuset,
        2 => Constraint::Mempolicy,
        3 => Constraint::Memcg,
        _ => Constraint::Global,
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

/// Builds `oom_kill` events: symbolizes the kernel and user stacks, reads what decays (the
/// memory breakdown, the victim's THP), infers what the tracepoint modes cannot read, and groups
/// the victims of one OOM (memory.oom.group) under one `kill_id`. Built complete; only the
/// grouping state changes afterwards.
pub struct OomKills {
    machine: Machine,
    /// The running kernel's gfp flag bits (BTF enum, or a per-version table).
    gfp: Option<GfpBits>,
    ksyms: KernelSymbols,
    /// None with --no-user-stacks.
    ustack: Option<UserSymbolizer>,
    /// The previous record, to group one OOM's victims.
    last_kill: Option<LastKill>,
}

/// Picks the memcg whose limit fired from the trigger's hierarchy walk, for a charge of
/// `1 << order` pages: [`memcg::oom_level`], the rule the eBPF side applies when reclaim begins.
/// `page_shift` is the running kernel's (its "no limit" depends on it).
pub fn infer_oom_memcg(levels: &[MemcgLevel], order: i32, page_shift: u32) -> Option<usize> {
    let nr_pages = 1u64 << order.clamp(0, 10);
    let levels = levels
        .iter()
        .enumerate()
        .map(|(i, l)| (i, l.usage_pages, l.max_pages));
    memcg::oom_level(levels, nr_pages, page_shift)
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

/// Kernel symbols (/proc/kallsyms), loaded on a thread of their own at start (tens of ms):
/// waited for the first time a kernel stack needs them.
pub enum KernelSymbols {
    Loading(std::thread::JoinHandle<Option<Ksyms>>),
    /// None without CAP_SYSLOG or /proc/kallsyms: kernel stacks stay raw addresses.
    Ready(Option<Arc<Ksyms>>),
}

impl KernelSymbols {
    fn get(&mut self) -> Option<&Ksyms> {
        if let Self::Loading(_) = self {
            let Self::Loading(h) = std::mem::replace(self, Self::Ready(None)) else {
                unreachable!()
            };
            *self = Self::Ready(h.join().ok().flatten().map(Arc::new));
        }
        match self {
            Self::Ready(k) => k.as_deref(),
            Self::Loading(_) => None,
        }
    }
}

/// What must be read from the system the moment a record arrives, before the victim has
/// released it.
struct Decaying {
    oom_memory: Option<event::Memory>,
    victim_memory: Option<event::Memory>,
    anon_thp_kb: Option<u64>,
}

impl OomKills {
    pub fn new(
        machine: Machine,
        gfp: Option<GfpBits>,
        ksyms: KernelSymbols,
        ustack: Option<UserSymbolizer>,
    ) -> Self {
        Self {
            machine,
            gfp,
            ksyms,
            ustack,
            last_kill: None,
        }
    }

    /// Warms the user-stack symbolizer (off the ring-buffer reading path) so that the first
    /// kills do not wait for a cold one.
    pub fn warm_up(&mut self) {
        self.ksyms.get();
        if let Some(u) = &mut self.ustack {
            u.warm_up();
        }
    }

    fn kernel_stack(&mut self, rec: &OomKill) -> Vec<String> {
        let n = usize::try_from(rec.kstack_bytes.max(0)).unwrap_or(0) / 8;
        let frames = rec.kstack.iter().take(n.min(rec.kstack.len())).copied();
        let ksyms = self.ksyms.get();
        let mut out: Vec<String> = match ksyms {
            Some(k) => frames.map(|a| k.symbolize(a)).collect(),
            None => frames.map(|a| format!("{a:#x}")).collect(),
        };
        // Leading frames of the BPF program itself: its JIT image (a bare address unless
        // net.core.bpf_jit_kallsyms names it) and the tracepoint glue.
        let symbolized = ksyms.is_some();
        let glue = out
            .iter()
            .take_while(|f| (symbolized && f.starts_with("0x")) || ksyms::is_bpf_glue(f))
            .count();
        out.drain(..glue);
        out
    }

    /// Builds the event. `seq` is the sequence number this record will carry.
    pub fn build(
        &mut self,
        rec: &OomKill,
        seq: u64,
        attach: Attach,
        cgroups: &mut Cgroups,
    ) -> event::OomKill {
        let mut inferred = Vec::new();
        let exact = rec.flags & flags::EXACT != 0;
        let levels = &rec.memcg[..(rec.memcg_depth as usize).min(rec.memcg.len())];
        // First the trigger's memory map, gone the moment it exits (often microseconds after).
        let user_stack = self.user_stack(rec);
        let kernel_stack = self.kernel_stack(rec);
        let group = self.group_of(rec, exact, &kernel_stack);
        let oom_level = oom_level(rec, levels, exact, group, self.machine.page_size.trailing_zeros());
        let decaying = self.read_decaying(rec, levels, oom_level, cgroups);
        let (oom_memcg, constraint, totalpages) = if exact {
            self.exact_scope(rec, levels, decaying.oom_memory.clone(), cgroups)
        } else {
            inferred.extend(["oom_memcg", "constraint", "totalpages"]);
            self.inferred_scope(levels, oom_level, decaying.oom_memory.clone(), cgroups)
        };
        let victim = self.victim(rec, totalpages, &decaying, cgroups, &mut inferred);
        let t = &rec.trigger;
        let trigger = Trigger {
            pid: t.tgid,
            tid: t.tid,
            comm: comm(&t.comm),
            cgroup: cgroups.name(t.memcg_id, t.tgid),
            kubernetes: None,
        };
        let allocation = self.allocation(rec, kernel_stack, user_stack, &mut inferred);
        let kill_id = self.kill_id(rec, seq, exact, group, oom_level.map_or(0, |i| levels[i].id));
        if !exact {
            inferred.push("kill_id");
        }
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

    /// One OOM can kill several tasks (memory.oom.group): they share a kill_id. With
    /// oom_control we know the kill exactly; otherwise a group member is recognised by its stack
    /// (mem_cgroup_scan_tasks -> oom_kill_memcg_member, mm/oom_kill.c v6.18), on the same trigger
    /// thread as the kill before it. A whole group is killed within milliseconds; an older
    /// previous line (its first member's record lost to a full ring buffer, say) is another OOM.
    fn group_of(&self, rec: &OomKill, exact: bool, kernel_stack: &[String]) -> Option<LastKill> {
        let member = !exact
            && kernel_stack
                .iter()
                .any(|f| f.starts_with("oom_kill_memcg_member"));
        self.last_kill.filter(|k| {
            member
                && k.trigger_tid == rec.trigger.tid
                && rec.ts_boot_ns.saturating_sub(k.ts_ns) < GROUP_WINDOW_NS
        })
    }

    fn user_stack(&mut self, rec: &OomKill) -> Option<event::UserStack> {
        self.ustack.as_mut().and_then(|u| {
            u.symbolize(
                rec.trigger.tgid,
                rec.ustack_bytes,
                &rec.ustack,
                rec.ubuild_bytes,
                &rec.ubuild,
            )
        })
    }

    /// Then what decays more slowly: the cgroups' memory.stat and the victim's THP, while they
    /// still hold what they held at the kill.
    fn read_decaying(
        &self,
        rec: &OomKill,
        levels: &[MemcgLevel],
        oom_level: Option<usize>,
        cgroups: &mut Cgroups,
    ) -> Decaying {
        let page = self.machine.page_size;
        let mut memory_of = |i: usize| cgroups.memory(&levels[i], page, rec.ts_boot_ns);
        let oom_memory = oom_level.map(&mut memory_of);
        let victim_memory = levels
            .iter()
            .position(|l| l.id == rec.victim.memcg_id && rec.victim.memcg_id != 0)
            .filter(|&i| Some(i) != oom_level)
            .map(&mut memory_of);
        let anon_thp_kb = match rec.victim.tgid {
            0 => None,
            pid => memstat::anon_thp_kb(pid),
        };
        Decaying {
            oom_memory,
            victim_memory,
            anon_thp_kb,
        }
    }

    /// The memcg whose limit fired, the constraint and totalpages, from `struct oom_control`.
    fn exact_scope(
        &self,
        rec: &OomKill,
        levels: &[MemcgLevel],
        memory: Option<event::Memory>,
        cgroups: &mut Cgroups,
    ) -> (Option<OomMemcg>, Constraint, Option<u64>) {
        let page = self.machine.page_size;
        let e = &rec.exact;
        let memcg = (e.memcg_id != 0).then(|| {
            let lvl = levels.iter().find(|l| l.id == e.memcg_id);
            OomMemcg {
                id: e.memcg_id,
                path: cgroups.path(e.memcg_id),
                source: MemcgSource::OomControl,
                limit_bytes: lvl.map(|l| l.max_pages.saturating_mul(page)),
                usage_bytes: lvl.map(|l| l.usage_pages.saturating_mul(page)),
                memory,
                scope: None,
                kubernetes: None,
            }
        });
        (memcg, constraint(e.constraint), Some(e.totalpages))
    }

    /// The same, inferred from the trigger's memcg hierarchy walk.
    fn inferred_scope(
        &self,
        levels: &[MemcgLevel],
        oom_level: Option<usize>,
        memory: Option<event::Memory>,
        cgroups: &mut Cgroups,
    ) -> (Option<OomMemcg>, Constraint, Option<u64>) {
        let m = &self.machine;
        match oom_level {
            Some(i) => {
                let l = levels[i];
                let memcg = OomMemcg {
                    id: l.id,
                    path: cgroups.path(l.id),
                    source: MemcgSource::Inferred,
                    limit_bytes: Some(l.max_pages.saturating_mul(m.page_size)),
                    usage_bytes: Some(l.usage_pages.saturating_mul(m.page_size)),
                    memory,
                    scope: None,
                    kubernetes: None,
                };
                // mem_cgroup_get_max(): the limit plus the swap it may use (mm/memcontrol.c v6.18).
                (
                    Some(memcg),
                    Constraint::Memcg,
                    Some(l.max_pages.saturating_add(m.swap_pages)),
                )
            }
            None => (None, Constraint::Global, Some(m.ram_pages + m.swap_pages)),
        }
    }

    fn victim(
        &self,
        rec: &OomKill,
        totalpages: Option<u64>,
        decaying: &Decaying,
        cgroups: &mut Cgroups,
        inferred: &mut Vec<&'static str>,
    ) -> Victim {
        let has = |f: u32| rec.flags & f != 0;
        let v = &rec.victim;
        let mm = has(flags::VICTIM_MM).then_some(&rec.victim_mm);
        // Every counter (swap, hiwater too) was read from the victim's mm_struct: always with
        // tp_btf, and with the classic tracepoint when the victim was the trigger.
        let full_mm = has(flags::VICTIM_MM_TASK) || rec.victim_source == VictimSource::TpBtf as u8;
        let victim_tgid = if v.tgid != 0 { Some(v.tgid) } else { tgid_of(v.tid) };
        let cgroup = if has(flags::VICTIM_MEMCG) {
            cgroups.name(v.memcg_id, victim_tgid.unwrap_or(0))
        } else {
            // Classic tracepoint, victim != trigger: ask procfs while the victim still exists.
            // Once it is exiting, /proc/<pid>/cgroup no longer names its cgroup (cgroup_exit() in
            // kernel/cgroup/cgroup.c, v6.18), so an answer counts only if it was read before.
            inferred.push("victim.cgroup");
            cgroups
                .hint_pid(v.tid)
                .filter(|_| !is_exiting(v.tid))
                .map(|(id, path)| Cgroup { id, path: Some(path) })
        };
        let points = if rec.flags & flags::EXACT != 0 {
            (rec.exact.chosen_tgid == v.tgid).then_some(rec.exact.chosen_points)
        } else {
            let p = mm
                .filter(|_| full_mm && has(flags::VICTIM_SCORE_ADJ))
                .zip(totalpages)
                .map(|(m, total)| badness(m, rec.victim_oom_score_adj, total, self.machine.page_size));
            if p.is_some() {
                inferred.push("victim.points");
            }
            p
        };
        Victim {
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
            cgroup,
            mm: mm.map(|m| victim_mm(m, full_mm, decaying.anon_thp_kb)),
            cgroup_memory: decaying.victim_memory.clone(),
            // Filled by the pipeline (enrich::kube), which owns the name service.
            kubernetes: None,
        }
    }

    fn allocation(
        &self,
        rec: &OomKill,
        kernel_stack: Vec<String>,
        user_stack: Option<event::UserStack>,
        inferred: &mut Vec<&'static str>,
    ) -> Allocation {
        let (gfp_mask, order, source) = if rec.flags & flags::EXACT != 0 {
            (
                Some(rec.exact.gfp_mask),
                Some(rec.exact.order),
                Some(AllocSource::OomControl),
            )
        } else if rec.flags & flags::RECLAIM != 0 {
            inferred.extend(["allocation.gfp_mask", "allocation.order"]);
            let src = if rec.reclaim.kind == flags::RECLAIM_DIRECT {
                AllocSource::DirectReclaim
            } else {
                AllocSource::MemcgReclaim
            };
            (Some(rec.reclaim.gfp_mask), Some(rec.reclaim.order), Some(src))
        } else {
            (None, None, None)
        };
        let (path, path_detail) = classify(&kernel_stack, order);
        Allocation {
            gfp_mask: gfp_mask.map(|g| format!("{g:#x}")),
            gfp_flags: gfp_mask.and_then(|g| self.gfp.as_ref().map(|b| b.decode(g))),
            size_bytes: order
                .filter(|o| (0..=20).contains(o))
                .map(|o| self.machine.page_size << o),
            order,
            source,
            path,
            path_detail,
            kernel_stack,
            user_stack,
        }
    }

    /// The kill this victim belongs to (its first record's seq), remembered for the next record.
    fn kill_id(
        &mut self,
        rec: &OomKill,
        seq: u64,
        exact: bool,
        group: Option<LastKill>,
        oom_memcg_id: u64,
    ) -> u64 {
        let key = if exact { rec.exact.kill_ns } else { 0 };
        let tid = rec.trigger.tid;
        let kill_id = match (self.last_kill, group) {
            (_, Some(g)) => g.kill_id,
            (Some(k), _) if exact && k.trigger_tid == tid && k.key == key => k.kill_id,
            _ => seq,
        };
        self.last_kill = Some(LastKill {
            ts_ns: rec.ts_boot_ns,
            trigger_tid: tid,
            key,
            kill_id,
            oom_memcg_id,
        });
        kill_id
    }
}

/// Which level of the trigger's memcg walk is the memcg whose limit fired.
fn oom_level(
    rec: &OomKill,
    levels: &[MemcgLevel],
    exact: bool,
    group: Option<LastKill>,
    page_shift: u32,
) -> Option<usize> {
    if exact {
        return levels
            .iter()
            .position(|l| l.id == rec.exact.memcg_id && rec.exact.memcg_id != 0);
    }
    if let Some(g) = group {
        // The group's first victim was chosen at the limit; by the time the later members are
        // killed the first ones may have freed memory, so the page counters alone would no
        // longer point at the memcg. One OOM, one memcg (or none, as the first line said).
        return levels
            .iter()
            .position(|l| g.oom_memcg_id != 0 && l.id == g.oom_memcg_id);
    }
    let r = &rec.reclaim;
    let reclaimed = rec.flags & flags::RECLAIM != 0;
    let order_hint = if reclaimed { r.order } else { 0 };
    infer_oom_memcg(levels, order_hint, page_shift).or_else(|| {
        // Nothing at its limit any more at mark_victim (in a storm, earlier victims free memory
        // meanwhile): the memcg that was at its limit when this thread's reclaim began, right
        // after its charge failed.
        (reclaimed && r.kind == flags::RECLAIM_MEMCG && r.memcg_id != 0)
            .then(|| levels.iter().position(|l| l.id == r.memcg_id))
            .flatten()
    })
}

/// oom_badness(): rss + swap + page tables (in pages) + oom_score_adj * totalpages / 1000
/// (mm/oom_kill.c, v6.18). Saturating: a corrupt record must give a wrong number at worst, never
/// a panic.
fn badness(m: &MmCounters, oom_score_adj: i32, totalpages: u64, page: u64) -> i64 {
    let kb_per_page = (page / 1024).max(1);
    let rss_kb = [m.anon_rss_kb, m.file_rss_kb, m.shmem_rss_kb, m.swap_kb]
        .iter()
        .fold(0u64, |a, b| a.saturating_add(*b));
    let pages = (rss_kb / kb_per_page).saturating_add(m.pgtables_kb.saturating_mul(1024) / page.max(1));
    let adj = i64::from(oom_score_adj).saturating_mul((totalpages / 1000) as i64);
    (pages as i64).saturating_add(adj)
}

fn victim_mm(m: &MmCounters, full_mm: bool, anon_thp_kb: Option<u64>) -> event::VictimMm {
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
        overcommit_ratio: (rss > 0).then(|| (m.total_vm_kb as f64 / rss as f64 * 100.0).round() / 100.0),
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
pub fn classify(stack: &[String], order: Option<i32>) -> (AllocPath, Option<FaultKind>) {
    if order == Some(-1) {
        return (AllocPath::Sysrq, None);
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
        return (AllocPath::ThpFault, Some(FaultKind::Anonymous));
    }
    if fault {
        let file = has(&[
            "filemap_fault",
            "do_read_fault",
            "do_shared_fault",
            "__do_fault",
            "shmem_fault",
        ]) && !has(&["do_anonymous_page"]);
        return (
            AllocPath::PageFault,
            Some(if file {
                FaultKind::File
            } else {
                FaultKind::Anonymous
            }),
        );
    }
    if has(&[
        "kmem_cache_alloc",
        "__kmalloc",
        "kmalloc_",
        "___slab_alloc",
        "allocate_slab",
        "new_slab",
    ]) {
        return (AllocPath::Slab, None);
    }
    if has(&[
        "filemap_add_folio",
        "__filemap_get_folio",
        "page_cache_ra",
        "pagecache_get_page",
        "filemap_alloc_folio",
    ]) {
        return (AllocPath::PageCache, None);
    }
    if has(&[
        "try_charge_memcg",
        "charge_memcg",
        "__mem_cgroup_charge",
        "obj_cgroup_charge",
    ]) {
        return (AllocPath::MemcgCharge, None);
    }
    (AllocPath::Other, None)
}

/// `mm->hiwater_rss` is only updated lazily (on unmap, exit); the peak is at least the current
/// rss — what get_mm_hiwater_rss() computes (include/linux/mm.h, v6.18).
fn hiwater_kb(m: &MmCounters) -> u64 {
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
    use crate::kernel::cgroup::Resolver;
    use crate::kernel::record::tests::sample;

    /// 4 KiB pages, 4 GiB of RAM, no swap; no cgroup hierarchy.
    /// Builds events the way the pipeline does, against no cgroup hierarchy.
    struct Enricher {
        kills: OomKills,
        cgroups: Cgroups,
    }

    impl Enricher {
        fn oom_kill(&mut self, rec: &OomKill, seq: u64, attach: Attach) -> event::OomKill {
            self.kills.build(rec, seq, attach, &mut self.cgroups)
        }
    }

    fn enricher(ksyms: Option<Arc<Ksyms>>) -> Enricher {
        let machine = Machine {
            page_size: 4096,
            ram_pages: 1 << 20,
            swap_pages: 0,
        };
        Enricher {
            kills: OomKills::new(machine, None, KernelSymbols::Ready(ksyms), None),
            cgroups: Cgroups::new(Resolver::new(None)),
        }
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
        assert_eq!(
            classify(&anon, Some(0)),
            (AllocPath::PageFault, Some(FaultKind::Anonymous))
        );
        let file = frames(&[
            "out_of_memory",
            "try_charge_memcg",
            "filemap_fault",
            "__do_fault",
            "handle_mm_fault",
        ]);
        assert_eq!(
            classify(&file, Some(0)),
            (AllocPath::PageFault, Some(FaultKind::File))
        );
        let thp = frames(&[
            "__alloc_pages_slowpath",
            "vma_alloc_folio",
            "do_huge_pmd_anonymous_page",
            "handle_mm_fault",
        ]);
        assert_eq!(
            classify(&thp, Some(9)),
            (AllocPath::ThpFault, Some(FaultKind::Anonymous))
        );
        let slab = frames(&[
            "out_of_memory",
            "__alloc_pages_slowpath",
            "allocate_slab",
            "___slab_alloc",
            "kmem_cache_alloc_noprof",
            "__x64_sys_openat",
        ]);
        assert_eq!(classify(&slab, Some(0)), (AllocPath::Slab, None));
        let pc = frames(&[
            "out_of_memory",
            "try_charge_memcg",
            "filemap_add_folio",
            "page_cache_ra_unbounded",
            "vfs_read",
        ]);
        assert_eq!(classify(&pc, Some(0)), (AllocPath::PageCache, None));
        let charge = frames(&[
            "out_of_memory",
            "try_charge_memcg",
            "__mem_cgroup_charge",
            "shmem_alloc_folio",
            "vfs_write",
        ]);
        assert_eq!(classify(&charge, Some(0)), (AllocPath::MemcgCharge, None));
        assert_eq!(
            classify(&frames(&["sysrq_handle_moom"]), Some(-1)),
            (AllocPath::Sysrq, None)
        );
        assert_eq!(classify(&[], None), (AllocPath::Other, None));
    }

    #[test]
    fn picks_the_nearest_memcg_at_its_limit() {
        let unl = memcg::page_counter_max(12);
        let pick = |levels: &[MemcgLevel], order| infer_oom_memcg(levels, order, 12);
        // child at its limit
        assert_eq!(
            pick(&[lvl(3, 100, 100), lvl(2, 500, 1000), lvl(1, 9, unl)], 0),
            Some(0)
        );
        // child has room, parent is full: the parent's limit fired
        assert_eq!(
            pick(&[lvl(3, 10, 1000), lvl(2, 1000, 1000), lvl(1, 9, unl)], 0),
            Some(1)
        );
        // an order-9 charge does not fit in 100 free pages
        assert_eq!(pick(&[lvl(3, 900, 1000), lvl(1, 9, unl)], 9), Some(0));
        // nobody near a limit: global
        assert_eq!(pick(&[lvl(3, 10, unl), lvl(1, 9, unl)], 0), None);
        // slack: 30 pages below the limit after another task freed some
        assert_eq!(pick(&[lvl(3, 970, 1000), lvl(1, 9, unl)], 0), Some(0));
        assert_eq!(pick(&[], 0), None);
        // 64 KiB pages: "max" (2^47 - 1 pages) is no limit, whatever the usage
        let unl64 = memcg::page_counter_max(16);
        assert_eq!(infer_oom_memcg(&[lvl(3, unl64, unl64)], 0, 16), None);
    }

    #[test]
    fn builds_an_inferred_event_from_a_tp_btf_record() {
        let mut e = enricher(None);
        let rec = sample();
        let ev = e.oom_kill(&rec, 7, Attach::TpBtf);
        assert_eq!(ev.kill_id, 7);
        assert_eq!(ev.victim.pid, Some(100));
        assert_eq!(ev.victim.comm, "hog");
        assert_eq!(ev.trigger.comm, "trigger");
        let m = ev.oom_memcg.as_ref().unwrap();
        assert_eq!(
            (m.id, m.source, m.limit_bytes),
            (4242, MemcgSource::Inferred, Some(16384 * 4096))
        );
        assert_eq!(ev.constraint, Constraint::Memcg);
        assert_eq!(ev.totalpages, Some(16384));
        assert!(ev.inferred.contains(&"oom_memcg"));
        assert_eq!(ev.allocation.gfp_mask, None);
        assert_eq!(ev.allocation.kernel_stack, vec!["0xffffffff81000010".to_owned()]);
        // a second, unrelated kill by another trigger gets its own id
        let mut rec2 = sample();
        rec2.trigger.tid = 999;
        assert_eq!(e.oom_kill(&rec2, 9, Attach::TpBtf).kill_id, 9);
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
        let a = e.oom_kill(&rec, 1, Attach::Fentry);
        let b = e.oom_kill(&rec, 2, Attach::Fentry);
        rec.exact.kill_ns = 56;
        let c = e.oom_kill(&rec, 3, Attach::Fentry);
        assert_eq!((a.kill_id, b.kill_id, c.kill_id), (1, 1, 3));
        assert_eq!(a.allocation.gfp_mask.as_deref(), Some("0x140cca"));
        assert_eq!(a.victim.points, Some(1234));
        assert_eq!(a.oom_memcg.unwrap().source, MemcgSource::OomControl);
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
        let a = e.oom_kill(&first, 1, Attach::Tracepoint);
        assert_eq!(a.oom_memcg.as_ref().map(|m| m.id), Some(4242));
        let mut member = sample();
        member.victim.tgid = 300;
        member.victim.tid = 300;
        member.memcg[0].usage_pages = 8000; // half of it freed already
        member.kstack[0] = 0xffff_ffff_8100_1010;
        member.kstack[1] = 0xffff_ffff_8100_2010;
        member.kstack_bytes = 16;
        let b = e.oom_kill(&member, 2, Attach::Tracepoint);
        assert_eq!(b.kill_id, 1);
        assert_eq!(b.oom_memcg.as_ref().map(|m| m.id), Some(4242));
        assert_eq!(b.constraint, Constraint::Memcg);
        // The same counters without the member frame: a new kill, and nothing at its limit.
        let mut other = member;
        other.kstack[0] = 0xffff_ffff_8100_0010;
        other.kstack_bytes = 8;
        let c = e.oom_kill(&other, 3, Attach::Tracepoint);
        assert_eq!(c.kill_id, 3);
        assert!(c.oom_memcg.is_none());
        // A member-looking line 2 s after the previous one belongs to another OOM.
        let mut late = member;
        late.ts_boot_ns += 2_000_000_000;
        assert_eq!(e.oom_kill(&late, 4, Attach::Tracepoint).kill_id, 4);
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
        let a = e.oom_kill(&rec, 1, Attach::TpBtf);
        assert_eq!(a.oom_memcg.as_ref().map(|m| m.id), Some(4242));
        assert_eq!(a.constraint, Constraint::Memcg);
        rec.reclaim.kind = flags::RECLAIM_DIRECT;
        rec.reclaim.memcg_id = 0;
        let b = e.oom_kill(&rec, 2, Attach::TpBtf);
        assert!(b.oom_memcg.is_none());
        assert_eq!(b.constraint, Constraint::Global);
    }
}
