//! Privileges: which capabilities this process holds, read from /proc/self/status (CapEff).

use std::fs;

// include/uapi/linux/capability.h
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_SYSLOG: u32 = 34;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

pub fn effective() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| parse_cap_eff(&s))
        .unwrap_or(0)
}

pub fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

pub fn has(eff: u64, cap: u32) -> bool {
    eff & (1 << cap) != 0
}

/// The capabilities `oomtrace run` lacks: loading tracing programs needs CAP_BPF + CAP_PERFMON
/// (kernel ≥ 5.8), or CAP_SYS_ADMIN, which implies both.
pub fn missing_for_run(eff: u64) -> Vec<&'static str> {
    if has(eff, CAP_SYS_ADMIN) {
        return Vec::new();
    }
    let mut missing = Vec::new();
    if !has(eff, CAP_BPF) {
        missing.push("CAP_BPF");
    }
    if !has(eff, CAP_PERFMON) {
        missing.push("CAP_PERFMON");
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks() {
        let root = "Name:\tx\nCapEff:\t000001ffffffffff\n";
        let eff = parse_cap_eff(root).unwrap();
        assert!(missing_for_run(eff).is_empty());
        assert_eq!(missing_for_run(0), vec!["CAP_BPF", "CAP_PERFMON"]);
        assert_eq!(missing_for_run(1 << CAP_BPF), vec!["CAP_PERFMON"]);
        assert!(missing_for_run(1 << CAP_SYS_ADMIN).is_empty());
        assert_eq!(parse_cap_eff("nothing"), None);
    }
}
