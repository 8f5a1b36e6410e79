//! Host-only (no root, no kernel): every recording in tests/fixtures/ that has an expected report
//! beside it (`X.rec` + `X.expected.json`) is replayed with `tracer report X.rec --json`, and the
//! whole report must equal the expected one exactly. Together the fixtures must cover every
//! verdict kind, so a kind without a fixture fails here.
//!
//! The recordings are made by tests/record_fixtures.rs (root, real nginx and app servers) and are
//! never edited by hand. When the report changes on purpose (a better proof text, a new field),
//! rewrite the expected files instead of comparing, then review the diff before committing:
//!
//! ```sh
//! TRACER_UPDATE_FIXTURES=1 cargo test --release --test fixtures
//! ```
//!
//! That rewrites every existing `X.expected.json`, and creates it for a new recording named after
//! a verdict kind (`<kind>.rec`). Other recordings without an expected file (backlog.rec, used by
//! tests/verdicts.rs) are left alone.
//!
//! An expected file is the report exactly as `tracer report --json` printed it, laid out like
//! serde_json's pretty printer (two-space indent) by re-indenting the text, not by parsing and
//! printing it again: serde_json's default float parser (no `float_roundtrip` feature) may be one
//! ULP off, and a parse → print round trip then rewrites a 17-digit time such as
//! 1796321720.6654193 as 1796321720.665419. Both sides of the comparison are parsed by the same
//! parser from the same digits, so the comparison is exact.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const TRACER: &str = env!("CARGO_BIN_EXE_tracer");

/// Every verdict kind the tracer gives (README, "Verdict kinds").
const KINDS: [&str; 12] = [
    "listen_queue_full",
    "socket_missing",
    "permission_denied",
    "nothing_listening",
    "connect_error",
    "tcp_accept_queue_full",
    "connect_timeout",
    "worker_killed",
    "worker_recycled",
    "keepalive_timeout_mismatch",
    "upstream_closed",
    "proxy_timeout",
];

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tracer/ has a parent").join("tests/fixtures")
}

fn updating() -> bool {
    std::env::var("TRACER_UPDATE_FIXTURES").as_deref() == Ok("1")
}

/// (recording, its expected report) for every `X.rec` that has `X.expected.json` beside it (or,
/// when updating, is named after a verdict kind), sorted by name.
fn fixtures() -> Vec<(PathBuf, PathBuf)> {
    let mut v: Vec<(PathBuf, PathBuf)> = std::fs::read_dir(fixtures_dir())
        .expect("read tests/fixtures")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "rec"))
        .filter_map(|rec| {
            let stem = rec.file_stem()?.to_str()?.to_string();
            let expected = rec.with_file_name(format!("{stem}.expected.json"));
            (expected.exists() || (updating() && KINDS.contains(&stem.as_str()))).then_some((rec, expected))
        })
        .collect();
    v.sort();
    v
}

/// `tracer report REC --json`: its text and the parsed report.
fn report(rec: &Path) -> (String, Value) {
    let out = Command::new(TRACER).arg("report").arg(rec).arg("--json").output().expect("run tracer report");
    assert!(out.status.success(), "tracer report {}: {}\n{}", rec.display(), out.status, String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("UTF-8 report");
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("tracer report {}: not JSON ({e})", rec.display()));
    (text, value)
}

/// JSON text laid out like serde_json's `to_string_pretty` (two-space indent, `"key": value`,
/// `[]` / `{}` when empty), token for token: keys keep their order and numbers their digits.
fn pretty(json: &str) -> String {
    fn newline(out: &mut String, depth: usize) {
        out.push('\n');
        out.push_str(&"  ".repeat(depth));
    }
    let mut out = String::with_capacity(json.len() * 2);
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    let mut chars = json.chars().peekable();
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
                let close = if c == '{' { '}' } else { ']' };
                out.push(c);
                if chars.peek() == Some(&close) {
                    chars.next();
                    out.push(close);
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth -= 1;
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(',');
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out.push('\n');
    out
}

/// Where two JSON values differ, as JSON pointers (at most `max`).
fn differences(path: &str, a: &Value, b: &Value, out: &mut Vec<String>, max: usize) {
    if out.len() >= max || a == b {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                let p = format!("{path}/{k}");
                match (x.get(k), y.get(k)) {
                    (Some(va), Some(vb)) => differences(&p, va, vb, out, max),
                    (va, vb) => out.push(format!("{p}: got {}, expected {}", show(va), show(vb))),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                differences(&format!("{path}/{i}"), va, vb, out, max);
            }
        }
        _ => out.push(format!("{path}: got {}, expected {}", show(Some(a)), show(Some(b)))),
    }
}

fn show(v: Option<&Value>) -> String {
    let s = v.map_or("(absent)".to_string(), Value::to_string);
    if s.len() > 300 {
        format!("{}… ({} chars)", &s[..s.floor_char_boundary(300)], s.len())
    } else {
        s
    }
}

#[test]
fn every_fixture_replays_to_its_expected_report_and_all_verdict_kinds_are_covered() {
    let fixtures = fixtures();
    assert!(!fixtures.is_empty(), "no fixtures in {}", fixtures_dir().display());
    let mut covered = BTreeSet::new();
    let mut failures = Vec::new();
    for (rec, expected_path) in &fixtures {
        let (raw, got) = report(rec);
        let name = rec.file_name().unwrap().to_string_lossy().into_owned();
        if updating() {
            let text = pretty(&raw);
            assert_eq!(serde_json::from_str::<Value>(&text).expect("re-indented JSON"), got, "{name}: re-indenting kept the report");
            std::fs::write(expected_path, text).unwrap_or_else(|e| panic!("write {}: {e}", expected_path.display()));
            eprintln!("updated {}", expected_path.display());
        } else {
            let text = std::fs::read_to_string(expected_path).unwrap_or_else(|e| panic!("read {}: {e}", expected_path.display()));
            let expected: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON ({e})", expected_path.display()));
            if got != expected {
                let mut diffs = Vec::new();
                differences("", &got, &expected, &mut diffs, 20);
                failures.push(format!("{name}: the report differs from {}:\n  {}", expected_path.display(), diffs.join("\n  ")));
            }
        }
        // A fixture named after a verdict kind must give only that kind.
        let kinds: BTreeSet<String> =
            got["verdicts"].as_array().into_iter().flatten().filter_map(|v| v["kind"].as_str().map(str::to_string)).collect();
        let stem = rec.file_stem().unwrap().to_string_lossy().into_owned();
        if KINDS.contains(&stem.as_str()) {
            assert_eq!(kinds, BTreeSet::from([stem.clone()]), "{name}: a fixture named after a verdict kind gives that kind only");
        }
        covered.extend(kinds);
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures differ (TRACER_UPDATE_FIXTURES=1 rewrites the expected files):\n{}",
        failures.len(),
        fixtures.len(),
        failures.join("\n")
    );
    let all: BTreeSet<String> = KINDS.iter().map(|k| k.to_string()).collect();
    let missing: Vec<&String> = all.difference(&covered).collect();
    assert!(missing.is_empty(), "verdict kinds without a fixture: {missing:?} (record them with tests/record_fixtures.rs)");
    assert_eq!(covered, all, "the fixtures cover exactly the known verdict kinds");
}
