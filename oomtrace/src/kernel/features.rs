//! What a run reports and what it cannot, feature by feature: the same list for
//! `oomtrace check` and the `start` record, so that a feature `check` calls available is never
//! missing from `run`.

use crate::event::{AttachReport, Feature, FeatureName, MemcgOomSource};

/// What the features are decided from.
pub struct Inputs<'a> {
    pub report: &'a AttachReport,
    /// Optional hooks that did not attach, and why (from [`super::attach::Attached`]).
    pub off: &'a [(FeatureName, String)],
    /// How OOMs without a kill are watched, or why they are not.
    pub memcg_oom: Result<MemcgOomSource, String>,
    /// False with --no-user-stacks.
    pub user_stacks: bool,
    /// /proc/kallsyms shows addresses (CAP_SYSLOG).
    pub kallsyms: bool,
    /// Kernel BTF was available (the kernel's or --btf).
    pub btf: bool,
}

const NEEDS_BTF_OR_TRACEFS: &str = "a kernel with BTF (CONFIG_DEBUG_INFO_BTF=y, or --btf PATH) for tp_btf, \
     or tracefs, which oomtrace mounts privately when it runs as root";

pub fn features(i: &Inputs) -> Vec<Feature> {
    let r = i.report;
    let off = |name: FeatureName| -> Option<String> {
        i.off.iter().find(|(n, _)| *n == name).map(|(_, why)| why.clone())
    };
    let hooked = |name: FeatureName, on: bool, fix: &str| -> Feature {
        if on {
            Feature::on(name)
        } else {
            Feature::off(
                name,
                off(name).unwrap_or_else(|| "its hook did not attach".to_owned()),
                Some(fix),
            )
        }
    };
    let exact = match r.oom_kill_process {
        Some(_) => Feature::on(FeatureName::ExactOomControl),
        None => Feature::off(
            FeatureName::ExactOomControl,
            if r.fallbacks.is_empty() {
                format!("--attach {} skips oom_kill_process", r.mode)
            } else {
                r.fallbacks.join("; ")
            },
            Some(
                "a kernel with fentry (BPF trampolines) or kprobes (CONFIG_KPROBES=y); meanwhile these fields \
                 are inferred and listed in each record's `inferred`",
            ),
        ),
    };
    let gfp = if r.oom_kill_process.is_some() || r.reclaim_begin.is_some() {
        Feature::on(FeatureName::AllocationGfpOrder)
    } else {
        hooked(FeatureName::AllocationGfpOrder, false, NEEDS_BTF_OR_TRACEFS)
    };
    let exits = match (r.signal_generate, r.process_exit) {
        (Some(_), Some(_)) => Feature::on(FeatureName::ExitVerdicts),
        (None, _) => Feature::off(
            FeatureName::ExitVerdicts,
            "no signal records to judge by".to_owned(),
            Some(NEEDS_BTF_OR_TRACEFS),
        ),
        (Some(_), None) => hooked(FeatureName::ExitVerdicts, false, NEEDS_BTF_OR_TRACEFS),
    };
    vec![
        Feature::on(FeatureName::OomKill),
        exact,
        gfp,
        hooked(
            FeatureName::Signals,
            r.signal_generate.is_some(),
            NEEDS_BTF_OR_TRACEFS,
        ),
        exits,
        match &i.memcg_oom {
            Ok(_) => Feature::on(FeatureName::MemcgOom),
            Err(why) => Feature::off(
                FeatureName::MemcgOom,
                why.clone(),
                Some(
                    "a memory cgroup hierarchy (v1 memory controller or v2 with +memory) readable by oomtrace",
                ),
            ),
        },
        hooked(
            FeatureName::OomReaper,
            r.oom_reaper.is_some(),
            NEEDS_BTF_OR_TRACEFS,
        ),
        if i.user_stacks {
            Feature::on(FeatureName::UserStacks)
        } else {
            Feature::off(
                FeatureName::UserStacks,
                "--no-user-stacks".to_owned(),
                Some("run without --no-user-stacks"),
            )
        },
        if i.kallsyms {
            Feature::on(FeatureName::KernelSymbols)
        } else {
            Feature::off(
                FeatureName::KernelSymbols,
                "no CAP_SYSLOG: /proc/kallsyms shows no addresses, kernel stacks stay raw".to_owned(),
                Some("run as root or grant CAP_SYSLOG"),
            )
        },
        if i.btf {
            Feature::on(FeatureName::CgroupIds)
        } else {
            Feature::off(
                FeatureName::CgroupIds,
                "no kernel BTF: cgroups are read from /proc while the task lives".to_owned(),
                Some("a kernel with CONFIG_DEBUG_INFO_BTF=y, or --btf PATH"),
            )
        },
    ]
}

impl Feature {
    fn on(name: FeatureName) -> Self {
        Self {
            name,
            on: true,
            reason: None,
            fix: None,
        }
    }

    fn off(name: FeatureName, reason: String, fix: Option<&str>) -> Self {
        Self {
            name,
            on: false,
            reason: Some(reason),
            fix: fix.map(str::to_owned),
        }
    }
}
