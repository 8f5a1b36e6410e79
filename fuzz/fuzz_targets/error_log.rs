//! One nginx error-log line → `ErrorKind::of_line`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &str| {
    let _ = tracer::nginx::ErrorKind::of_line(line);
});
