//! The live loop shared by `watch`, `diagnose` and `record`: load and attach, then feed ring
//! buffer batches to a `Session` until the duration ends or a signal arrives.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::{TraceArgs, WatchArgs};
use crate::host::env::Env;
use crate::host::listeners;
use crate::host::record::{Meta, Recorder};
use crate::host::timebase::Timebase;
use crate::kernel::load::{self, Filter, CONNECT_PROBES, REQUEST_PROBES, TCP_PROBES};
use crate::kernel::source::Source;
use crate::output::{jsonl::JsonLines, terminal::Terminal, Output};
use crate::state::session::Session;

/// Build the in-kernel filter from the flags: `--pid` covers the process and its children now.
pub fn filter(args: &TraceArgs) -> anyhow::Result<Filter> {
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
        Some(p) => Some(std::fs::metadata(p).with_context(|| format!("--cgroup {}: cannot stat the cgroup directory", p.display()))?.ino()),
        None => None,
    };
    Ok(Filter { pids, comm, cgroup_id })
}

pub fn describe(f: &Filter) -> String {
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

/// How often the ring buffer is drained without a wake-up from the kernel.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// What a live run is for.
pub struct LiveRun<'a> {
    pub trace: &'a TraceArgs,
    pub interval: Duration,
    pub out: Box<dyn Output>,
    pub all_connections: bool,
    /// Record to this file as well.
    pub record: Option<&'a std::path::Path>,
    pub nginx: Option<crate::nginx::Discovery>,
    /// Called once every probe is attached (e.g. to start following nginx's error log).
    pub on_ready: Box<dyn FnOnce() + 'a>,
    /// The daemon's extra work: after each batch, and on SIGHUP (None: SIGHUP is not handled).
    pub hooks: Option<&'a mut dyn LiveHooks>,
}

pub trait LiveHooks {
    /// Before the first event.
    fn start(&mut self, s: &mut Session);
    fn after_batch(&mut self, s: &mut Session) -> anyhow::Result<()>;
    fn reload(&mut self, s: &mut Session);
}

/// Attach, trace until the duration ends or SIGINT/SIGTERM, and return the finished session.
pub async fn run_live(mut run: LiveRun<'_>) -> anyhow::Result<Session> {
    load::preflight()?;
    let filter = filter(run.trace)?;
    let probes: Vec<_> = CONNECT_PROBES.iter().chain(TCP_PROBES).chain(REQUEST_PROBES).collect();
    let mut loaded = load::load(&filter, &probes, run.trace.ringbuf_kib * 1024, run.trace.map_entries)?;
    let mut source = Source::new(&mut loaded.ebpf)?;
    let attached = loaded.probes.iter().filter(|p| p.attached).count();
    let tb = Timebase::now();
    let recorder = match run.record {
        Some(path) => Some(Recorder::create(
            path,
            &Meta {
                tracer_version: env!("CARGO_PKG_VERSION").into(),
                timebase_offset_ns: tb.offset_ns() as i64,
                filter: describe(&filter),
                probes: loaded.probes.clone(),
                nginx: run.nginx.clone(),
            },
        )?),
        None => None,
    };
    let recording = recorder.is_some();
    let mut session = Session::new(Env::live(recorder), tb, loaded.probes.clone(), run.out, run.trace.max_targets, run.all_connections);
    session.app_masters = loaded.ebpf.take_map("APP_MASTERS").and_then(|m| aya::maps::HashMap::try_from(m).ok());
    if let Some(h) = run.hooks.as_mut() {
        h.start(&mut session);
    }
    (run.on_ready)();
    eprintln!(
        "tracer: watching connects of {} ({attached}/{} probes attached in {} ms); Ctrl-C to stop",
        describe(&filter),
        loaded.probes.len(),
        loaded.attach_time.as_millis()
    );

    let deadline = run.trace.duration.map(|d| tokio::time::Instant::from_std(Instant::now() + d));
    let mut tick = tokio::time::interval(run.interval);
    tick.tick().await;
    // The kernel side wakes us only once a batch has built up (a wake-up per record costs more
    // than the probe itself), so the ring is also drained on this short timer.
    let mut poll = tokio::time::interval(POLL_EVERY);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = if run.hooks.is_some() { Some(signal(SignalKind::hangup())?) } else { None };
    let mut batch = Vec::new();
    let mut lost_shown = 0;
    let keep = |raw: &[u8]| if recording { raw.to_vec() } else { Vec::new() };
    loop {
        tokio::select! {
            r = source.next_batch(|e, raw| batch.push((e, keep(raw)))) => r?,
            _ = poll.tick() => source.drain(|e, raw| batch.push((e, keep(raw)))),
            _ = tick.tick() => {
                session.tick(|| (source.events, source.lost()))?;
                if let Some(l) = loaded.logger.as_mut() {
                    l.flush();
                }
                // What the tick just read (a second read would redo every program's fdinfo).
                let dropped = session.source_stats.1.total_dropped();
                if dropped > lost_shown {
                    eprintln!("tracer: {dropped} events lost so far (see the final summary)");
                    lost_shown = dropped;
                }
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = async { sighup.as_mut().expect("guarded").recv().await }, if sighup.is_some() => {
                if let Some(h) = run.hooks.as_mut() {
                    h.reload(&mut session);
                }
            }
            _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => break,
        }
        for (e, raw) in batch.drain(..) {
            session.handle(e, &raw)?;
        }
        session.end_batch()?;
        if let Some(h) = run.hooks.as_mut() {
            h.after_batch(&mut session)?;
        }
    }
    source.drain(|e, raw| batch.push((e, keep(raw))));
    for (e, raw) in batch.drain(..) {
        session.handle(e, &raw)?;
    }
    session.finish(|| (source.events, source.lost()))?;
    if let Some(h) = run.hooks.as_mut() {
        h.after_batch(&mut session)?;
    }
    if let Some(e) = session.env.record_error.take() {
        anyhow::bail!("writing the record file failed: {e}");
    }
    Ok(session)
}

/// `tracer watch`.
pub async fn run(args: WatchArgs) -> anyhow::Result<()> {
    let out: Box<dyn Output> = if args.json { Box::new(JsonLines::new(io::stdout())) } else { Box::new(Terminal::new(io::stdout())) };
    let mut s = run_live(LiveRun {
        trace: &args.trace,
        interval: args.interval,
        out,
        all_connections: args.connections,
        record: None,
        nginx: None,
        on_ready: Box::new(|| {}),
        hooks: None,
    })
    .await?;
    s.env.mark(crate::host::record::Mark::End);
    io::Write::flush(&mut io::stdout())?;
    Ok(())
}
