//! The daemon's TOML config file → `DaemonConfig::from_toml`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = tracer::config::DaemonConfig::from_toml(text);
});
