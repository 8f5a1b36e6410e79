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
use super::tools::{TracerRun, TracerStats};
use super::{check_interrupt, Ctx, Plan};

pub struct Cell {
    /// None: untraced baseline.
    pub ringbuf_kib: Option<u32>,
    /// Offered turns/s; None = as fast as the machine goes.
    pub offered: Option<u64>,
    pub load: PingPong,
    pub tracer: Option<TracerStats>,
}

pub fn run(ctx: &Ctx, plan: &Plan) -> Result<Vec<Cell>> {
    let scratch = Scratch::new("bench-events");
    let sock = scratch.path("pingpong.sock");
    let secs = std::time::Duration::from_secs_f64(plan.run_secs.max(1.0));
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
        let load = load::ping_pong(&sock, plan.pairs, secs, offered);
        let stats = tracer.map(TracerRun::stop).transpose()?;
        let load = load?;
        let secs = load.elapsed.as_secs_f64();
        let detail = match &stats {
            Some(s) => format!(
                "{:.0} records/s delivered, {} lost",
                s.events as f64 / secs,
                s.lost
            ),
            None => "untraced".into(),
        };
        ctx.progress(format!(
            "  ring buffer {}, offered {}: {:.0} socket events/s, {detail}",
            kib.map(|k| format!("{k} KiB")).unwrap_or_else(|| "-".into()),
            offered.map(|r| format!("{r} turns/s")).unwrap_or_else(|| "max".into()),
            load.socket_calls as f64 / secs
        ));
        cells.push(Cell { ringbuf_kib: kib, offered, load, tracer: stats });
    }
    Ok(cells)
}
