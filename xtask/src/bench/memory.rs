//! Phase 4: memory against concurrent connections. Helper processes named `bench-conns`
//! (tests/apps/hold_connections.py) connect() N unix connections, carry each through one
//! request/response (so the kernel follows every one) and hold them; a fresh tracer per level is
//! read while they are open: its RSS (VmRSS, VmHWM) and the memory of its BPF maps (`bpftool map
//! show` bytes_memlock, for the map ids its fds hold). Closing them from the traced helpers then
//! completes one request per connection the kernel still followed, which shows how many of N its
//! per-connection maps kept.
//!
//! Why several helpers: both ends of a connection live in a helper, and without
//! CAP_SYS_RESOURCE the RLIMIT_NOFILE hard limit (20,000 on the VMs this runs on) caps one
//! process at half that many connections.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tracer_e2e::{repo_root, Proc, Scratch};

use super::tools::{self, TracerRun, TracerStats};
use super::{check_interrupt, sleep, Ctx, Plan};

/// The helpers' process name (what the tracer is told to follow).
pub const CONNS_COMM: &str = "bench-conns";

pub struct Level {
    pub conns: usize,
    /// Set when the level could not be reached (with why); the numbers are then absent.
    pub error: Option<String>,
    pub helpers: usize,
    pub rss_idle_kib: u64,
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub map_bytes: u64,
    /// The largest maps (name, bytes).
    pub top_maps: Vec<(String, u64)>,
    pub stats: TracerStats,
    /// CPU seconds the tracer used from the first connect until it exited.
    pub tracer_cpu_secs: f64,
}

/// One hold_connections.py process and its output lines.
struct Helper {
    proc: Proc,
    lines: mpsc::Receiver<String>,
}

impl Helper {
    fn start(sock: &std::path::Path, n: usize) -> Result<Helper> {
        let mut cmd = Command::new("python3");
        cmd.arg(repo_root().join("tests/apps/hold_connections.py")).arg(sock).arg(n.to_string());
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null());
        let mut proc = Proc::spawn("hold_connections", &mut cmd)?;
        let out = proc.child.stdout.take().context("helper stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(|l| l.ok()) {
                let _ = tx.send(l);
            }
        });
        Ok(Helper { proc, lines })
    }

    /// Wait for a line starting with `word`; any other line is the helper's error.
    fn expect(&self, word: &str, timeout: Duration) -> Result<()> {
        match self.lines.recv_timeout(timeout) {
            Ok(l) if l.starts_with(word) => Ok(()),
            Ok(l) => bail!("{l}"),
            Err(_) => bail!("no '{word}' from the helper within {timeout:?}"),
        }
    }
}

/// Connections one helper can hold: both ends under its RLIMIT_NOFILE hard limit.
fn per_helper() -> usize {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit fills a valid struct.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
    ((r.rlim_max.min(1 << 20) as usize).saturating_sub(100) / 2).clamp(100, 50_000)
}

pub fn run(ctx: &Ctx, plan: &Plan) -> Result<Vec<Level>> {
    let scratch = Scratch::new("bench-memory");
    let mut levels = Vec::new();
    for &n in &plan.conn_levels {
        check_interrupt()?;
        let t = TracerRun::start(&ctx.tracer, &["--comm", CONNS_COMM], scratch.path("tracer.jsonl"))?;
        sleep(0.3);
        let (rss_idle_kib, _) = tools::rss_kib(t.pid());
        let per = per_helper();
        let helpers = n.div_ceil(per);
        let mut level = Level {
            conns: n,
            error: None,
            helpers,
            rss_idle_kib,
            rss_kib: 0,
            hwm_kib: 0,
            map_bytes: 0,
            top_maps: Vec::new(),
            stats: TracerStats::default(),
            tracer_cpu_secs: 0.0,
        };
        let cpu = tools::cpu_secs(t.pid());
        let started = std::time::Instant::now();
        match open(&scratch, n, per) {
            Ok(mut held) => {
                let opened = started.elapsed().as_secs_f64();
                // Let the tracer drain the connect records before reading its memory.
                sleep(1.0);
                (level.rss_kib, level.hwm_kib) = tools::rss_kib(t.pid());
                let (_, maps) = tools::bpf_ids(t.pid());
                level.top_maps = tools::map_memory(&maps)?;
                level.map_bytes = level.top_maps.iter().map(|m| m.1).sum();
                for h in &mut held {
                    h.proc.child.stdin.as_mut().context("helper stdin")?.write_all(b"close\n")?;
                }
                for h in &held {
                    h.expect("closed", Duration::from_secs(60))?;
                }
                sleep(1.0);
                level.tracer_cpu_secs = tools::cpu_secs(t.pid()) - cpu;
                level.stats = t.stop()?;
                ctx.progress(format!(
                    "  {n} connections ({helpers} helper processes, opened in {opened:.1} s): tracer RSS {} KiB (idle {} KiB), BPF maps {} KiB, {} followed to the close, {} lost{}, tracer CPU {:.1} s",
                    level.rss_kib,
                    rss_idle_kib,
                    level.map_bytes / 1024,
                    level.stats.requests,
                    level.stats.lost,
                    if level.stats.lost > 0 { format!(" ({})", level.stats.lost_detail) } else { String::new() },
                    level.tracer_cpu_secs
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

/// Start enough helpers for `n` connections (in parallel) and wait until all hold theirs.
fn open(scratch: &Scratch, n: usize, per: usize) -> Result<Vec<Helper>> {
    let mut helpers = Vec::new();
    let mut left = n;
    while left > 0 {
        let k = left.min(per);
        helpers.push(Helper::start(&scratch.path(&format!("conns-{}.sock", helpers.len())), k)?);
        left -= k;
    }
    for (i, h) in helpers.iter().enumerate() {
        h.expect("ready", Duration::from_secs(120)).with_context(|| format!("helper {i} of {}", helpers.len()))?;
    }
    Ok(helpers)
}
