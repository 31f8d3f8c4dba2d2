//! oomtrace as a library: every module of the `oomtrace` binary (src/main.rs is only its command
//! line). It exists so that the fuzz targets (fuzz/) and property tests can call the decoders and
//! parsers directly. It is not a stable API: the contract of oomtrace is its command line and its
//! event stream (docs/events.md).
//!
//! The layers, each depending only on those before it:
//! - [`event`]: the public JSON Lines types (the contract), depending on nothing else here;
//! - [`kernel`]: everything that faces the kernel (BTF, tracefs, attaching, ring-buffer records);
//! - [`enrich`]: the pipeline from a kernel record to an event;
//! - [`sink`]: where events go (JSON Lines, text);
//! - [`run`] and [`check`]: the commands, which wire the layers together.

pub mod check;
pub mod enrich;
pub mod event;
#[doc(hidden)]
pub mod fuzzing;
pub mod kernel;
pub mod queue;
pub mod run;
pub mod sink;
pub mod stream;

/// Returns freed heap pages to the kernel (glibc keeps them otherwise).
pub(crate) fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory; no pointers are invalidated.
    unsafe {
        libc::malloc_trim(0);
    }
}
