//! Fills the programs' `CONFIG` from the running kernel: struct offsets from BTF, record layouts
//! from tracefs. Nothing here comes from the build machine's headers.

use oomtrace_common::{ABSENT, Config};

use crate::kernel::{btf::Btf, tracefs::Format};

/// Offset of `s.path`, or ABSENT; records what was missing in `missing`.
fn off(btf: &Btf, s: &str, path: &str, missing: &mut Vec<String>) -> u32 {
    match btf.member(s, path) {
        Some(m) => m.offset,
        None => {
            missing.push(format!("{s}.{path}"));
            ABSENT
        }
    }
}

fn enum_val(btf: &Btf, name: &str, missing: &mut Vec<String>) -> u32 {
    match btf.enum_value(name).and_then(|v| u32::try_from(v).ok()) {
        Some(v) => v,
        None => {
            missing.push(name.to_owned());
            ABSENT
        }
    }
}

/// Resolves every struct offset the programs use. Returns the names it could not find: each
/// leaves one record field unknown, never a wrong value.
pub fn from_btf(btf: &Btf, cfg: &mut Config) -> Vec<String> {
    let mut miss = Vec::new();
    let m = &mut miss;
    // include/linux/sched.h (v6.18)
    cfg.task_pid = off(btf, "task_struct", "pid", m);
    cfg.task_tgid = off(btf, "task_struct", "tgid", m);
    cfg.task_comm = off(btf, "task_struct", "comm", m);
    cfg.task_mm = off(btf, "task_struct", "mm", m);
    cfg.task_signal = off(btf, "task_struct", "signal", m);
    cfg.task_cgroups = off(btf, "task_struct", "cgroups", m);
    // include/linux/sched/signal.h
    cfg.signal_oom_score_adj = off(btf, "signal_struct", "oom_score_adj", m);
    // include/linux/mm_types.h: total_vm and friends sit in an anonymous struct since 6.2.
    cfg.mm_total_vm = off(btf, "mm_struct", "total_vm", m);
    cfg.mm_hiwater_rss = off(btf, "mm_struct", "hiwater_rss", m);
    cfg.mm_pgtables_bytes = off(btf, "mm_struct", "pgtables_bytes", m);
    rss_stat(btf, cfg, m);
    // enum { MM_FILEPAGES, MM_ANONPAGES, MM_SWAPENTS, MM_SHMEMPAGES } (include/linux/mm_types_task.h)
    cfg.rss_file_idx = enum_val(btf, "MM_FILEPAGES", m);
    cfg.rss_anon_idx = enum_val(btf, "MM_ANONPAGES", m);
    cfg.rss_swap_idx = enum_val(btf, "MM_SWAPENTS", m);
    cfg.rss_shmem_idx = enum_val(btf, "MM_SHMEMPAGES", m);
    // include/linux/cgroup-defs.h, include/linux/kernfs.h
    cfg.css_set_subsys = off(btf, "css_set", "subsys", m);
    cfg.memory_cgrp_id = enum_val(btf, "memory_cgrp_id", m);
    cfg.css_cgroup = off(btf, "cgroup_subsys_state", "cgroup", m);
    cfg.css_parent = off(btf, "cgroup_subsys_state", "parent", m);
    cfg.cgroup_kn = off(btf, "cgroup", "kn", m);
    cfg.kn_id = off(btf, "kernfs_node", "id", m);
    // include/linux/memcontrol.h, include/linux/page_counter.h. The programs treat a css pointer as
    // the memcg pointer, which holds only while `css` is mem_cgroup's first member.
    match btf.member("mem_cgroup", "css") {
        Some(css) if css.offset == 0 => {
            cfg.memcg_memory = off(btf, "mem_cgroup", "memory", m);
        }
        _ => m.push("mem_cgroup.css at offset 0".to_owned()),
    }
    cfg.page_counter_usage = off(btf, "page_counter", "usage", m);
    cfg.page_counter_max = off(btf, "page_counter", "max", m);
    cfg.page_counter_watermark = off(btf, "page_counter", "watermark", m);
    // v2 charges swap to `swap`, v1 memory+swap to `memsw`: one anonymous union (memcontrol.h).
    cfg.memcg_swap = btf
        .member("mem_cgroup", "swap")
        .or_else(|| btf.member("mem_cgroup", "memsw"))
        .map_or(ABSENT, |m| m.offset);
    // Whodunit: kernel/exit.c, include/linux/fs.h, include/linux/dcache.h, include/linux/signal_types.h (v6.18)
    cfg.task_exit_code = off(btf, "task_struct", "exit_code", m);
    // sched_process_exit gained `bool group_dead` in 6.16 (include/trace/events/sched.h).
    if btf.tracepoint_args("sched_process_exit") == Some(2) {
        cfg.btf_exit_group_dead = 1;
    }
    cfg.task_group_leader = off(btf, "task_struct", "group_leader", m);
    // Named real_start_time before 5.5 (cf7d8a7e2b35); only the boot-time clock matches our timestamps.
    cfg.task_start_boottime = off(btf, "task_struct", "start_boottime", m);
    cfg.signal_live = off(btf, "signal_struct", "live", m);
    cfg.mm_exe_file = off(btf, "mm_struct", "exe_file", m);
    cfg.file_dentry = off(btf, "file", "f_path.dentry", m);
    cfg.dentry_name = off(btf, "dentry", "d_name.name", m);
    cfg.siginfo_code = off(btf, "kernel_siginfo", "si_code", m);
    // include/linux/oom.h
    cfg.oc_memcg = off(btf, "oom_control", "memcg", m);
    cfg.oc_gfp_mask = off(btf, "oom_control", "gfp_mask", m);
    cfg.oc_order = off(btf, "oom_control", "order", m);
    cfg.oc_totalpages = off(btf, "oom_control", "totalpages", m);
    cfg.oc_chosen = off(btf, "oom_control", "chosen", m);
    cfg.oc_chosen_points = off(btf, "oom_control", "chosen_points", m);
    cfg.oc_constraint = off(btf, "oom_control", "constraint", m);
    miss
}

