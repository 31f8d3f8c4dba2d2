//! /proc and cgroupfs text: CapEff, kallsyms, memory.stat, the kernel release.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    oomtrace::fuzzing::proc_text(data);
});
