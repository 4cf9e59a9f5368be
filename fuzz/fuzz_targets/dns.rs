//! See `shoal_agent::fuzzing::dns`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shoal_agent::fuzzing::dns(data));
