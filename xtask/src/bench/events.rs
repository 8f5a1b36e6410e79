//! Phase 2: how many events the tracer takes before it loses any. A synthetic ping-pong over
//! loopback unix sockets (load.rs) traced by thread name, at a few offered rates and ring-buffer
//! sizes; the first cell runs untraced for the machine's ceiling.
//!
//! Two rates matter: socket events (every send/recv of the traced client runs the kernel
//! programs through the whole request state machine) and ring-buffer records (only state changes
//! reach userspace: one per recv→send turn, i.e. one per two socket events).

use anyhow::Result;
use tracer_e2e::Scratch;

use super::load::{self, PingPong, CLIENT_COMM};
use super::tools::{self, TracerRun, TracerStats};
use super::{check_interrupt, Ctx, Plan};

pub struct Cell {
    /// None: untraced baseline.
    pub ringbuf_kib: Option<u32>,
    /// Offered socket events/s; None = as fast as the machine goes.
    pub offered: Option<u64>,
    pub load: PingPong,
    pub tracer: Option<TracerStats>,
    /// IRQ-work interrupts during the load (ring-buffer reader wake-ups, machine-wide).
    pub irq_work: u64,
    /// CPU the tracer process used during the load, in CPUs (1.0 = one whole vCPU).
    pub tracer_cpus: f64,
}

pub fn run(ctx: &Ctx, plan: &Plan) -> Result<Vec<Cell>> {
    let scratch = Scratch::new("bench-events");
    let sock = scratch.path("pingpong.sock");
    let secs = std::time::Duration::from_secs_f64(plan.load_secs);
    let mut cells = Vec::new();
    let todo = std::iter::once((None, None)).chain(plan.throughput_cells.iter().map(|&(k, r)| (Some(k), r)));
    for (kib, offered) in todo {
        check_interrupt()?;
        let tracer = match kib {
            Some(k) => {
                let k = k.to_string();
                Some(TracerRun::start(&ctx.tracer, &["--comm", CLIENT_COMM, "--ringbuf-kib", &k], scratch.path("tracer.jsonl"))?)
            }
            None => None,
        };
        let iwi = tools::irq_work_interrupts();
        let cpu = tracer.as_ref().map(|t| tools::cpu_secs(t.pid()));
        // Two socket events (a recv and a send) per turn.
        let load = load::ping_pong(&sock, plan.pairs, secs, offered.map(|r| r / 2));
        let irq_work = tools::irq_work_interrupts().saturating_sub(iwi);
        let tracer_cpu = match (&tracer, cpu) {
            (Some(t), Some(before)) => tools::cpu_secs(t.pid()) - before,
            _ => 0.0,
        };
        let stats = tracer.map(TracerRun::stop).transpose()?;
        let load = load?;
        let secs = load.elapsed.as_secs_f64();
        let tracer_cpus = tracer_cpu / secs;
        let detail = match &stats {
            Some(s) => format!(
                "{:.0} records/s delivered, {} lost, {:.2} IRQ-work interrupts per record, tracer at {:.0} % of a CPU",
                s.events as f64 / secs,
                s.lost,
                irq_work as f64 / s.events.max(1) as f64,
                tracer_cpus * 100.0
            ),
            None => "untraced".into(),
        };
        ctx.progress(format!(
            "  ring buffer {}, offered {}: {:.0} socket events/s, {detail}",
            kib.map(|k| format!("{k} KiB")).unwrap_or_else(|| "-".into()),
            offered.map(|r| format!("{r}/s")).unwrap_or_else(|| "max".into()),
            load.socket_calls as f64 / secs
        ));
        cells.push(Cell { ringbuf_kib: kib, offered, load, tracer: stats, irq_work, tracer_cpus });
    }
    Ok(cells)
}
