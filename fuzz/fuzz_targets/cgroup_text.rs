//! /proc/self/mountinfo and /proc/<pid>/cgroup text (split at the first NUL).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    oomtrace::fuzzing::cgroup_text(data);
});
