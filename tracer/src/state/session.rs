//! One tracing session: decoded kernel events in, per-target / per-listener / per-request state
//! and the 5xx correlation out. Everything it asks the host goes through `Env`, so `watch`,
//! `diagnose`, `record` and `report` (a replay) run this same code.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;

use crate::diagnosis::join::{Cause, CauseKind, Correlator};
use crate::host::env::Env;
use crate::host::record::Mark;
use crate::host::timebase::Timebase;
use crate::kernel::events::{Connect, Event, TcpConnect};
use crate::kernel::load::ProbeStatus;
use crate::kernel::sockaddr::Target;
use crate::kernel::source::Lost;
use crate::output::{ConnectFailed, Output, Stats, TargetSummary, TcpConnectRecord, TcpListenerSummary, UpstreamClose};
use crate::state::tcp::{key_of, ListenerKey};
use crate::state::{ConnectStats, ListenerView, Requests, TcpStats};
use tracer_common::request::close;

/// How often a target's worker list (listener owner + its children) is refreshed at most.
const WORKERS_EVERY_NS: u64 = 500_000_000;
/// How long a listener's owner (found by a /proc scan) is trusted.
const OWNER_TTL_NS: u64 = 10_000_000_000;
/// How long the listener serving a target is trusted when only its identity is needed (the
/// worker list): a unix sock_diag dump walks every unix socket of the host (~40 ms at 200 k
/// sockets), far too costly to repeat every WORKERS_EVERY_NS.
const LISTENER_TTL_NS: u64 = 10_000_000_000;

pub struct Session {
    pub env: Env,
    pub stats: ConnectStats,
    pub tcp: TcpStats,
    pub requests: Requests,
    pub correlator: Correlator,
    pub tb: Timebase,
    pub somaxconn: Option<u32>,
    pub probes: Vec<ProbeStatus>,
    out: Box<dyn Output>,
    /// Report every TCP connect, not only the failed or delayed ones.
    all_connections: bool,
    /// TCP target → the local listener serving it (None: not on this host), looked up once.
    local: HashMap<SocketAddr, Option<SocketAddr>>,
    nstat_start: BTreeMap<String, u64>,
    /// When each target's workers were last listed.
    workers_listed: HashMap<Target, u64>,
    /// Target → its listener (inode), for the worker list.
    serving: Expiring<Target, Option<crate::host::listeners::Listener>>,
    /// Listener inode → owner: a /proc/*/fd scan, far too costly to repeat per sample on a host
    /// with many fds.
    owners: Expiring<u32, Option<crate::host::listeners::Owner>>,
    /// Listener inode → the (pid, fd) seen calling listen() on it: where its owner is looked for
    /// first.
    listen_calls: HashMap<u32, (u32, i32)>,
    /// Where new app-server masters are announced to the kernel (fork tracking); None in replay.
    pub app_masters: Option<aya::maps::HashMap<aya::maps::MapData, u32, u8>>,
    /// Latest (events decoded, lost) of the live source.
    pub source_stats: (u64, Lost),
    /// When set, every completed request's (target, ttfb ns, total ns) is kept here for the
    /// daemon's Prometheus histograms (it drains them after each batch).
    pub request_samples: Option<Vec<(Option<Target>, u64, u64)>>,
}

impl Session {
    pub fn new(mut env: Env, tb: Timebase, probes: Vec<ProbeStatus>, out: Box<dyn Output>, max_targets: usize, all_connections: bool) -> Session {
        let somaxconn = env.somaxconn();
        let nstat_start = env.nstat();
        Session {
            env,
            stats: ConnectStats::new(max_targets),
            tcp: TcpStats::new(max_targets),
            requests: Requests::new(max_targets),
            correlator: Correlator::default(),
            tb,
            somaxconn,
            probes,
            out,
            all_connections,
            local: HashMap::new(),
            nstat_start,
            workers_listed: HashMap::new(),
            serving: Expiring::new(LISTENER_TTL_NS),
            owners: Expiring::new(OWNER_TTL_NS),
            listen_calls: HashMap::new(),
            app_masters: None,
            source_stats: (0, Lost::default()),
            request_samples: None,
        }
    }

