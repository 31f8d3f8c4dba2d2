//! Everything that faces the kernel: BTF and tracefs readers, the struct layouts handed to the
//! eBPF programs, capabilities, kernel symbols, attaching the programs, decoding their ring-buffer
//! records, the boot-time clock, the cgroup hierarchy and the kernel's memcg OOM notifications.
//! Nothing here knows about the public event types' rendering or the sinks.

pub mod attach;
pub mod btf;
pub mod caps;
pub mod cgroup;
pub mod clock;
pub mod features;
pub mod gfp;
pub mod ksyms;
pub mod layout;
pub mod memcg_watch;
pub mod record;
pub mod tracefs;

/// The running kernel's release (`uname -r`).
pub fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}
