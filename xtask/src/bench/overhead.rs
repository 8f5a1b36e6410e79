//! Phase 1: what tracing costs a real proxy. wrk → nginx → gunicorn on loopback, for each
//! upstream (unix socket, TCP) × upstream keep-alive (off, on), each repetition running untraced,
//! with the tracer, and with the bpftrace peer back to back (in an order that rotates per
//! repetition), so drift hits all three alike.
//!
//! Upstream keep-alive "on" uses `keepalive_timeout 1s` and a pause between runs: pooled
//! connections close before the next run and are reopened under its tracer (the tracer only
//! follows connections it saw being connect()ed, so inherited ones would cost it nothing).

use std::path::PathBuf;

use anyhow::Result;
use tracer_e2e::{free_port, Nginx, NginxOpts, Proc, Scratch};

use super::tools::{self, Bpftrace, TracerRun, TracerStats, Wrk};
use super::{check_interrupt, sleep, Ctx, Plan};

pub const WRK_THREADS: u32 = 2;
pub const WRK_CONNS: u32 = 32;
const GUNICORN_WORKERS: u32 = 4;
/// Longer than nginx's upstream keepalive_timeout (1 s): the pool is empty when a run starts.
const PAUSE_SECS: f64 = 1.5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Untraced,
    Tracer,
    Bpftrace,
}

pub const MODES: [Mode; 3] = [Mode::Untraced, Mode::Tracer, Mode::Bpftrace];

