//! A ring-buffer record as the kernel hands it over: decoded, enriched, written as JSON.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    oomtrace::fuzzing::record(data);
});
