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

/// One line on stderr, and no panic or backtrace.
fn one_line(err: &str) {
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "{err}");
}

#[test]
fn invalid_durations_are_usage_errors_not_panics() {
    for d in ["-1s", "0", "0s", "1x", "", "1.5.5s", "99999999999999999999s", "8761h", "NaNs", "infs", "1e999"] {
        let (code, err) = run(Command::new(TRACER).args(["watch", &format!("--duration={d}")]));
        assert_eq!(code, 2, "--duration={d}: {err}");
        assert!(!err.contains("panicked"), "--duration={d}: {err}");
    }
    let (code, err) = run(Command::new(TRACER).args(["watch", "--interval", "99999999999999999999s"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("too long"), "{err}");
    let (code, err) = run(Command::new(TRACER).args(["report", "x.rec", "--what-if", "workers=4000000000"]));
    assert_eq!(code, 2, "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn an_unknown_subcommand_or_flag_is_a_usage_error() {
    for args in [&["frobnicate"][..], &["watch", "--pid"], &["watch", "--pid", "abc"], &["watch", "--ringbuf-kib", "1000"], &["daemon", "--bogus"]] {
        let (code, err) = run(Command::new(TRACER).args(args));
        assert!(code == 2 || (args[0] == "daemon" && code == 1), "{args:?}: exit {code}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn a_missing_or_corrupt_recording_is_one_line() {
    let (code, err) = run(Command::new(TRACER).args(["report", "/nonexistent/x.rec"]));
    assert_eq!(code, 1, "{err}");
    one_line(&err);
    let bad = std::env::temp_dir().join(format!("tracer-cli-bad-{}.rec", std::process::id()));
    std::fs::write(&bad, b"UTRACER\0\x01\0\0\0\x04\xff\xff").unwrap();
    let (code, err) = run(Command::new(TRACER).arg("report").arg(&bad));
    std::fs::remove_file(&bad).unwrap();
    assert_eq!(code, 1, "{err}");
    one_line(&err);
    assert!(err.contains("truncated"), "{err}");
}

#[test]
fn a_cgroup_that_does_not_exist_or_is_not_one_is_refused() {
    tracer_e2e::require_root();
    let (code, err) = run(Command::new(TRACER).args(["watch", "--cgroup", "/sys/fs/cgroup/no-such-cgroup-here", "--duration", "1s"]));
    assert_eq!(code, 1, "{err}");
    one_line(&err);
    assert!(err.contains("--cgroup /sys/fs/cgroup/no-such-cgroup-here") && err.contains("No such file"), "{err}");
    let (code, err) = run(Command::new(TRACER).args(["watch", "--cgroup", "/tmp", "--duration", "1s"]));
    assert_eq!(code, 1, "{err}");
    one_line(&err);
    assert!(err.contains("not a cgroup v2 directory"), "{err}");
}

#[test]
fn tracefs_unmounted_and_unmountable_is_one_line() {
    tracer_e2e::require_root();
    // In a private mount namespace: tracefs (and debugfs, which can hold it) unmounted, and
    // CAP_SYS_ADMIN dropped so the tracer cannot mount it back.
    let script = format!(
        "umount -l /sys/kernel/debug/tracing 2>/dev/null; umount -l /sys/kernel/debug 2>/dev/null; umount -l /sys/kernel/tracing 2>/dev/null; \
         exec setpriv --bounding-set=-sys_admin --inh-caps=-sys_admin {TRACER} watch --duration 1s"
    );
    let (code, err) = run(Command::new("unshare").args(["--mount", "--propagation", "private", "sh", "-c", &script]));
    assert_eq!(code, 1, "{err}");
    one_line(&err);
    assert!(err.contains("tracefs is not mounted") && err.contains("mount -t tracefs"), "{err}");
}

#[test]
fn without_btf_it_warns_and_runs() {
    tracer_e2e::require_root();
    // /sys/kernel/btf hidden in a private mount namespace: the features that need BTF are off
    // (one warning naming them), the rest runs and ends normally.
    let script = format!("mount -t tmpfs none /sys/kernel/btf && exec {TRACER} watch --json --comm no-such-comm --duration 300ms");
    let out = Command::new("unshare").args(["--mount", "--propagation", "private", "sh", "-c", &script]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.status.success(), "{err}");
    assert!(err.contains("BTF"), "the missing BTF is named: {err}");
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
