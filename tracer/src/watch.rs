//! `tracer watch`: failed connect()s as they happen and a running summary per upstream target.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::time::Instant;

use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::WatchArgs;
use crate::collector::tcp::{key_of, ListenerKey};
use crate::collector::{ConnectStats, ListenerView, Requests, TcpStats};
use crate::events::{Connect, Event, TcpConnect};
use crate::listeners;
use crate::load::{self, Filter, CONNECT_PROBES, REQUEST_PROBES, TCP_PROBES};
use crate::netstat;
use crate::output::{
    jsonl::JsonLines, terminal::Terminal, ConnectFailed, Output, Stats, TargetSummary, TcpConnectRecord,
    TcpListenerSummary, UpstreamClose,
};
use crate::sockaddr::Target;
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
    tcp: TcpStats,
    tb: Timebase,
    somaxconn: Option<u32>,
    out: Box<dyn Output>,
    /// Report every TCP connect, not only the failed or delayed ones.
    all_connections: bool,
    /// TCP target → the local listener serving it (None: not on this host), looked up once.
    local: HashMap<SocketAddr, Option<SocketAddr>>,
    nstat_start: BTreeMap<String, u64>,
    requests: Requests,
    /// When each target's workers were last listed.
    workers_listed: HashMap<Target, u64>,
    /// Listener inode → owner (a /proc scan, done once per listener).
    owners: HashMap<u32, Option<listeners::Owner>>,
    /// The kernel's set of app-server masters whose forks are reported.
    app_masters: Option<aya::maps::HashMap<aya::maps::MapData, u32, u8>>,
}

/// How often a target's worker list (listener owner + its children) is refreshed at most.
const WORKERS_EVERY_NS: u64 = 500_000_000;

impl Watch {
    /// Is `remote` served by a listener on this host? (sock_diag, cached per target)
    fn local_listener(&mut self, remote: SocketAddr) -> Option<SocketAddr> {
        *self.local.entry(remote).or_insert_with(|| {
            listeners::tcp_listener_bound(remote).ok().flatten().map(|(bound, _)| bound)
        })
    }

    /// Sample an overflowing TCP listener's queue and owner (rate-limited).
    fn sample_tcp_listener(&mut self, key: ListenerKey, addr: SocketAddr) {
        let now = Timebase::monotonic_now_ns();
        if !self.tcp.wants_sample(key, now) {
            return;
        }
        let Ok(Some((bound, l))) = listeners::tcp_listener_bound(addr) else { return };
        let prev = self.tcp.listeners.get(&key).and_then(|s| s.view.clone());
        let seen = self.stats.backlog_seen(l.inode);
        let view = ListenerView::new(l, prev.as_ref(), seen, listeners::owner_of, self.somaxconn);
        self.tcp.record_sample(key, now, bound, view);
    }

    /// Remember which processes serve `target` (its listener's owner and that owner's
    /// children), so a worker's death can be tied to the requests it cut.
    fn list_workers(&mut self, target: &Target) {
        let now = Timebase::monotonic_now_ns();
        if self.workers_listed.get(target).is_some_and(|&t| now.saturating_sub(t) < WORKERS_EVERY_NS) {
            return;
        }
        self.workers_listed.insert(target.clone(), now);
        let Ok(Some(l)) = listeners::listener_for(target) else { return };
        let owner = self.owners.entry(l.inode).or_insert_with(|| listeners::owner_of(l.inode)).clone();
        if let Some(o) = owner {
            if let Some(m) = self.app_masters.as_mut() {
                if let Err(e) = m.insert(o.pid, 1, 0) {
                    log::warn!("cannot follow forks of pid {}: {e}", o.pid);
                }
            }
            let pids = listeners::children(o.pid);
            self.requests.add_workers(target, o.pid, pids);
        }
    }

