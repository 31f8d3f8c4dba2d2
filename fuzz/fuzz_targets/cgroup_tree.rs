//! The cgroup-path resolver on a directory tree whose names come from the input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    oomtrace::fuzzing::cgroup_tree(data);
});
