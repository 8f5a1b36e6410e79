//! `tracer report FILE` past the file format: whatever `record::parse` accepts is replayed
//! (events, host answers, marks) into a report, with a what-if, and rendered as text and JSON.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tracer::diagnosis::what_if::Change;

fuzz_target!(|bytes: &[u8]| {
    let Ok((meta, records)) = tracer::host::record::parse(bytes) else { return };
    let what_if = [Change { backlog: Some(64), workers: Some(2) }];
    if let Ok((report, _)) = tracer::cmd::diagnose::replay_records("fuzz", meta, &records, &what_if, true) {
        let mut out = Vec::new();
        let _ = tracer::output::report::write_text(&mut out, &report);
        let _ = serde_json::to_vec(&report);
        let _ = tracer::output::html::render(&report);
    }
});
