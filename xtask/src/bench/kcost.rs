//! Phase 3: kernel time per run of each program, from the kernel's own accounting
//! (`kernel.bpf_stats_enabled=1`, `bpftool prog show`: run_time_ns / run_cnt), under three
//! workloads: nginx over TCP without keep-alive (connect, TCP state, close paths), nginx over a
//! unix socket with keep-alive (send/recv paths), and the synthetic ping-pong (every call
//! followed). Timing is only on during this phase: it costs two clock reads per run.
//!
//! A program runs for every process that hits its tracepoint and returns early for the ones the
//! filter rejects, so an average mixes full runs with early exits, as it does in production.

use anyhow::Result;
use tracer_e2e::Scratch;

use super::load::{self, CLIENT_COMM};
use super::overhead::{Config, Stack, WRK_CONNS, WRK_THREADS};
use super::tools::{self, BpfStats, TracerRun};
use super::{check_interrupt, Ctx, Plan};

pub struct Workload {
    pub name: String,
    /// (program, runs, total ns).
    pub progs: Vec<(String, u64, u64)>,
    pub secs: f64,
    /// IRQ-work interrupts (ring-buffer wake-ups) per second during the workload.
    pub irq_work_per_sec: f64,
    /// nginx workloads: requests wrk completed, and the machine's busy CPU seconds meanwhile (to
    /// put all programs' time per request beside what a request costs the machine).
    pub requests: Option<(u64, f64)>,
}

impl Workload {
    /// (all programs' ns, the machine's busy ns) per proxied request; None without wrk requests.
    pub fn per_request(&self) -> Option<(f64, f64)> {
        let (requests, busy_secs) = self.requests?;
        let total_ns: u64 = self.progs.iter().map(|p| p.2).sum();
        (requests > 0).then(|| (total_ns as f64 / requests as f64, busy_secs * 1e9 / requests as f64))
    }
}

pub fn run(ctx: &Ctx, plan: &Plan) -> Result<Vec<Workload>> {
    let _stats = BpfStats::enable()?;
    let mut out = Vec::new();
    for config in [Config { unix: false, keepalive: false }, Config { unix: true, keepalive: false }, Config { unix: true, keepalive: true }] {
        check_interrupt()?;
        let stack = Stack::start(config)?;
        let t = TracerRun::start(&ctx.tracer, &["--comm", "nginx"], stack.scratch.path("tracer.jsonl"))?;
        let iwi = tools::irq_work_interrupts();
        let busy = tools::machine_busy_secs();
        let w = tools::wrk(&stack.nginx.url(), plan.run_secs, WRK_THREADS, WRK_CONNS)?;
        let busy = tools::machine_busy_secs() - busy;
        let mut workload = measure(ctx, format!("nginx, {}", config.label()), t, plan.run_secs, iwi)?;
        workload.requests = Some((w.requests, busy));
        out.push(workload);
    }
    check_interrupt()?;
    let scratch = Scratch::new("bench-kcost");
    let t = TracerRun::start(&ctx.tracer, &["--comm", CLIENT_COMM], scratch.path("tracer.jsonl"))?;
    let secs = std::time::Duration::from_secs_f64(plan.load_secs);
    let iwi = tools::irq_work_interrupts();
    let load = load::ping_pong(&scratch.path("pingpong.sock"), plan.pairs, secs, None);
    out.push(measure(ctx, "synthetic ping-pong".into(), t, secs.as_secs_f64(), iwi)?);
    load?;
    Ok(out)
}

/// Read the programs' counters while the tracer still holds them, then stop it.
fn measure(ctx: &Ctx, name: String, t: TracerRun, secs: f64, iwi_before: u64) -> Result<Workload> {
    let irq_work_per_sec = tools::irq_work_interrupts().saturating_sub(iwi_before) as f64 / secs;
    let (ids, _) = tools::bpf_ids(t.pid());
    let progs = tools::prog_stats(&ids);
    t.stop()?;
    let mut progs = progs?;
    progs.sort_by_key(|p| std::cmp::Reverse(p.1));
    let hot: Vec<String> = progs.iter().take(4).map(|(n, runs, ns)| format!("{n} {:.0} ns × {runs}", *ns as f64 / (*runs).max(1) as f64)).collect();
    ctx.progress(format!("  {name}: {}; {irq_work_per_sec:.0} IRQ-work interrupts/s", hot.join(", ")));
    Ok(Workload { name, progs, secs, irq_work_per_sec, requests: None })
}
