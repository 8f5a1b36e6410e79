//! `cargo xtask demo`: a real nginx in front of a real gunicorn whose unix-socket listen queue
//! (backlog 16, one sync worker, 0.5 s per request) overflows under a burst, diagnosed live by the
//! tracer, next to nginx's own count of 502s. Everything started here is stopped on exit and on
//! Ctrl-C (children run in their own process groups, owned by RAII guards).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tracer_e2e::{find_program, Gunicorn, GunicornOpts, Nginx, NginxOpts, Proc, Scratch};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn check_interrupt() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted: stopping nginx, gunicorn and the tracer");
    }
    Ok(())
}

/// Wait for a child, giving up (and letting the guards clean up) on Ctrl-C.
fn wait(p: &mut Proc) -> Result<std::process::ExitStatus> {
    loop {
        if let Some(s) = p.child.try_wait()? {
            return Ok(s);
        }
        check_interrupt()?;
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn run(requests: u32) -> Result<()> {
    // SAFETY: the handler only stores to an atomic.
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };

    eprintln!("demo: building the tracer (release)…");
    let st = Command::new(env!("CARGO")).args(["build", "--release", "-p", "tracer"]).status()?;
    if !st.success() {
        bail!("building the tracer failed");
    }
    let tracer_bin = tracer_e2e::repo_root().join("target/release/tracer");

    let scratch = Scratch::new("demo");
    let sock = scratch.path("gunicorn.sock");
    eprintln!("demo: gunicorn on unix:{} with --backlog 16, 1 sync worker, app sleeps 0.5 s", sock.display());
    let gunicorn = Gunicorn::start(&GunicornOpts { bind: format!("unix:{}", sock.display()), backlog: 16, ..Default::default() })?;
    check_interrupt()?;
    let upstream = format!("unix:{}:", sock.display());
    let nginx = Nginx::start(&scratch, &NginxOpts { upstream: &upstream, ..Default::default() })?;
    eprintln!("demo: nginx (master pid {}) on {} → unix:{}", nginx.master_pid(), nginx.url(), sock.display());
    check_interrupt()?;

    let mut cmd = Command::new(&tracer_bin);
    // `diagnose`: quiet while tracing, then one verdict per root cause with its proof and fix.
    cmd.args(["diagnose", "--pid", &nginx.master_pid().to_string()]).arg("--html").arg(scratch.path("report.html")).stderr(Stdio::piped());
    let mut tracer = Proc::spawn("tracer", &mut cmd)?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let err = tracer.child.stderr.take().context("tracer stderr")?;
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(|l| l.ok()) {
            eprintln!("{line}");
            if line.contains("watching") {
                let _ = ready_tx.send(());
            }
        }
    });
    if ready_rx.recv_timeout(Duration::from_secs(30)).is_err() {
        bail!("the tracer did not start (see its message above)");
    }

    eprintln!("demo: firing {requests} concurrent requests at nginx (ab -n {requests} -c {requests})…\n");
    let mut ab = Proc::spawn(
        "ab",
        Command::new(find_program("ab")?)
            .args(["-q", "-s", "60", "-n", &requests.to_string(), "-c", &requests.to_string(), &nginx.url()])
            .stdout(Stdio::null()),
    )?;
    wait(&mut ab)?;
    tracer.stop(libc::SIGINT, Duration::from_secs(20));
    let _ = tracer.child.wait();

    let statuses = nginx.statuses();
    let eagain_lines = nginx.error_lines("(11: Resource temporarily unavailable)");
    let shown: Vec<String> = statuses.iter().map(|(s, n)| format!("{n} × {s}")).collect();
    println!("\nnginx's own logs (ground truth):");
    println!("  access log: {}", shown.join(", "));
    println!("  error log:  {eagain_lines} × \"connect() to unix:… failed (11: Resource temporarily unavailable)\"");
    println!("  gunicorn master pid {} (the listener's owner the verdict should name)", gunicorn.master_pid());
    let html = scratch.path("report.html");
    let kept = std::env::temp_dir().join("upstream-tracer-demo.html");
    if std::fs::copy(&html, &kept).is_ok() {
        println!("\nHTML report (open it in a browser): {}", kept.display());
    }
    Ok(())
}
