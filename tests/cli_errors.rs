//! Errors a user can act on: one clear line and a non-zero exit, never a panic or a backtrace.

use std::process::Command;

const TRACER: &str = env!("CARGO_BIN_EXE_tracer");

fn run(cmd: &mut Command) -> (i32, String) {
    let out = cmd.output().expect("run tracer");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn without_privileges_it_says_so_and_exits_1() {
    tracer_e2e::require_root();
    // Drop to nobody with no capabilities, as an unprivileged user would run it.
    let (code, err) = run(Command::new("setpriv").args(["--reuid=65534", "--regid=65534", "--clear-groups", TRACER, "watch", "--duration", "1s"]));
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("needs root") && err.contains("CAP_BPF"), "{err}");
}

#[test]
fn a_bad_flag_is_a_usage_error() {
    let (code, err) = run(Command::new(TRACER).args(["watch", "--duration", "soon"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("Usage") || err.contains("--help"), "{err}");
    let (code, err) = run(Command::new(TRACER).args(["watch", "--no-such-flag"]));
    assert_eq!(code, 2, "{err}");
}

#[test]
fn an_unknown_pid_is_refused_before_loading() {
    tracer_e2e::require_root();
    let (code, err) = run(Command::new(TRACER).args(["watch", "--pid", "999999999"]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no such process"), "{err}");
}

#[test]
fn a_duration_ends_the_run_with_a_final_summary() {
    tracer_e2e::require_root();
    let started = std::time::Instant::now();
    let out = Command::new(TRACER).args(["watch", "--json", "--comm", "no-such-comm", "--duration", "300ms"]).output().unwrap();
    let elapsed = started.elapsed();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Ended by the duration: not before it (one-sided: the duration runs from attaching), and
    // not long after it (loading and detaching take well under a second; 20 s is generous).
    assert!(elapsed >= std::time::Duration::from_millis(300), "ended after {elapsed:?}, before its 300 ms");
    assert!(elapsed <= std::time::Duration::from_secs(20), "ended only after {elapsed:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().expect("a final record")).unwrap();
    assert_eq!(last["type"], "stats");
    assert_eq!(last["final"], true);
    let probes = last["probes"].as_array().expect("probes");
    assert!(!probes.is_empty(), "the final record lists the probes: {last}");
    assert!(probes.iter().all(|p| p["attached"] == true), "{last}");
}
