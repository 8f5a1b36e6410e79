//! Phase 1: what tracing costs a real proxy. wrk → nginx → gunicorn on loopback, for each
//! upstream (unix socket, TCP) × upstream keep-alive (off, on), each repetition running untraced,
//! with the tracer, and with the bpftrace peer back to back, so drift hits all three alike.
//!
//! Upstream keep-alive "on" uses `keepalive_timeout 1s` and a pause between runs: pooled
//! connections close before the next run and are reopened under its tracer (the tracer only
//! follows connections it saw being connect()ed, so inherited ones would cost it nothing).

use std::path::PathBuf;

use anyhow::Result;
use tracer_e2e::{free_port, Nginx, NginxOpts, Proc, Scratch};

use super::tools::{self, Bpftrace, TracerRun, TracerStats, Wrk};
use super::{check_interrupt, sleep, Ctx, Plan};

const WRK_THREADS: u32 = 2;
const WRK_CONNS: u32 = 32;
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
}

pub struct ConfigResult {
    pub config: Config,
    /// One entry per repetition, in `MODES` order.
    pub reps: Vec<Vec<Run>>,
}

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
    let total = CONFIGS.len() * plan.reps * MODES.len();
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
        let mut reps = Vec::new();
        for rep in 0..plan.reps {
            let mut runs = Vec::new();
            for mode in MODES {
                check_interrupt()?;
                let run = one_run(ctx, plan, &stack, &script, mode)?;
                done += 1;
                let extra = run.tracer.as_ref().map(|t| format!(" (tracer: {} events, {} lost)", t.events, t.lost)).unwrap_or_default();
                ctx.progress(format!(
                    "  [{done}/{total}] {}, rep {}, {}: {:.0} req/s, p99 {:.2} ms, {} errors{extra}",
                    config.label(),
                    rep + 1,
                    mode.label(),
                    run.wrk.rps,
                    run.wrk.p99_ms,
                    run.wrk.errors
                ));
                runs.push(run);
                if config.keepalive {
                    sleep(PAUSE_SECS);
                }
            }
            reps.push(runs);
        }
        results.push(ConfigResult { config, reps });
    }
    Ok(results)
}

fn one_run(ctx: &Ctx, plan: &Plan, stack: &Stack, script: &std::path::Path, mode: Mode) -> Result<Run> {
    let url = stack.nginx.url();
    let secs = plan.run_secs;
    Ok(match mode {
        Mode::Untraced => Run { wrk: tools::wrk(&url, secs, WRK_THREADS, WRK_CONNS)?, tracer: None },
        Mode::Tracer => {
            let t = TracerRun::start(&ctx.tracer, &["--comm", "nginx"], stack.scratch.path("tracer.jsonl"))?;
            let wrk = tools::wrk(&url, secs, WRK_THREADS, WRK_CONNS);
            let stats = t.stop()?;
            Run { wrk: wrk?, tracer: Some(stats) }
        }
        Mode::Bpftrace => {
            let b = Bpftrace::start(script)?;
            let wrk = tools::wrk(&url, secs, WRK_THREADS, WRK_CONNS);
            b.stop();
            Run { wrk: wrk?, tracer: None }
        }
    })
}