/// `mm_struct.rss_stat`: since 6.2 (f1a7941243c1) an array of `struct percpu_counter`; before, a
/// `struct mm_rss_stat { atomic_long_t count[NR_MM_COUNTERS]; }`.
fn rss_stat(btf: &Btf, cfg: &mut Config, miss: &mut Vec<String>) {
    let Some(rss) = btf.member("mm_struct", "rss_stat") else {
        miss.push("mm_struct.rss_stat".to_owned());
        return;
    };
    if let Some((elem, _)) = btf.array(rss.type_id) {
        let count = btf.member("percpu_counter", "count");
        match (btf.struct_name(elem), btf.size_of(elem), count) {
            (Some("percpu_counter"), Some(size), Some(count)) => {
                cfg.mm_rss_stat = rss.offset;
                cfg.rss_stride = size;
                cfg.rss_value = count.offset;
            }
            _ => miss.push("mm_struct.rss_stat[] (percpu_counter.count)".to_owned()),
        }
    } else if let Some(count) = btf.member_in(rss.type_id, "count") {
        cfg.mm_rss_stat = rss.offset + count.offset;
        cfg.rss_stride = 8;
        cfg.rss_value = 0;
    } else {
        miss.push("mm_struct.rss_stat.count".to_owned());
    }
}

/// Record layout of `oom/mark_victim`.
/// Offset of the record field `name` if its size is one of `sizes`, else ABSENT: a field of an
/// unexpected size would be misread, so it counts as missing.
fn field_at(fmt: &Format, name: &str, sizes: &[u32]) -> u32 {
    fmt.field(name)
        .filter(|f| sizes.contains(&f.size))
        .map_or(ABSENT, |f| f.offset)
}

pub fn from_mark_victim(fmt: &Format, cfg: &mut Config) {
    let at = |name: &str, size: u32| field_at(fmt, name, &[size]);
    cfg.tp_mv_pid = at("pid", 4);
    cfg.tp_mv_comm = fmt
        .field("comm")
        .filter(|f| f.decl.starts_with("__data_loc"))
        .map_or(ABSENT, |f| f.offset);
    cfg.tp_mv_total_vm = at("total_vm", 8);
    cfg.tp_mv_anon_rss = at("anon_rss", 8);
    cfg.tp_mv_file_rss = at("file_rss", 8);
    cfg.tp_mv_shmem_rss = at("shmem_rss", 8);
    cfg.tp_mv_uid = at("uid", 4);
    cfg.tp_mv_pgtables = at("pgtables", 8);
    cfg.tp_mv_oom_score_adj = at("oom_score_adj", 2);
}

