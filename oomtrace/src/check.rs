//! `oomtrace check`: what this kernel offers and which mode `run` would use. Programs are loaded
//! and attached only for the duration of the check, then dropped.

use std::fmt::Write as _;

use anyhow::Result;

use crate::kernel::{
    self,
    attach::{self as loader, AttachMode, KernelInfo},
    btf::BtfSource,
    caps, cgroup, features, memcg_watch,
};

pub fn run(btf: &BtfSource) -> Result<bool> {
    let mut out = String::new();
    let mut ok = true;
    let kernel = kernel::release();
    let _ = writeln!(out, "kernel            {kernel}");

    let eff = caps::effective();
    let missing = caps::missing_for_run(eff);
    if missing.is_empty() {
        let _ = writeln!(out, "privileges        ok (CAP_BPF+CAP_PERFMON or CAP_SYS_ADMIN)");
    } else {
        ok = false;
        let _ = writeln!(
            out,
            "privileges        MISSING {} (run as root: sudo oomtrace check)",
            missing.join(", ")
        );
    }
    if !caps::has(eff, caps::CAP_SYSLOG) {
        let _ = writeln!(
            out,
            "kallsyms          no CAP_SYSLOG: kernel stacks stay as raw addresses"
        );
    }

    let info = KernelInfo::probe(btf)?;
    match (&info.btf, &info.btf_error) {
        (Some(b), _) if info.btf_missing.is_empty() => {
            let _ = writeln!(
                out,
                "btf               ok ({} types, all offsets resolved, from {})",
                b.type_count(),
                info.btf_source.path().display()
            );
        }
        (Some(_), _) => {
            let _ = writeln!(
                out,
                "btf               partial, unresolved: {}",
                info.btf_missing.join(", ")
            );
        }
        (None, e) => {
            let _ = writeln!(
                out,
                "btf               MISSING ({}): fentry, kprobe and tp_btf need it; only --attach tracepoint works, \
                 without cgroups (kernel needs CONFIG_DEBUG_INFO_BTF=y)",
                e.as_deref().unwrap_or("?")
            );
        }
    }
    match &info.tracefs {
        Some(p) => {
            let _ = writeln!(out, "tracefs           {}", p.display());
        }
        None => {
            let _ = writeln!(
                out,
                "tracefs           MISSING (mount -t tracefs tracefs /sys/kernel/tracing)"
            );
        }
    }
    let _ = writeln!(
        out,
        "oom:mark_victim   {}",
        match &info.mark_victim_format {
            Some(f) => format!("format has {} fields", f.fields.len()),
            None => "format not readable".to_owned(),
        }
    );
    match cgroup::detect() {
        Some(h) => {
            let _ = writeln!(out, "memory cgroup     v{} at {}", h.version, h.mount.display());
        }
        None => {
            let _ = writeln!(
                out,
                "memory cgroup     none (no hierarchy with the memory controller)"
            );
        }
    }

    if missing.is_empty() {
        for mode in [
            AttachMode::Fentry,
            AttachMode::Kprobe,
            AttachMode::TpBtf,
            AttachMode::Tracepoint,
        ] {
            let verdict = match loader::attach(&info, mode, 4096) {
                Ok(a) if Some(a.report.mode) == mode.attach() => "ok".to_owned(),
                Ok(a) => format!("no (fell back to {})", a.report.mode),
                Err(e) => format!("no: {}", format!("{e:#}").lines().next().unwrap_or_default()),
            };
            let _ = writeln!(out, "attach {:<11}{verdict}", mode.name());
        }
        match loader::attach(&info, AttachMode::Auto, 4096) {
            Ok(a) => {
                let _ = writeln!(out, "run would use     {}", a.report.mode);
                let hierarchy = cgroup::detect();
                let list = features::features(&features::Inputs {
                    report: &a.report,
                    off: &a.off,
                    memcg_oom: hierarchy
                        .as_ref()
                        .map(memcg_watch::source)
                        .ok_or_else(|| "no cgroup hierarchy with the memory controller".to_owned()),
                    user_stacks: true,
                    kallsyms: caps::has(eff, caps::CAP_SYSLOG),
                    btf: info.btf.is_some(),
                });
                for f in list {
                    let state = match (&f.reason, &f.fix) {
                        _ if f.on => "on".to_owned(),
                        (Some(r), Some(fix)) => format!("OFF: {r} (to turn it on: {fix})"),
                        (r, _) => format!("OFF: {}", r.as_deref().unwrap_or("?")),
                    };
                    let _ = writeln!(out, "feature {:<22}{state}", f.name.as_str());
                }
            }
            Err(e) => {
                ok = false;
                let _ = writeln!(out, "run would use     nothing: {e:#}");
            }
        }
    }
    print!("{out}");
    Ok(ok)
}
