//! oomtrace as a library: every module of the `oomtrace` binary (src/main.rs is only its command
//! line). It exists so that the fuzz targets (fuzz/) and property tests can call the decoders and
//! parsers directly — the ring-buffer record decoder, the tracefs format parser, the cgroup path
//! resolver, the /proc and cgroupfs parsers. It is not a stable API: the contract of oomtrace is
//! its command line and its event stream (docs/events.md).

pub mod btf;
pub mod caps;
pub mod cgroup;
pub mod check;
pub mod enrich;
pub mod event;
#[doc(hidden)]
pub mod fuzzing;
pub mod gfp;
pub mod ksyms;
pub mod layout;
pub mod loader;
pub mod memcg_watch;
pub mod memstat;
pub mod output;
pub mod record;
pub mod run;
pub mod tracefs;
pub mod ustack;
pub mod whodunit;
