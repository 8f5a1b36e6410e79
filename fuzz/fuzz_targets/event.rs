//! One ring-buffer record → `Event::decode`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let _ = tracer::kernel::events::Event::decode(bytes);
});
