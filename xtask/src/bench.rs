//! `cargo xtask bench [--smoke]`: what tracing costs, measured on this machine — request
//! overhead through a real nginx next to a bpftrace peer, event throughput and loss, kernel time
//! per program, memory per connection count. Prints a markdown report and writes BENCHMARKS.md
//! (`--smoke`: a few seconds of everything, written to target/ so CI leaves the tree clean; it
//! checks that the bench works, never how fast anything is).

mod breakdown;
mod events;
mod kcost;
mod load;
mod memory;
mod overhead;
mod report;
mod tools;

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// Durations and sizes of one bench run.
pub struct Plan {
    pub smoke: bool,
    /// Seconds per wrk run (phases 1 and 3).
    pub run_secs: f64,
    /// Seconds per synthetic load run (phases 2 and 3).
    pub load_secs: f64,
    /// Interleaved repetitions of (untraced, tracer, bpftrace) per configuration.
    pub reps: usize,
    /// Repetitions of the breakdown's variants (phase 1b) per configuration.
    pub breakdown_reps: usize,
    pub warmup_secs: f64,
    /// (ring buffer KiB, offered socket events/s; None = as fast as possible) per throughput cell.
    pub throughput_cells: Vec<(u32, Option<u64>)>,
    /// Client/echo thread pairs of the synthetic load.
    pub pairs: usize,
    pub conn_levels: Vec<usize>,
}

impl Plan {
    fn new(smoke: bool) -> Plan {
        if smoke {
            return Plan {
                smoke,
                run_secs: 1.0,
                load_secs: 1.0,
                reps: 1,
                breakdown_reps: 1,
                warmup_secs: 0.0,
                throughput_cells: vec![(16, None), (4096, None)],
                pairs: 2,
                conn_levels: vec![1_000],
            };
        }
        let mut cells = Vec::new();
        for kib in [16, 256, 4096] {
            for rate in [Some(50_000), Some(200_000), None] {
                cells.push((kib, rate));
            }
        }
        let plan = Plan {
            smoke,
            run_secs: 5.0,
            load_secs: 3.0,
            // Runs drift within a repetition (a run late in one is slower: 7301 → 6549 req/s
            // for the same untraced stack over one breakdown repetition). The order rotates per
            // repetition, so these counts are multiples of the 3 modes of phase 1 and of the 7
            // variants of phase 1b: every mode and variant sits in every position equally often.
            reps: 6,
            breakdown_reps: 7,
            warmup_secs: 2.0,
            throughput_cells: cells,
            pairs: 2,
            conn_levels: vec![1_000, 10_000, 100_000],
        };
        assert!(
            plan.reps.is_multiple_of(overhead::MODES.len()) && plan.breakdown_reps.is_multiple_of(breakdown::VARIANTS.len()),
            "repetitions must balance the rotation of modes and variants"
        );
        plan
    }
}

/// The four phases, for `--only`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    Overhead,
    Breakdown,
    Throughput,
    Kcost,
    Memory,
}

/// What every phase needs.
pub struct Ctx {
    pub tracer: PathBuf,
    pub started: Instant,
}

impl Ctx {
    /// A progress line on stderr, stamped with the time since the bench started.
    pub fn progress(&self, msg: impl AsRef<str>) {
        eprintln!("bench [{:>5.1}s] {}", self.started.elapsed().as_secs_f64(), msg.as_ref());
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Called between runs: Ctrl-C unwinds through the guards, which stop every child.
pub fn check_interrupt() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted: stopping everything the bench started");
    }
    Ok(())
}

pub fn sleep(secs: f64) {
    std::thread::sleep(Duration::from_secs_f64(secs));
}

pub fn run(smoke: bool, only: &[Phase]) -> Result<()> {
    let runs = |p: Phase| only.is_empty() || only.contains(&p);
    // SAFETY: the handler only stores to an atomic.
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };
    let ctx = Ctx { tracer: tracer_e2e::repo_root().join("target/release/tracer"), started: Instant::now() };
    ctx.progress("building the tracer (release)…");
    if !Command::new(env!("CARGO")).args(["build", "--release", "-p", "tracer"]).status()?.success() {
        bail!("building the tracer failed");
    }
    let plan = Plan::new(smoke);
    let mut r = report::Report::new(&plan);
    // The revision the tracer was just built from (the tree may move on while the bench runs).
    r.revision = git(&["describe", "--always", "--dirty"]);
    let quiet_check = |r: &mut report::Report| {
        let other = tools::foreign_tracepoint_progs();
        if !other.is_empty() {
            ctx.progress(format!(
                "warning: {} other tracepoint programs are loaded (another tracer or test is running): numbers will be skewed",
                other.len()
            ));
            r.foreign_progs.extend(other);
        }
    };
    quiet_check(&mut r);
    r.loadavg.push(loadavg());
    let foreign_cpu = tools::foreign_cpu_secs();

    if runs(Phase::Overhead) {
        ctx.progress("phase 1/4: request overhead (wrk → nginx → gunicorn; untraced, tracer, bpftrace interleaved)");
        r.overhead = overhead::run(&ctx, &plan)?;
    }
    if runs(Phase::Breakdown) {
        ctx.progress("phase 1b/4: where the overhead comes from (the tracer without one hook family at a time)");
        r.breakdown = breakdown::run(&ctx, &plan)?;
    }
    if runs(Phase::Throughput) {
        ctx.progress("phase 2/4: event throughput (synthetic loopback ping-pong)");
        r.throughput = events::run(&ctx, &plan)?;
    }
    if runs(Phase::Kcost) {
        ctx.progress("phase 3/4: kernel time per program (kernel.bpf_stats_enabled=1)");
        r.kcost = kcost::run(&ctx, &plan)?;
    }
    if runs(Phase::Memory) {
        ctx.progress("phase 4/4: memory at 1 k … 100 k connections");
        r.memory = memory::run(&ctx, &plan)?;
    }
    r.partial = !only.is_empty();

    quiet_check(&mut r);
    r.loadavg.push(loadavg());
    r.foreign_cpu_secs = tools::foreign_cpu_secs() - foreign_cpu;
    r.elapsed = ctx.started.elapsed();
    let md = r.markdown();
    println!("{md}");
    let path = if r.partial {
        tracer_e2e::repo_root().join("target/BENCHMARKS-partial.md")
    } else if smoke {
        tracer_e2e::repo_root().join("target/BENCHMARKS-smoke.md")
    } else {
        tracer_e2e::repo_root().join("BENCHMARKS.md")
    };
    std::fs::write(&path, &md)?;
    ctx.progress(format!("done in {:.0} s; wrote {}", r.elapsed.as_secs_f64(), path.display()));
    Ok(())
}

fn git(args: &[&str]) -> String {
    Command::new("git")
        .arg("-C")
        .arg(tracer_e2e::repo_root())
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The 1-minute load average: a busy machine (someone compiling) skews every number.
fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg").ok().and_then(|l| l.split_whitespace().next()?.parse().ok()).unwrap_or(f64::NAN)
}

/// Median of a non-empty slice (NaN when empty).
pub fn median(v: &[f64]) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}
