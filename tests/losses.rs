//! Losses are counted, never silent: here, runs of the tracer's programs that the kernel skipped.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tracer_e2e::*;

const TRACER: &str = env!("CARGO_BIN_EXE_tracer");

static SIGCONTS: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_sigcont(_: libc::c_int) {
    SIGCONTS.fetch_add(1, Ordering::SeqCst);
}

/// The kernel runs one tracepoint program per CPU at a time: a tracepoint hit while another BPF
/// program runs skips ours (`recursion_misses`). bpftrace's program on this process's getppid()
/// sends it SIGCONT from inside the program, so each signal_generate of ours is skipped; the
/// tracer must count exactly as many skipped runs as signals this process received.
#[test]
fn program_runs_the_kernel_skips_are_counted() {
    require_root();
    let bpftrace = find_program("bpftrace").expect("bpftrace (cargo xtask setup installs it)");
    // SAFETY: a handler that only increments an atomic.
    unsafe { libc::signal(libc::SIGCONT, on_sigcont as *const () as libc::sighandler_t) };
    let tracer = Tracer::watch(TRACER, &["--comm", "nginx"]).expect("tracer attaches");
    let script = format!("tracepoint:syscalls:sys_enter_getppid /pid == {}/ {{ signal(\"SIGCONT\"); }}", std::process::id());
    let mut bt = Proc::spawn("bpftrace", Command::new(bpftrace).args(["--unsafe", "-e", &script]).stdout(Stdio::null()).stderr(Stdio::null()))
        .expect("bpftrace starts");
    // bpftrace is attached once a getppid() brings a signal.
    wait_for("bpftrace to attach", Duration::from_secs(30), || {
        // SAFETY: no arguments.
        unsafe { libc::getppid() };
        std::thread::sleep(Duration::from_millis(20));
        SIGCONTS.load(Ordering::SeqCst) > 0
    })
    .unwrap();
    for _ in 0..200 {
        // SAFETY: no arguments.
        unsafe { libc::getppid() };
    }
    bt.stop(libc::SIGINT, Duration::from_secs(10));
    let signals = SIGCONTS.load(Ordering::SeqCst);
    let records = tracer.stop().unwrap();
    let stats = records.iter().find(|r| r["type"] == "stats" && r["final"] == true).expect("final stats");
    eprintln!("SIGCONTs received {signals}; tracer lost {}", stats["lost"]);
    assert!(signals >= 200, "every getppid() brought a signal: {signals}");
    assert_eq!(stats["lost"]["runs_skipped"].as_u64(), Some(signals), "one skipped signal_generate run per signal");
}
