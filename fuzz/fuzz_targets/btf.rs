//! Kernel BTF: the struct offsets and enum values oomtrace reads from it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    oomtrace::fuzzing::btf(data);
});
