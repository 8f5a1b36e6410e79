//! `tracer watch`: failed connect()s as they happen and a running summary per upstream target.

use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::time::Instant;

use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::WatchArgs;
use crate::collector::ConnectStats;
use crate::events::{Connect, Event};
use crate::listeners;
use crate::load::{self, Filter, CONNECT_PROBES};
use crate::output::{jsonl::JsonLines, terminal::Terminal, ConnectFailed, Output, Stats, TargetSummary};
use crate::source::Source;
use crate::timebase::Timebase;

/// Build the in-kernel filter from the flags: `--pid` covers the process and its children now.
fn filter(args: &WatchArgs) -> anyhow::Result<Filter> {
    let mut pids = Vec::new();
    for &pid in &args.pid {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            anyhow::bail!("--pid {pid}: no such process");
        }
        pids.push(pid);
        pids.extend(listeners::children(pid));
    }
    let comm = (args.comm != "*").then(|| args.comm.clone());
    let cgroup_id = match &args.cgroup {
        Some(p) => Some(
            std::fs::metadata(p)
                .with_context(|| format!("--cgroup {}: cannot stat the cgroup directory", p.display()))?
                .ino(),
        ),
        None => None,
    };
    Ok(Filter { pids, comm, cgroup_id })
}

fn describe(f: &Filter) -> String {
    let mut parts = Vec::new();
    if let Some(c) = &f.comm {
        parts.push(format!("comm={c}"));
    }
    if !f.pids.is_empty() {
        parts.push(format!("pids={:?}", f.pids));
    }
    if let Some(c) = f.cgroup_id {
        parts.push(format!("cgroup={c}"));
    }
    if parts.is_empty() {
        "every process".into()
    } else {
        parts.join(" ")
    }
}

struct Watch {
    stats: ConnectStats,
    tb: Timebase,
    somaxconn: Option<u32>,
    out: Box<dyn Output>,
}

impl Watch {
    fn handle(&mut self, e: Event) -> io::Result<()> {
        match e {
            Event::Connect(raw) => {
                let c = Connect::from_event(&raw);
                if self.stats.record(&c) {
                    // Sample the listener while it is failing: its queue is what explains EAGAIN.
                    let l = listeners::listener_for(&c.target).unwrap_or_else(|e| {
                        log::warn!("sock_diag for {}: {e}", c.target);
                        None
                    });
                    self.stats.record_sample(&c.target, Timebase::monotonic_now_ns(), l, listeners::owner_of, self.somaxconn);
                }
                if c.failed() {
                    self.out.connect_failed(&ConnectFailed::new(&c, &self.tb))?;
                }
            }
            Event::Listen(l) => {
                if let Some(inode) = listeners::socket_inode(l.hdr.pid, l.fd) {
                    self.stats.record_listen(inode, l.backlog);
                }
            }
        }
        Ok(())
    }

    fn summary(&mut self, source: &Source, probes: &[load::ProbeStatus], is_final: bool) -> io::Result<()> {
        let targets: Vec<TargetSummary> = if is_final {
            self.stats.targets().map(|t| TargetSummary::new(t, &self.tb, true)).collect()
        } else {
            self.stats.take_dirty().iter().map(|t| TargetSummary::new(t, &self.tb, false)).collect()
        };
        let stats = Stats {
            kind: "stats",
            is_final,
            events: source.events,
            lost: source.lost(),
            untracked_connects: self.stats.untracked,
            probes: probes.to_vec(),
        };
        self.out.summary(&targets, &stats)
    }
}

pub async fn run(args: WatchArgs) -> anyhow::Result<()> {
    load::preflight()?;
    let filter = filter(&args)?;
    let mut loaded = load::load(&filter, CONNECT_PROBES, args.ringbuf_kib * 1024)?;
    let mut source = Source::new(&mut loaded.ebpf)?;
    let attached = loaded.probes.iter().filter(|p| p.attached).count();
    eprintln!(
        "tracer: watching connect() of {} ({attached}/{} probes attached in {} ms); Ctrl-C to stop",
        describe(&filter),
        loaded.probes.len(),
        loaded.attach_time.as_millis()
    );
    let out: Box<dyn Output> =
        if args.json { Box::new(JsonLines::new(io::stdout())) } else { Box::new(Terminal::new(io::stdout())) };
    let mut w = Watch { stats: ConnectStats::new(args.max_targets), tb: Timebase::now(), somaxconn: listeners::somaxconn(), out };

    let deadline = args.duration.map(|d| tokio::time::Instant::from_std(Instant::now() + d));
    let mut tick = tokio::time::interval(args.interval);
    tick.tick().await;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut batch = Vec::new();
    let mut lost_shown = 0;
    loop {
        tokio::select! {
            r = source.next_batch(|e| batch.push(e)) => r?,
            _ = tick.tick() => {
                w.summary(&source, &loaded.probes, false)?;
                if let Some(l) = loaded.logger.as_mut() {
                    l.flush();
                }
                let dropped = source.lost().total_dropped();
                if dropped > lost_shown {
                    eprintln!("tracer: {} events lost so far (see the final summary)", dropped);
                    lost_shown = dropped;
                }
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => break,
        }
        for e in batch.drain(..) {
            w.handle(e)?;
        }
    }
    source.drain(|e| batch.push(e));
    for e in batch.drain(..) {
        w.handle(e)?;
    }
    w.summary(&source, &loaded.probes, true)?;
    io::stdout().flush()?;
    Ok(())
}
