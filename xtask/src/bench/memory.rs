//! Phase 4: memory against concurrent connections. A traced thread connect()s N unix
//! connections and carries each through one request/response (so the kernel follows every one),
//! then holds them; a fresh tracer per level, read while they are open: its RSS (VmRSS, VmHWM)
//! and the memory of its BPF maps (`bpftool map show` bytes_memlock, for the map ids its fds
//! hold). Closing them from the traced thread then emits one record per connection the kernel
//! still followed, which shows how many of N its per-connection maps kept.

use anyhow::Result;
use tracer_e2e::Scratch;

use super::load::{self, CONNS_COMM};
use super::tools::{self, TracerRun, TracerStats};
use super::{check_interrupt, sleep, Ctx, Plan};

pub struct Level {
    pub conns: usize,
    /// Set when the level could not be reached (with why); the numbers are then absent.
    pub error: Option<String>,
    pub rss_idle_kib: u64,
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub map_bytes: u64,
    /// The largest maps (name, bytes).
    pub top_maps: Vec<(String, u64)>,
    pub stats: TracerStats,
}

pub fn run(ctx: &Ctx, plan: &Plan) -> Result<Vec<Level>> {
    let scratch = Scratch::new("bench-memory");
    let mut levels = Vec::new();
    for &n in &plan.conn_levels {
        check_interrupt()?;
        let t = TracerRun::start(&ctx.tracer, &["--comm", CONNS_COMM], scratch.path("tracer.jsonl"))?;
        sleep(0.3);
        let (rss_idle_kib, _) = tools::rss_kib(t.pid());
        let started = std::time::Instant::now();
        let held = load::hold_connections(&scratch.path("conns.sock"), n, std::time::Duration::from_secs(60));
        let mut level = Level {
            conns: n,
            error: None,
            rss_idle_kib,
            rss_kib: 0,
            hwm_kib: 0,
            map_bytes: 0,
            top_maps: Vec::new(),
            stats: TracerStats::default(),
        };
        match held {
            Ok(held) => {
                let opened = started.elapsed().as_secs_f64();
                // Let the tracer drain the connect records before reading its memory.
                sleep(1.0);
                (level.rss_kib, level.hwm_kib) = tools::rss_kib(t.pid());
                let (_, maps) = tools::bpf_ids(t.pid());
                level.top_maps = tools::map_memory(&maps)?;
                level.map_bytes = level.top_maps.iter().map(|m| m.1).sum();
                held.close_traced()?;
                sleep(1.0);
                level.stats = t.stop()?;
                ctx.progress(format!(
                    "  {n} connections (opened in {opened:.1} s): tracer RSS {} KiB (idle {} KiB), BPF maps {} KiB, {} events, {} lost",
                    level.rss_kib,
                    rss_idle_kib,
                    level.map_bytes / 1024,
                    level.stats.events,
                    level.stats.lost
                ));
            }
            Err(e) => {
                let _ = t.stop();
                ctx.progress(format!("  {n} connections: not reached: {e:#}"));
                level.error = Some(format!("{e:#}"));
            }
        }
        levels.push(level);
    }
    Ok(levels)
}