    /// Send events to a different output from now on (the daemon's SIGHUP).
    pub fn replace_output(&mut self, out: Box<dyn Output>) {
        self.out = out;
    }

    /// Is `remote` served by a listener on this host? (sock_diag, cached per target)
    fn local_listener(&mut self, remote: SocketAddr) -> Option<SocketAddr> {
        if let Some(l) = self.local.get(&remote) {
            return *l;
        }
        let l = self.env.tcp_listener_bound(remote).map(|(bound, _)| bound);
        self.local.insert(remote, l);
        l
    }

    /// Sample an overflowing TCP listener's queue and owner (rate-limited).
    fn sample_tcp_listener(&mut self, key: ListenerKey, addr: SocketAddr) {
        let now = self.env.now_ns();
        if !self.tcp.wants_sample(key, now) {
            return;
        }
        let Some((bound, l)) = self.env.tcp_listener_bound(addr) else { return };
        let prev = self.tcp.listeners.get(&key).and_then(|s| s.view.clone());
        let seen = self.stats.backlog_seen(l.inode);
        let owner = self.owner(l.inode, now);
        let view = ListenerView::new(l, prev.as_ref(), seen, |_| owner, self.somaxconn);
        self.tcp.record_sample(key, now, bound, view);
    }

    /// The owner of listener `inode`, looked up again at most every OWNER_TTL_NS.
    fn owner(&mut self, inode: u32, now: u64) -> Option<crate::host::listeners::Owner> {
        let (env, listen) = (&mut self.env, self.listen_calls.get(&inode).copied());
        self.owners.get_or_insert_with(inode, now, || env.owner_of(inode, listen))
    }

    /// Remember which processes serve `target` (its listener's owner and that owner's
    /// children), so a worker's death can be tied to the requests it cut.
    fn list_workers(&mut self, target: &Target) {
        let now = self.env.now_ns();
        if self.workers_listed.get(target).is_some_and(|&t| now.saturating_sub(t) < WORKERS_EVERY_NS) {
            return;
        }
        self.workers_listed.insert(target.clone(), now);
        let env = &mut self.env;
        let l = self.serving.get_or_insert_with(target.clone(), now, || env.listener_for(target));
        let Some(l) = l else { return };
        let owner = self.owner(l.inode, now);
        if let Some(o) = owner {
            if let Some(m) = self.app_masters.as_mut() {
                if let Err(e) = m.insert(o.pid, 1, 0) {
                    log::warn!("cannot follow forks of pid {}: {e}", o.pid);
                }
            }
            let pids = self.env.children(o.pid);
            self.requests.add_workers(target, o.pid, pids);
        }
    }

    fn handle_tcp_connect(&mut self, c: TcpConnect) -> io::Result<()> {
        let listener = self.local_listener(c.remote);
        self.tcp.record_connect(&c, listener.is_some());
        if let Some(addr) = listener {
            self.sample_tcp_listener(key_of(&c.remote), addr);
        }
        use tracer_common::tcp::outcome;
        let kind = match c.outcome {
            outcome::REFUSED => Some(CauseKind::TcpRefused),
            outcome::ABANDONED => Some(CauseKind::ConnectTimeout),
            _ => None,
        };
        if let Some(kind) = kind {
            let target = Some(Target::Inet(c.remote));
            self.correlator.cause(Cause { ts_ns: c.ts_ns, pid: c.pid, kind, target, age_ns: c.latency_ns, idle_ns: 0 });
        }
        let notable = c.outcome != outcome::ESTABLISHED || c.syn_retransmits > 0;
        if self.all_connections || notable {
            self.out.tcp_connect(&TcpConnectRecord::new(&c, &self.tb))?;
        }
        Ok(())
    }

