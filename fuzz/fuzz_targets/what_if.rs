//! `tracer report --what-if backlog=N[,workers=M]` → `Change::from_str`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    let _ = s.parse::<tracer::diagnosis::what_if::Change>();
});
