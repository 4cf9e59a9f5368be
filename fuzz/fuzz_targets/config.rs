//! See `shoal_agent::fuzzing::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shoal_agent::fuzzing::config(data));