    /// One decoded event; `raw` is its ring-buffer record (written to a recording).
    pub fn handle(&mut self, e: Event, raw: &[u8]) -> io::Result<()> {
        self.env.event(raw);
        match e {
            Event::Connect(raw) => {
                let c = Connect::from_event(&raw);
                if self.stats.record(&c) {
                    // Sample the listener while it is failing: its queue is what explains EAGAIN.
                    let l = self.env.listener_for(&c.target);
                    let now = self.env.now_ns();
                    let owner = l.as_ref().and_then(|l| self.owner(l.inode, now));
                    self.stats.record_sample(&c.target, now, l, |_| owner, self.somaxconn);
                }
                if c.failed() {
                    // Only errors nginx reports itself as a failed connect (EINPROGRESS TCP
                    // refusals arrive later as a RST).
                    self.correlator.cause(Cause {
                        ts_ns: c.ts_ns,
                        pid: c.pid,
                        kind: CauseKind::ConnectError(c.errno),
                        target: Some(c.target.clone()),
                        age_ns: c.duration_ns,
                        idle_ns: 0,
                    });
                    self.out.connect_failed(&ConnectFailed::new(&c, &self.tb))?;
                } else {
                    self.requests.record_connect(c.pid, c.fd, &c.target);
                    self.list_workers(&c.target);
                }
            }
            Event::Listen(l) => {
                if let Some(inode) = self.env.socket_inode(l.hdr.pid, l.fd) {
                    self.stats.record_listen(inode, l.backlog);
                    if self.listen_calls.len() > 10_000 {
                        self.listen_calls.clear();
                    }
                    self.listen_calls.insert(inode, (l.hdr.pid, l.fd));
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
            Event::Request(r) => {
                self.requests.record_request(&r);
                if let Some(samples) = self.request_samples.as_mut() {
                    let target = self.requests.target_of(r.hdr.pid, r.fd).cloned();
                    samples.push((target, r.first_byte_ns.saturating_sub(r.start_ns), r.last_byte_ns.saturating_sub(r.start_ns)));
                }
            }
            Event::ConnClose(e) if e.class == close::UNUSED => {
                // A TCP connect already counted as established that the proxy gave up on.
                let Some(Target::Inet(remote)) = self.requests.target_of(e.hdr.pid, e.fd).cloned() else { return Ok(()) };
                let local = self.local_listener(remote).is_some();
                self.tcp.record_given_up_late(remote, local);
                let target = Some(Target::Inet(remote));
                self.correlator.cause(Cause {
                    ts_ns: e.hdr.ts_ns,
                    pid: e.hdr.pid,
                    kind: CauseKind::ConnectTimeout,
                    target,
                    age_ns: e.idle_ns,
                    idle_ns: 0,
                });
            }
            Event::ConnClose(e) => {
                let kind = match e.class {
                    close::PREMATURE => Some(CauseKind::Premature),
                    close::KEEPALIVE_RACE => Some(CauseKind::KeepaliveRace),
                    close::PROXY_ABORT => Some(CauseKind::ProxyAbort),
                    _ => None,
                };
                if let Some(kind) = kind {
                    let target = self.requests.target_of(e.hdr.pid, e.fd).cloned();
                    self.correlator.cause(Cause { ts_ns: e.hdr.ts_ns, pid: e.hdr.pid, kind, target, age_ns: e.request_age_ns, idle_ns: e.idle_ns });
                }
                self.requests.record_close(&e, crate::kernel::events::comm(&e.hdr));
            }
            Event::Signal(s) => self.requests.record_signal(
                s.hdr.ts_ns,
                s.target_pid as u32,
                crate::kernel::events::comm_str(&s.target_comm),
                s.sig,
                s.code,
                s.hdr.pid,
                crate::kernel::events::comm(&s.hdr),
            ),
            Event::Exit(x) => self.requests.record_exit(x.hdr.ts_ns, x.hdr.pid, crate::kernel::events::comm(&x.hdr)),
            Event::Fork(f) => self.requests.record_fork(f.hdr.pid, f.child_pid),
            Event::Accept(a) => {
                let local = SocketAddr::new(crate::kernel::events::ip(a.peer_family, &a.local_addr), a.local_port);
                self.tcp.record_accept(key_of(&local), local, a.wait_ns);
            }
            Event::Status(s) => self.correlator.status(s.hdr.ts_ns, s.hdr.pid, s.fd, s.status),
        }
        Ok(())
    }

    /// A batch of events is done: report cut requests that are explained or waited long enough.
    pub fn end_batch(&mut self) -> io::Result<()> {
        self.env.mark(Mark::Batch);
        let now = self.env.now_ns();
        self.report_cut(Some(now))
    }

    fn report_cut(&mut self, now: Option<u64>) -> io::Result<()> {
        for cut in self.requests.take_cut(now) {
            self.out.upstream_close(&UpstreamClose::new(&cut, &self.tb))?;
        }
        Ok(())
    }

    /// The periodic summary (changed targets only).
    pub fn tick(&mut self, source: impl FnOnce() -> (u64, Lost)) -> io::Result<()> {
        self.env.mark(Mark::Tick);
        self.summary(source, false)
    }

    /// The end: everything still pending is reported, then the final summary. (The caller
    /// writes the recording's end mark once it has asked its last question.)
    pub fn finish(&mut self, source: impl FnOnce() -> (u64, Lost)) -> io::Result<()> {
        self.report_cut(None)?;
        self.correlator.finish();
        self.summary(source, true)
    }

    fn summary(&mut self, source: impl FnOnce() -> (u64, Lost), is_final: bool) -> io::Result<()> {
        self.source_stats = self.env.source_stats(source);
        let nstat = self.env.nstat();
        let tcp_of = |t: &crate::state::TargetStats| match t.target {
            Target::Inet(a) => self.tcp.targets.get(&a),
            _ => None,
        };
        let requests_of = |t: &crate::state::TargetStats| self.requests.targets.get(&t.target);
        let summary = |t: &crate::state::TargetStats| TargetSummary::new(t, tcp_of(t), requests_of(t), &self.tb, is_final);
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
            events: self.source_stats.0,
            lost: self.source_stats.1.clone(),
            untracked_connects: self.stats.untracked + self.tcp.untracked,
            probes: self.probes.clone(),
            node_counters: crate::host::netstat::delta(&self.nstat_start, &nstat),
        };
        self.out.summary(&targets, &listeners, &stats)
    }
}

/// Answers from the host kept for `ttl_ns`; the map is emptied when it reaches 10,000 entries
/// (a host churning through listeners must not grow it without bound).
struct Expiring<K, V> {
    ttl_ns: u64,
    map: HashMap<K, (V, u64)>,
}

impl<K: std::hash::Hash + Eq, V: Clone> Expiring<K, V> {
    fn new(ttl_ns: u64) -> Self {
        Expiring { ttl_ns, map: HashMap::new() }
    }

