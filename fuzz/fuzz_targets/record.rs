//! A recording file (`tracer report FILE`), truncated or corrupt → `record::parse`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let _ = tracer::host::record::parse(bytes);
});
