//! See `shoal_protocol::fuzzing::packet`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shoal_protocol::fuzzing::packet(data));