    /// The kept answer for `key` if younger than the TTL at `now_ns`, else a fresh one from `ask`.
    fn get_or_insert_with(&mut self, key: K, now_ns: u64, ask: impl FnOnce() -> V) -> V {
        if let Some((v, at)) = self.map.get(&key) {
            if now_ns.saturating_sub(*at) < self.ttl_ns {
                return v.clone();
            }
        }
        let v = ask();
        if self.map.len() >= 10_000 {
            self.map.clear();
        }
        self.map.insert(key, (v.clone(), now_ns));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::Expiring;

    #[test]
    fn expiring_answers_are_asked_again_after_their_ttl_and_the_map_stays_bounded() {
        let mut e: Expiring<u32, u32> = Expiring::new(10);
        let mut asked = 0;
        let mut ask = |v| {
            asked += 1;
            v
        };
        assert_eq!(e.get_or_insert_with(1, 100, || ask(7)), 7);
        assert_eq!(e.get_or_insert_with(1, 109, || ask(8)), 7, "kept within the TTL");
        assert_eq!(e.get_or_insert_with(1, 110, || ask(9)), 9, "asked again at the TTL");
        drop(ask);
        assert_eq!(asked, 2);
        for k in 0..25_000 {
            e.get_or_insert_with(k, 200, || k);
        }
        assert!(e.map.len() <= 10_000);
    }
}
