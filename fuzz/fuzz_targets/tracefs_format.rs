//! A tracefs `format` file and the record layouts derived from it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    oomtrace::fuzzing::tracefs_format(data);
});