    fn handle_tcp_connect(&mut self, c: TcpConnect) -> io::Result<()> {
        let listener = self.local_listener(c.remote);
        self.tcp.record_connect(&c, listener.is_some());
        if let Some(addr) = listener {
            self.sample_tcp_listener(key_of(&c.remote), addr);
        }
        let notable = c.outcome != tracer_common::tcp::outcome::ESTABLISHED || c.syn_retransmits > 0;
        if self.all_connections || notable {
            self.out.tcp_connect(&TcpConnectRecord::new(&c, &self.tb))?;
        }
        Ok(())
    }

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
                } else {
                    self.requests.record_connect(c.pid, c.fd, &c.target);
                    self.list_workers(&c.target);
                }
            }
            Event::Listen(l) => {
                if let Some(inode) = listeners::socket_inode(l.hdr.pid, l.fd) {
                    self.stats.record_listen(inode, l.backlog);
                }
            }
            Event::TcpConnect(raw) => self.handle_tcp_connect(TcpConnect::from_event(&raw))?,
            Event::ListenOverflow(o) => {
                let v6 = o.family == libc::AF_INET6 as u16;
                let key = (v6, o.port);
                self.tcp.record_ack_drop(key);
                let ip: std::net::IpAddr = if v6 { std::net::Ipv6Addr::UNSPECIFIED.into() } else { o.addr4.into() };
                self.sample_tcp_listener(key, SocketAddr::new(ip, o.port));
            }
            Event::Request(r) => self.requests.record_request(&r),
            Event::ConnClose(e) => self.requests.record_close(&e, crate::events::comm(&e.hdr)),
            Event::Signal(s) => self.requests.record_signal(
                s.hdr.ts_ns,
                s.target_pid as u32,
                crate::events::comm_str(&s.target_comm),
                s.sig,
                s.code,
                s.hdr.pid,
                crate::events::comm(&s.hdr),
            ),
            Event::Exit(x) => self.requests.record_exit(x.hdr.ts_ns, x.hdr.pid, crate::events::comm(&x.hdr)),
            Event::Fork(f) => self.requests.record_fork(f.hdr.pid, f.child_pid),
            Event::Accept(a) => {
                let local = SocketAddr::new(crate::events::ip(a.peer_family, &a.local_addr), a.local_port);
                self.tcp.record_accept(key_of(&local), local, a.wait_ns);
            }
        }
        Ok(())
    }

    /// Report cut requests that are explained or waited long enough (all of them at exit).
    fn report_cut(&mut self, is_final: bool) -> io::Result<()> {
        let now = (!is_final).then(Timebase::monotonic_now_ns);
        for cut in self.requests.take_cut(now) {
            self.out.upstream_close(&UpstreamClose::new(&cut, &self.tb))?;
        }
        Ok(())
    }

    fn summary(&mut self, source: &Source, probes: &[load::ProbeStatus], is_final: bool) -> io::Result<()> {
        self.report_cut(is_final)?;
        let tcp_of = |t: &crate::collector::TargetStats| match t.target {
            Target::Inet(a) => self.tcp.targets.get(&a),
            _ => None,
        };
        let requests_of = |t: &crate::collector::TargetStats| self.requests.targets.get(&t.target);
        let summary = |t: &crate::collector::TargetStats| TargetSummary::new(t, tcp_of(t), requests_of(t), &self.tb, is_final);
        let targets: Vec<TargetSummary> =
            if is_final { self.stats.targets().map(summary).collect() } else { self.stats.take_dirty().iter().map(summary).collect() };
        let listeners: Vec<TcpListenerSummary> = if is_final {
            self.tcp.listeners.values().map(|l| TcpListenerSummary::new(l, true)).collect()
        } else {
            self.tcp.take_dirty().iter().map(|l| TcpListenerSummary::new(l, false)).collect()
        };
        let stats = Stats {
            kind: "stats",
            is_final,
            events: source.events,
            lost: source.lost(),
            untracked_connects: self.stats.untracked + self.tcp.untracked,
            probes: probes.to_vec(),
            node_counters: netstat::delta(&self.nstat_start, &netstat::read()),
        };
        self.out.summary(&targets, &listeners, &stats)
    }
}

pub async fn run(args: WatchArgs) -> anyhow::Result<()> {
    load::preflight()?;
    let filter = filter(&args)?;
    let probes: Vec<_> = CONNECT_PROBES.iter().chain(TCP_PROBES).chain(REQUEST_PROBES).collect();
    let mut loaded = load::load(&filter, &probes, args.ringbuf_kib * 1024)?;
    let mut source = Source::new(&mut loaded.ebpf)?;
    let attached = loaded.probes.iter().filter(|p| p.attached).count();
    eprintln!(
        "tracer: watching connects of {} ({attached}/{} probes attached in {} ms); Ctrl-C to stop",
        describe(&filter),
        loaded.probes.len(),
        loaded.attach_time.as_millis()
    );
    let out: Box<dyn Output> =
        if args.json { Box::new(JsonLines::new(io::stdout())) } else { Box::new(Terminal::new(io::stdout())) };
    let mut w = Watch {
        stats: ConnectStats::new(args.max_targets),
        tcp: TcpStats::new(args.max_targets),
        tb: Timebase::now(),
        somaxconn: listeners::somaxconn(),
        out,
        all_connections: args.connections,
        local: HashMap::new(),
        nstat_start: netstat::read(),
        requests: Requests::new(args.max_targets),
        workers_listed: HashMap::new(),
        owners: HashMap::new(),
        app_masters: loaded.ebpf.take_map("APP_MASTERS").and_then(|m| aya::maps::HashMap::try_from(m).ok()),
    };

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
        w.report_cut(false)?;
    }
    source.drain(|e| batch.push(e));
    for e in batch.drain(..) {
        w.handle(e)?;
    }
    w.summary(&source, &loaded.probes, true)?;
    io::stdout().flush()?;
    Ok(())
}