impl Mode {
    pub fn label(self) -> &'static str {
        match self {
            Mode::Untraced => "untraced",
            Mode::Tracer => "tracer",
            Mode::Bpftrace => "bpftrace",
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub unix: bool,
    pub keepalive: bool,
}

impl Config {
    pub fn label(&self) -> String {
        format!("{} upstream, keep-alive {}", if self.unix { "unix" } else { "TCP" }, if self.keepalive { "on" } else { "off" })
    }
}

pub const CONFIGS: [Config; 4] = [
    Config { unix: true, keepalive: false },
    Config { unix: true, keepalive: true },
    Config { unix: false, keepalive: false },
    Config { unix: false, keepalive: true },
];

pub struct Run {
    pub wrk: Wrk,
    pub tracer: Option<TracerStats>,
    /// CPU seconds the tracer (or bpftrace) process used while wrk ran.
    pub tracer_cpu_secs: f64,
}

pub struct ConfigResult {
    pub config: Config,
    /// One entry per repetition, in `MODES` order.
    pub reps: Vec<Vec<Run>>,
    /// Per repetition: why it was disturbed, if it was kept anyway (retries ran out).
    pub disturbed: Vec<Option<String>>,
    /// Repetitions thrown away because something else ran on the machine.
    pub retried: usize,
}

/// A repetition is redone when other processes used more CPU than this during it (about 5 % of
/// one vCPU over its ~20 s), or loaded tracepoint programs (another tracer taxes every run).
const DISTURBED_CPU_SECS: f64 = 1.0;
const MAX_RETRIES: usize = 2;

/// gunicorn + nginx for one configuration (dropped in reverse order: nginx, gunicorn, dir).
pub struct Stack {
    pub nginx: Nginx,
    _gunicorn: Proc,
    pub scratch: Scratch,
}

impl Stack {
    pub fn start(c: Config) -> Result<Stack> {
        let scratch = Scratch::new(&format!("bench-{}-{}", if c.unix { "unix" } else { "tcp" }, c.keepalive));
        let (bind, server) = if c.unix {
            let p = scratch.path("gunicorn.sock");
            (format!("unix:{}", p.display()), format!("unix:{}", p.display()))
        } else {
            let a = format!("127.0.0.1:{}", free_port());
            (a.clone(), a)
        };
        let gunicorn = tools::gunicorn(&bind, GUNICORN_WORKERS, c.keepalive)?;
        let pool = if c.keepalive { "keepalive 16; keepalive_timeout 1s;" } else { "" };
        let http_extra = format!("upstream bench_up {{ server {server}; {pool} }}");
        let location_extra = if c.keepalive { "proxy_http_version 1.1; proxy_set_header Connection \"\";" } else { "" };
        let nginx = Nginx::start(&scratch, &NginxOpts { upstream: "bench_up", location_extra, http_extra: &http_extra, ..Default::default() })?;
        Ok(Stack { nginx, _gunicorn: gunicorn, scratch })
    }
}

pub fn run(ctx: &Ctx, plan: &Plan) -> Result<Vec<ConfigResult>> {
    let mut total = CONFIGS.len() * plan.reps * MODES.len();
    let mut done = 0;
    let mut results = Vec::new();
    for config in CONFIGS {
        check_interrupt()?;
        ctx.progress(format!("  {}: starting gunicorn ({GUNICORN_WORKERS} workers) and nginx", config.label()));
        let stack = Stack::start(config)?;
        let script: PathBuf = stack.scratch.path("peer.bt");
        std::fs::write(&script, tools::peer_script())?;
        let url = stack.nginx.url();
        if plan.warmup_secs > 0.0 {
            tools::wrk(&url, plan.warmup_secs, WRK_THREADS, WRK_CONNS)?;
            sleep(PAUSE_SECS);
        }
        let (mut reps, mut disturbed, mut retried) = (Vec::new(), Vec::new(), 0);
        while reps.len() < plan.reps {
            let rep = reps.len();
            let cpu_before = tools::foreign_cpu_secs();
            let mut foreign_progs = 0;
            // Rotate the order per repetition (untraced first, then tracer first, then bpftrace
            // first …) so neither mode always runs right after a pause or after another mode.
            let mut runs: Vec<Option<Run>> = (0..MODES.len()).map(|_| None).collect();
            for k in 0..MODES.len() {
                let slot = (k + rep) % MODES.len();
                let mode = MODES[slot];
                check_interrupt()?;
                foreign_progs += tools::foreign_tracepoint_progs().len();
                let run = one_run(ctx, plan, &stack, &script, mode)?;
                done += 1;
                let extra = run
                    .tracer
                    .as_ref()
                    .map(|t| format!(" (tracer: {} requests followed, {} events, {} lost)", t.requests, t.events, t.lost))
                    .unwrap_or_default();
                let cpu = if mode == Mode::Untraced { String::new() } else { format!(", {} CPU {:.2} s", mode.label(), run.tracer_cpu_secs) };
                ctx.progress(format!(
                    "  [{done}/{total}] {}, rep {}, {}: {:.0} req/s ({} requests), p99 {:.2} ms, {} errors{cpu}{extra}",
                    config.label(),
                    rep + 1,
                    mode.label(),
                    run.wrk.rps,
                    run.wrk.requests,
                    run.wrk.p99_ms,
                    run.wrk.errors
                ));
                runs[slot] = Some(run);
                if config.keepalive {
                    sleep(PAUSE_SECS);
                }
            }
            foreign_progs += tools::foreign_tracepoint_progs().len();
            let foreign_cpu = tools::foreign_cpu_secs() - cpu_before;
            let why = (foreign_progs > 0 || foreign_cpu > DISTURBED_CPU_SECS)
                .then(|| format!("other processes used {foreign_cpu:.1} CPU-s, {foreign_progs} foreign tracepoint programs seen"));
            match why {
                Some(why) if retried < MAX_RETRIES => {
                    retried += 1;
                    total += MODES.len();
                    ctx.progress(format!("  repetition {} disturbed ({why}): running it again", rep + 1));
                }
                why => {
                    reps.push(runs.into_iter().map(|r| r.expect("every mode ran")).collect());
                    disturbed.push(why);
                }
            }
        }
        results.push(ConfigResult { config, reps, disturbed, retried });
    }
    Ok(results)
}

fn one_run(ctx: &Ctx, plan: &Plan, stack: &Stack, script: &std::path::Path, mode: Mode) -> Result<Run> {
    let url = stack.nginx.url();
    let secs = plan.run_secs;
    Ok(match mode {
        Mode::Untraced => Run { wrk: tools::wrk(&url, secs, WRK_THREADS, WRK_CONNS)?, tracer: None, tracer_cpu_secs: 0.0 },
        Mode::Tracer => {
            let t = TracerRun::start(&ctx.tracer, &["--comm", "nginx"], stack.scratch.path("tracer.jsonl"))?;
            let cpu = tools::cpu_secs(t.pid());
            let wrk = tools::wrk(&url, secs, WRK_THREADS, WRK_CONNS);
            let tracer_cpu_secs = tools::cpu_secs(t.pid()) - cpu;
            let stats = t.stop()?;
            Run { wrk: wrk?, tracer: Some(stats), tracer_cpu_secs }
        }
        Mode::Bpftrace => {
            let b = Bpftrace::start(script)?;
            let cpu = tools::cpu_secs(b.pid());
            let wrk = tools::wrk(&url, secs, WRK_THREADS, WRK_CONNS);
            let tracer_cpu_secs = tools::cpu_secs(b.pid()) - cpu;
            b.stop();
            Run { wrk: wrk?, tracer: None, tracer_cpu_secs }
        }
    })
}