/// Record layout of `vmscan:mm_vmscan_{memcg,direct}_reclaim_begin` (both share one event class).
pub fn from_reclaim_begin(fmt: &Format, cfg: &mut Config) {
    cfg.tp_reclaim_order = field_at(fmt, "order", &[4]);
    match fmt.field("gfp_flags") {
        Some(f) if f.size == 4 || f.size == 8 => {
            cfg.tp_reclaim_gfp = f.offset;
            cfg.tp_reclaim_gfp_size = f.size;
        }
        _ => cfg.tp_reclaim_gfp = ABSENT,
    }
}

/// Record layout of `signal:signal_generate`.
pub fn from_signal_generate(fmt: &Format, cfg: &mut Config) {
    let at = |name: &str, size: u32| field_at(fmt, name, &[size]);
    cfg.tp_sig_sig = at("sig", 4);
    cfg.tp_sig_code = at("code", 4);
    cfg.tp_sig_comm = at("comm", 16);
    cfg.tp_sig_pid = at("pid", 4);
    cfg.tp_sig_group = at("group", 4);
    cfg.tp_sig_result = at("result", 4);
}

/// `sched:sched_process_exit` gained `group_dead` in 6.16; before, the program reads signal->live.
pub fn from_process_exit(fmt: &Format, cfg: &mut Config) {
    cfg.tp_exit_group_dead = field_at(fmt, "group_dead", &[1]);
}

/// Record layout of `task:task_newtask`: the new task's pid and its clone flags (u64 since 6.x,
/// `unsigned long` before: 4 or 8 bytes, read as the low 32 bits).
pub fn from_task_newtask(fmt: &Format, cfg: &mut Config) {
    cfg.tp_nt_pid = field_at(fmt, "pid", &[4]);
    cfg.tp_nt_clone_flags = field_at(fmt, "clone_flags", &[4, 8]);
}

/// `sched:sched_process_free`: the released task's pid (after a `comm` that is `char[16]` or,
/// since 6.x, `__data_loc`).
pub fn from_process_free(fmt: &Format, cfg: &mut Config) {
    cfg.tp_free_pid = field_at(fmt, "pid", &[4]);
}

/// Record layout of the oom:*reap* tracepoints (one event class: just the pid).
pub fn from_reaper(fmt: &Format, cfg: &mut Config) {
    cfg.tp_reap_pid = field_at(fmt, "pid", &[4]);
}

pub fn page_shift() -> u32 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        (size as u64).trailing_zeros()
    } else {
        12
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_the_running_kernel_when_btf_is_present() {
        let Ok(btf) = Btf::from_sys_fs() else {
            eprintln!("SKIP: no readable /sys/kernel/btf/vmlinux here");
            return;
        };
        let mut cfg = Config::ABSENT;
        let missing = from_btf(&btf, &mut cfg);
        assert!(missing.is_empty(), "unresolved on this kernel: {missing:?}");
        assert!(cfg.rss_stride == 8 || cfg.rss_stride >= 32, "{}", cfg.rss_stride);
        assert_ne!(cfg.memory_cgrp_id, ABSENT);
    }

    #[test]
    fn mark_victim_layout_ignores_fields_of_unexpected_size() {
        let fmt = Format::parse(
            "name: mark_victim\nID: 1\nformat:\n\tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;\n\
             \tfield:unsigned int total_vm;\toffset:12;\tsize:4;\tsigned:0;\n",
        )
        .unwrap();
        let mut cfg = Config::ABSENT;
        from_mark_victim(&fmt, &mut cfg);
        assert_eq!(cfg.tp_mv_pid, 8);
        assert_eq!(cfg.tp_mv_total_vm, ABSENT);
        assert_eq!(cfg.tp_mv_comm, ABSENT);
    }
}
