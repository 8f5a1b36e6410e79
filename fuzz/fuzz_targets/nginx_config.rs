//! `nginx -T` output (nginx config text, includes inlined) → `nginx::parse_config`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let mut d = tracer::nginx::Discovery::default();
    tracer::nginx::config::parse_config(text, std::path::Path::new("/etc/nginx"), &mut d);
    let _ = d.keepalive_timeout_s();
});
