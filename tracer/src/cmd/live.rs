//! The live loop shared by `watch`, `diagnose`, `record` and `daemon`: load and attach, then feed
//! ring-buffer batches to a `Session` until the duration ends or a signal arrives.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::TraceConfig;
use crate::host::env::Env;
use crate::host::listeners;
use crate::host::record::{Meta, Recorder};
use crate::host::timebase::Timebase;
use crate::kernel::load::{self, Filter, CONNECT_PROBES, REQUEST_PROBES, TCP_PROBES};
use crate::kernel::source::Source;
use crate::output::Output;
use crate::session::Session;

/// The in-kernel filter: `--pid` covers the process and its children now.
pub fn filter(c: &TraceConfig) -> anyhow::Result<Filter> {
    let mut pids = Vec::new();
    for &pid in &c.pids {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            anyhow::bail!("--pid {pid}: no such process");
        }
        pids.push(pid);
        pids.extend(listeners::children(pid));
    }
    let cgroup_id = match &c.cgroup {
        Some(p) => Some(cgroup_id(p)?),
        None => None,
    };
    Ok(Filter { pids, comm: c.comm.clone(), cgroup_id })
}

/// The id the kernel gives a cgroup v2 directory (its inode), refusing what is not one.
fn cgroup_id(p: &Path) -> anyhow::Result<u64> {
    let m = std::fs::metadata(p).with_context(|| format!("--cgroup {}: cannot stat the cgroup directory", p.display()))?;
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    let is_cgroup2 = || {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).ok()?;
        // SAFETY: a NUL-terminated path and a zeroed statfs the call fills in.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        (unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0).then_some(st.f_type as i64 == CGROUP2_SUPER_MAGIC)
    };
    if !m.is_dir() || is_cgroup2() != Some(true) {
        anyhow::bail!("--cgroup {}: not a cgroup v2 directory (e.g. /sys/fs/cgroup/system.slice/nginx.service)", p.display());
    }
    Ok(m.ino())
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

/// What a live run is for, beyond the trace settings.
pub struct LiveRun<'a> {
    pub out: Box<dyn Output>,
    /// Keep what happened when per upstream (bounded: `state::history`) for the report's plots
    /// and `--what-if` (diagnose and record; not the daemon or watch, which run for long).
    pub keep_history: bool,
    /// Record to this file as well.
    pub record: Option<&'a Path>,
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

/// Removes the ready file when the run ends, however it ends.
struct ReadyFile<'a>(Option<&'a Path>);

impl ReadyFile<'_> {
    fn announce(&self) -> anyhow::Result<()> {
        if let Some(p) = self.0 {
            std::fs::write(p, format!("{}\n", std::process::id())).with_context(|| format!("cannot write the ready file {}", p.display()))?;
        }
        Ok(())
    }
}

impl Drop for ReadyFile<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Attach, trace until the duration ends or SIGINT/SIGTERM, and return the finished session.
pub async fn run_live(config: &TraceConfig, mut run: LiveRun<'_>) -> anyhow::Result<Session> {
    load::preflight()?;
    let filter = filter(config)?;
    let probes: Vec<_> = CONNECT_PROBES.iter().chain(TCP_PROBES).chain(REQUEST_PROBES).collect();
    let mut loaded = load::load(&filter, &probes, config.ringbuf_bytes, config.map_entries)?;
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
    let mut session = Session::new(Env::live(recorder), tb, loaded.probes.clone(), run.out, config.max_targets, config.all_connections);
    if run.keep_history {
        session.keep_history();
    }
    // Where new app-server masters are announced to the kernel (fork tracking).
    let mut app_masters = loaded.ebpf.take_map("APP_MASTERS").and_then(|m| aya::maps::HashMap::<_, u32, u8>::try_from(m).ok());
    if let Some(h) = run.hooks.as_mut() {
        h.start(&mut session);
    }
    (run.on_ready)();
    let ready = ReadyFile(config.ready_file.as_deref());
    ready.announce()?;
    eprintln!(
        "tracer: watching connects of {} ({attached}/{} probes attached in {} ms); Ctrl-C to stop",
        describe(&filter),
        loaded.probes.len(),
        loaded.attach_time.as_millis()
    );

    let deadline = config.duration.map(|d| tokio::time::Instant::from_std(Instant::now() + d));
    let mut tick = tokio::time::interval(config.interval);
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
                let dropped = session.view().lost.total_dropped();
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
        for master in session.take_new_masters() {
            if let Some(m) = app_masters.as_mut() {
                if let Err(e) = m.insert(master, 1, 0) {
                    log::warn!("cannot follow forks of pid {master}: {e}");
                }
            }
        }
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
    if let Some(e) = session.env().record_error.take() {
        anyhow::bail!("writing the record file failed: {e}");
    }
    Ok(session)
}
