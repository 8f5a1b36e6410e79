//! One tracing session: decoded kernel events in, routed by kind to the handler of their family
//! (connects, TCP, requests and workers in `state`; status lines to the join in `diagnosis`);
//! what they find goes to the output as it happens. Everything asked of the host goes through
//! `Env` (inside `Lookups`), so `watch`, `diagnose`, `record` and `report` (a replay) run this
//! same code. Readers (verdicts, metrics) get a read-only `View`.

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use tracer_common::request::CloseClass;
use tracer_common::tcp::ConnectOutcome;

use crate::diagnosis::join::{Correlator, Status};
use crate::host::appserver::AppServer;
use crate::host::env::Env;
use crate::host::record::Mark;
use crate::host::timebase::Timebase;
use crate::kernel::events::{Connect, Event};
use crate::kernel::load::ProbeStatus;
use crate::kernel::sockaddr::Target;
use crate::kernel::source::Lost;
use crate::output::{ConnectFailed, Output, Stats, TargetSummary, TcpConnectRecord, TcpListenerSummary, UpstreamClose};
use crate::state::cause::Cause;
use crate::state::history::History;
use crate::state::lookups::Lookups;
use crate::state::{ConnectStats, Requests, TargetStats, TcpStats};

/// Per-target, per-listener and per-request state.
pub struct State {
    pub connects: ConnectStats,
    pub tcp: TcpStats,
    pub requests: Requests,
    /// The app servers behind the listeners seen, by master pid.
    pub apps: BTreeMap<u32, AppServer>,
    /// Arrivals and completions per target, when kept (`Session::keep_history`).
    pub history: Option<History>,
}

impl State {
    /// Every app-server master the state knows of: listener owners and worker masters.
    fn masters(&self) -> BTreeSet<u32> {
        let views = self.connects.targets().filter_map(|t| t.listener.as_ref()).chain(self.tcp.listeners.values().filter_map(|l| l.view.as_ref()));
        views.filter_map(|v| v.owner.as_ref().map(|o| o.pid)).chain(self.requests.masters()).collect()
    }
}

/// What readers see of a session.
pub struct View<'a> {
    pub state: &'a State,
    pub join: &'a Correlator,
    pub tb: &'a Timebase,
    /// Events decoded and lost, as of the last summary.
    pub events: u64,
    pub lost: &'a Lost,
    pub probes: &'a [ProbeStatus],
}

impl View<'_> {
    /// The app server behind `target`: the owner of its listener (unix or TCP on this host), or
    /// the master of the workers serving it.
    pub fn app_for(&self, target: &Target) -> Option<&AppServer> {
        let s = self.state;
        let owner = s.connects.get(target).and_then(|t| t.listener.as_ref()).and_then(|v| v.owner.as_ref()).map(|o| o.pid);
        let tcp_owner = match target {
            Target::Inet(a) => s.tcp.listeners.get(&crate::state::tcp::key_of(a)).and_then(|l| l.view.as_ref()?.owner.as_ref()).map(|o| o.pid),
            _ => None,
        };
        [owner, tcp_owner, s.requests.master_of(target)].into_iter().flatten().find_map(|pid| s.apps.get(&pid))
    }
}

/// A completed upstream request's latency: (target, ttfb ns, total ns).
pub type RequestSample = (Option<Target>, u64, u64);

pub struct Session {
    host: Lookups,
    state: State,
    join: Correlator,
    tb: Timebase,
    probes: Vec<ProbeStatus>,
    /// Latest (events decoded, lost) of the live source.
    source_stats: (u64, Lost),
    out: Box<dyn Output>,
    /// Report every TCP connect, not only the failed or delayed ones.
    all_connections: bool,
    /// When set, every completed request's latency is kept here for the daemon's histograms.
    request_samples: Option<Vec<RequestSample>>,
}

impl Session {
    pub fn new(env: Env, tb: Timebase, probes: Vec<ProbeStatus>, out: Box<dyn Output>, max_targets: usize, all_connections: bool) -> Session {
        Session {
            host: Lookups::new(env),
            state: State {
                connects: ConnectStats::new(max_targets),
                tcp: TcpStats::new(max_targets),
                requests: Requests::new(max_targets),
                apps: BTreeMap::new(),
                history: None,
            },
            join: Correlator::default(),
            tb,
            probes,
            source_stats: (0, Lost::default()),
            out,
            all_connections,
            request_samples: None,
        }
    }

    pub fn view(&self) -> View<'_> {
        View { state: &self.state, join: &self.join, tb: &self.tb, events: self.source_stats.0, lost: &self.source_stats.1, probes: &self.probes }
    }

    /// The host seam (recording marks, replay errors, the error log's lines).
    pub fn env(&mut self) -> &mut Env {
        &mut self.host.env
    }

    /// Send events to a different output from now on (the daemon's SIGHUP).
    pub fn replace_output(&mut self, out: Box<dyn Output>) {
        self.out = out;
    }

    /// Keep every connect's and completed request's time per target (`tracer report --what-if`).
    pub fn keep_history(&mut self) {
        self.state.history.get_or_insert_with(History::default);
    }

    /// Keep every completed request's latency for `take_request_samples` (the daemon).
    pub fn keep_request_samples(&mut self) {
        self.request_samples.get_or_insert_with(Vec::new);
    }

    pub fn take_request_samples(&mut self) -> Vec<RequestSample> {
        self.request_samples.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// 502/504s whose cause is settled (see `Correlator::take_settled`), for the daemon.
    pub fn take_settled_statuses(&mut self) -> Vec<Status> {
        let now = self.host.now_ns();
        self.join.take_settled(now)
    }

    /// App-server masters found since the last call (the live loop has the kernel report their
    /// forks).
    pub fn take_new_masters(&mut self) -> Vec<u32> {
        self.host.take_new_masters()
    }

    fn cause(&mut self, c: Option<Cause>) {
        if let Some(c) = c {
            self.join.cause(c);
        }
    }

    /// One decoded event; `raw` is its ring-buffer record (written to a recording).
    pub fn handle(&mut self, e: Event, raw: &[u8]) -> io::Result<()> {
        self.host.env.event(raw);
        let (state, host) = (&mut self.state, &mut self.host);
        match e {
            Event::Connect(c) => self.on_connect(c)?,
            Event::Listen(l) => host.note_listen(l.hdr.pid, l.fd, l.backlog),
            Event::TcpConnect(c) => {
                let cause = state.tcp.on_connect(&c, host);
                if let Some(h) = state.history.as_mut() {
                    let lost = c.syn_retransmits + u32::from(c.outcome == ConnectOutcome::Abandoned);
                    if lost > 0 && host.local_listener(c.remote).is_some() {
                        h.syn_drops(crate::state::tcp::key_of(&c.remote), c.ts_ns, lost);
                    }
                }
                self.cause(cause);
                if self.all_connections || c.outcome != ConnectOutcome::Established || c.syn_retransmits > 0 {
                    self.out.tcp_connect(&TcpConnectRecord::new(&c, &self.tb))?;
                }
            }
            Event::ListenOverflow(o) => {
                state.tcp.on_ack_drop(&o, host);
                if let Some(h) = state.history.as_mut() {
                    h.ack_drop((o.family == libc::AF_INET6 as u16, o.port), o.hdr.ts_ns);
                }
            }
            Event::Accept(a) => state.tcp.on_accept(&a),
            Event::ConnClose(e) if e.class == CloseClass::Unused => {
                // A TCP connect already counted as established that the proxy gave up on.
                if let Some(Target::Inet(remote)) = state.requests.target_of(e.hdr.pid, e.fd).cloned() {
                    let cause = state.tcp.on_given_up_late(remote, e.hdr.ts_ns, e.hdr.pid, e.idle_ns, host);
                    self.join.cause(cause);
                }
            }
            Event::ConnClose(e) if e.class == CloseClass::ResetUnused => {
                // Reset right after the handshake: the listener's answer to a final ACK it had no
                // room for, when tcp_abort_on_overflow is on.
                if let Some(Target::Inet(remote)) = state.requests.target_of(e.hdr.pid, e.fd).cloned() {
                    let cause = state.tcp.on_reset_unused(remote, e.hdr.ts_ns, e.hdr.pid, e.idle_ns, host);
                    self.join.cause(cause);
                }
            }
            Event::ConnClose(e) => {
                let cause = state.requests.on_close(&e);
                self.cause(cause);
            }
            Event::Request(r) => {
                state.requests.record_request(&r);
                if let (Some(h), Some(t)) = (state.history.as_mut(), state.requests.target_of(r.hdr.pid, r.fd)) {
                    h.completion(t, r.last_byte_ns, r.first_byte_ns.saturating_sub(r.start_ns));
                }
                if let Some(samples) = self.request_samples.as_mut() {
                    let target = state.requests.target_of(r.hdr.pid, r.fd).cloned();
                    samples.push((target, r.first_byte_ns.saturating_sub(r.start_ns), r.last_byte_ns.saturating_sub(r.start_ns)));
                }
            }
            Event::Signal(s) => state.requests.on_signal(&s),
            Event::Exit(x) => state.requests.on_exit(&x),
            Event::Fork(f) => state.requests.on_fork(&f),
            Event::Status(s) => self.join.status(s.hdr.ts_ns, s.hdr.pid, s.fd, s.status, s.source),
        }
        Ok(())
    }

    fn on_connect(&mut self, c: Connect) -> io::Result<()> {
        self.join.connecting(c.pid);
        let sample = self.state.connects.on_connect(&c, &mut self.host);
        if let Some(h) = self.state.history.as_mut() {
            if let Some((at, waiting, max)) = sample {
                h.queue_sample(&c.target, at, waiting, max);
            }
            h.arrival(&c.target, c.ts_ns);
            if c.failed() {
                h.failure(&c.target, c.ts_ns);
            }
        }
        if c.failed() {
            // Only errors nginx reports itself as a failed connect (EINPROGRESS TCP refusals
            // arrive later as a RST).
            self.join.cause(Cause {
                ts_ns: c.ts_ns,
                pid: c.pid,
                kind: crate::state::cause::CauseKind::ConnectError(c.errno),
                target: Some(c.target.clone()),
                age_ns: c.duration_ns,
                idle_ns: 0,
            });
            return self.out.connect_failed(&ConnectFailed::new(&c, &self.tb));
        }
        self.state.requests.record_connect(c.pid, c.fd, &c.target);
        // Remember which processes serve the target, so a worker's death can be tied to the
        // requests it cut.
        if let Some((master, workers)) = self.host.workers_of(&c.target) {
            self.state.requests.add_workers(&c.target, master, workers);
        }
        Ok(())
    }

    /// A batch of events is done: report cut requests that are explained or waited long enough.
    pub fn end_batch(&mut self) -> io::Result<()> {
        self.host.env.mark(Mark::Batch);
        let now = self.host.now_ns();
        self.report_cut(Some(now))
    }

    fn report_cut(&mut self, now: Option<u64>) -> io::Result<()> {
        for cut in self.state.requests.take_cut(now) {
            self.out.upstream_close(&UpstreamClose::new(&cut, &self.tb))?;
        }
        Ok(())
    }

    /// The periodic summary (changed targets only).
    pub fn tick(&mut self, source: impl FnOnce() -> (u64, Lost)) -> io::Result<()> {
        self.host.env.mark(Mark::Tick);
        self.sample_queues();
        self.summary(source, false)
    }

    /// With the history kept: every unix upstream's listener queue, at every tick (at most
    /// `QUEUE_SAMPLES_PER_TICK` upstreams, those with the most connects).
    fn sample_queues(&mut self) {
        const QUEUE_SAMPLES_PER_TICK: usize = 16;
        if self.state.history.is_none() {
            return;
        }
        let mut targets: Vec<(u64, Target)> =
            self.state.connects.targets().filter(|t| t.target.is_unix()).map(|t| (t.connects, t.target.clone())).collect();
        targets.sort_by_key(|t| std::cmp::Reverse(t.0));
        let now = self.host.now_ns();
        for (_, t) in targets.into_iter().take(QUEUE_SAMPLES_PER_TICK) {
            if let Some(l) = self.host.env.queue_sample(&t) {
                if let Some(h) = self.state.history.as_mut() {
                    h.queue_sample(&t, now, l.queue_len, l.queue_max);
                }
            }
        }
    }

    /// The end: everything still pending is reported, then the final summary. (The caller
    /// writes the recording's end mark once it has asked its last question.)
    pub fn finish(&mut self, source: impl FnOnce() -> (u64, Lost)) -> io::Result<()> {
        self.report_cut(None)?;
        self.join.finish();
        self.summary(source, true)
    }

    /// Read the settings of app servers found since the last summary (once each).
    fn learn_apps(&mut self) {
        for pid in self.state.masters() {
            if !self.state.apps.contains_key(&pid) {
                if let Some(app) = self.host.app_server(pid) {
                    self.state.apps.insert(pid, app);
                }
            }
        }
    }

    fn summary(&mut self, source: impl FnOnce() -> (u64, Lost), is_final: bool) -> io::Result<()> {
        self.learn_apps();
        self.source_stats = self.host.env.source_stats(source);
        let node_counters = self.host.node_counters();
        let State { connects, tcp, requests, .. } = &mut self.state;
        let tb = &self.tb;
        let summary = |t: &TargetStats| {
            let tcp_target = match t.target {
                Target::Inet(a) => tcp.targets.get(&a),
                _ => None,
            };
            TargetSummary::new(t, tcp_target, requests.targets.get(&t.target), tb, is_final)
        };
        let targets: Vec<TargetSummary> =
            if is_final { connects.targets().map(summary).collect() } else { connects.take_dirty().iter().map(summary).collect() };
        let listeners: Vec<TcpListenerSummary> = if is_final {
            tcp.listeners.values().map(|l| TcpListenerSummary::new(l, true)).collect()
        } else {
            tcp.take_dirty().iter().map(|l| TcpListenerSummary::new(l, false)).collect()
        };
        let stats = Stats {
            kind: "stats",
            is_final,
            events: self.source_stats.0,
            lost: self.source_stats.1.clone(),
            untracked_connects: connects.untracked + tcp.untracked,
            probes: self.probes.clone(),
            node_counters,
        };
        self.out.summary(&targets, &listeners, &stats)
    }
}

#[cfg(test)]
mod tests {
    //! Event sequences through the whole userspace path (state → join → verdicts), with a host
    //! that answers nothing: the races between a cause and the status line it explains.

    use super::*;
    use crate::diagnosis::report::{self, Report};
    use crate::diagnosis::verdict::VerdictKind;
    use crate::output::Quiet;
    use tracer_common::connect::SOCKADDR_MAX;
    use tracer_common::request::CloseHow;
    use tracer_common::{kind, ConnCloseEvent, ConnectEvent, EventHeader, StatusEvent};

    const NGINX: u32 = 10;
    const FD: i32 = 7;

    fn hdr(kind: u32, pid: u32, ts_ns: u64) -> EventHeader {
        let mut comm = [0u8; 16];
        comm[..5].copy_from_slice(b"nginx");
        EventHeader { kind, pid, tid: pid, _pad: 0, ts_ns, comm }
    }

    fn raw<T>(e: &T) -> Vec<u8> {
        // SAFETY: a repr(C) wire struct read as its bytes.
        unsafe { std::slice::from_raw_parts((e as *const T).cast::<u8>(), std::mem::size_of::<T>()) }.to_vec()
    }

    struct Run(Session);

    impl Run {
        fn new() -> Run {
            Run(Session::new(Env::replay(&[]), Timebase::with_offset_ns(0), Vec::new(), Box::new(Quiet), 16, false))
        }

        fn feed(&mut self, bytes: Vec<u8>) -> &mut Run {
            self.0.handle(Event::decode(&bytes).expect("decodes"), &bytes).unwrap();
            self
        }

        /// nginx worker `pid` connect()s `fd` to unix:/run/app.sock, with result `ret`.
        fn connect(&mut self, pid: u32, ts_ns: u64, ret: i64) -> &mut Run {
            let mut addr = [0u8; SOCKADDR_MAX];
            addr[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
            addr[2..15].copy_from_slice(b"/run/app.sock");
            let e = ConnectEvent { hdr: hdr(kind::CONNECT, pid, ts_ns), duration_ns: 3_000, ret, fd: FD, addrlen: 2 + 13 + 1, addr };
            self.feed(raw(&e))
        }

        fn close(&mut self, pid: u32, ts_ns: u64, class: CloseClass, how: CloseHow, seq: u32) -> &mut Run {
            let e = ConnCloseEvent {
                hdr: hdr(kind::CONN_CLOSE, pid, ts_ns),
                sk: 0xffff_8880_0000_1000,
                request_age_ns: 1_500_000_000,
                idle_ns: if seq > 1 { 1_000_000_000 } else { 0 },
                class: class as u32,
                how: how as u32,
                seq,
                bytes_recv: 0,
                fd: FD,
                family: libc::AF_UNIX as u16,
                _pad: 0,
            };
            self.feed(raw(&e))
        }

        fn status(&mut self, pid: u32, ts_ns: u64, status: u16) -> &mut Run {
            let e = StatusEvent { hdr: hdr(kind::STATUS, pid, ts_ns), fd: 30, status, source: 0 };
            self.feed(raw(&e))
        }

        fn report(&mut self) -> Report {
            self.0.finish(Default::default).unwrap();
            report::build(&self.0.view(), &crate::nginx::Discovery::default(), &[], &[])
        }
    }

    impl Run {
        /// A TCP connect by `pid` to 10.250.0.2:8000 that left SYN_SENT with `outcome` after
        /// `retransmits` SYN retransmits and `latency_ns`.
        fn tcp_connect(&mut self, pid: u32, ts_ns: u64, outcome: ConnectOutcome, retransmits: u32, latency_ns: u64) -> &mut Run {
            let mut addrs =
                tracer_common::TcpAddrs { family: libc::AF_INET as u16, sport: 40000, dport: 8000, _pad: 0, saddr: [0; 16], daddr: [0; 16] };
            addrs.saddr[..4].copy_from_slice(&[10, 250, 0, 1]);
            addrs.daddr[..4].copy_from_slice(&[10, 250, 0, 2]);
            let e = tracer_common::TcpConnectEvent {
                hdr: hdr(kind::TCP_CONNECT, pid, ts_ns),
                addrs,
                skaddr: 1,
                start_ns: ts_ns - latency_ns,
                latency_ns,
                outcome: outcome as u32,
                syn_retransmits: retransmits,
            };
            self.feed(raw(&e))
        }
    }

    impl Run {
        /// nginx worker `pid` connect()s `fd` to 10.250.0.2:8000 (non-blocking: EINPROGRESS).
        fn connect_inet(&mut self, pid: u32, ts_ns: u64) -> &mut Run {
            let mut addr = [0u8; SOCKADDR_MAX];
            addr[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            addr[2..4].copy_from_slice(&8000u16.to_be_bytes());
            addr[4..8].copy_from_slice(&[10, 250, 0, 2]);
            let e =
                ConnectEvent { hdr: hdr(kind::CONNECT, pid, ts_ns), duration_ns: 3_000, ret: -(libc::EINPROGRESS as i64), fd: FD, addrlen: 16, addr };
            self.feed(raw(&e))
        }

        /// The kernel saw `fd`'s established connection reset before its first request.
        fn reset_unused(&mut self, pid: u32, ts_ns: u64) -> &mut Run {
            let e = ConnCloseEvent {
                hdr: hdr(kind::CONN_CLOSE, pid, ts_ns),
                sk: 0xffff_8880_0000_2000,
                request_age_ns: 0,
                idle_ns: 20_000,
                class: CloseClass::ResetUnused as u32,
                how: CloseHow::Reset as u32,
                seq: 0,
                bytes_recv: 0,
                fd: FD,
                family: libc::AF_INET as u16,
                _pad: 0,
            };
            self.feed(raw(&e))
        }

        /// A final ACK dropped at the full accept queue of the listener on port 8000.
        fn ack_drop(&mut self, ts_ns: u64) -> &mut Run {
            let e = tracer_common::ListenOverflowEvent {
                hdr: hdr(kind::LISTEN_OVERFLOW, 0, ts_ns),
                skaddr: 2,
                family: libc::AF_INET as u16,
                port: 8000,
                addr4: [0; 4],
                reason: 40,
                _pad: 0,
            };
            self.feed(raw(&e))
        }
    }

    #[test]
    fn a_reset_right_after_the_handshake_at_an_overflowing_listener_is_its_full_accept_queue() {
        let r = Run::new()
            .connect_inet(NGINX, 1_000)
            .tcp_connect(NGINX, 20_000, ConnectOutcome::Established, 0, 19_000)
            .ack_drop(21_000)
            .reset_unused(NGINX, 22_000)
            .status(NGINX, 40_000, 502)
            .report();
        assert_eq!((r.total_5xx, r.explained), (1, 1));
        assert_eq!(kinds(&r), vec![(VerdictKind::TcpAcceptQueueFull, 1)]);
        let p = &r.verdicts[0].proof;
        assert!(p.contains("reset right after the handshake") && p.contains("0 SYN + 1 ACK drops"), "{p}");
        assert!(p.contains("tcp_abort_on_overflow could not be read"), "nothing answered the sysctl: said so, not guessed: {p}");
        // No overflow seen at a listener here: a reset, not blamed on a queue.
        let r = Run::new()
            .connect_inet(NGINX, 1_000)
            .tcp_connect(NGINX, 20_000, ConnectOutcome::Established, 0, 19_000)
            .reset_unused(NGINX, 22_000)
            .status(NGINX, 40_000, 502)
            .report();
        assert_eq!(kinds(&r), vec![(VerdictKind::ConnectError, 1)]);
        assert!(r.verdicts[0].proof.contains("reset the connection right after the TCP handshake"), "{}", r.verdicts[0].proof);
        // A reset no 502 followed (nginx tried another server) is absorbed under its own name.
        let r = Run::new().connect_inet(NGINX, 1_000).reset_unused(NGINX, 22_000).report();
        assert_eq!(r.absorbed.get("connect_reset"), Some(&1));
    }

    #[test]
    fn a_retried_connect_failure_is_absorbed_and_a_later_502_without_connect_is_the_group_down() {
        use crate::nginx::config::{UpstreamGroup, UpstreamServer};
        // nginx: connect() EAGAIN, retried at once on the next server (which worked: 200), then
        // a 502 written without any connect() (every server out: "no live upstreams").
        let mut run = Run::new();
        run.connect(NGINX, 1_000, -(libc::EAGAIN as i64)).connect(NGINX, 2_000, 0).status(NGINX, 500_000_000, 502);
        run.0.finish(Default::default).unwrap();
        let server = UpstreamServer { addr: "unix:/run/app.sock".into(), max_fails: 1, fail_timeout_s: 10.0, backup: false, down: false };
        let groups = vec![UpstreamGroup { name: "app".into(), servers: vec![server], shared: false }];
        let d = crate::nginx::Discovery { upstream_groups: groups, ..Default::default() };
        let r = report::build(&run.0.view(), &d, &[], &[]);
        assert_eq!(r.absorbed.get("connect_eagain"), Some(&1), "the retried failure is absorbed, not the 502's cause");
        assert_eq!((r.total_5xx, r.explained), (1, 1));
        assert_eq!(kinds(&r), vec![(VerdictKind::NoLiveUpstreams, 1)]);
        let v = &r.verdicts[0];
        assert_eq!(v.target, "upstream app");
        assert!(v.proof.contains("unix:/run/app.sock: 1 × connect_eagain (listen_queue_full)"), "{}", v.proof);
        // Without the group in nginx's config, the same 502 stays unexplained.
        let r = report::build(&run.0.view(), &crate::nginx::Discovery::default(), &[], &[]);
        assert_eq!((r.explained, r.unexplained.len()), (0, 1));
    }

    #[test]
    fn connects_delayed_by_syn_drops_are_near_misses_and_the_abandoned_ones_504s() {
        let r = Run::new()
            .tcp_connect(NGINX, 2_000_000_000, ConnectOutcome::Established, 0, 50_000)
            .tcp_connect(NGINX, 3_000_000_000, ConnectOutcome::Established, 1, 1_003_000_000)
            .tcp_connect(NGINX, 4_000_000_000, ConnectOutcome::Established, 2, 3_004_000_000)
            .tcp_connect(NGINX, 5_000_000_000, ConnectOutcome::Abandoned, 1, 1_000_000_000)
            .status(NGINX, 5_000_100_000, 504)
            .report();
        assert_eq!(kinds(&r), vec![(VerdictKind::ConnectTimeout, 1)]);
        assert_eq!(r.near_misses.len(), 1);
        let m = &r.near_misses[0];
        assert_eq!((m.target.as_str(), m.count), ("10.250.0.2:8000", 2), "the delayed connects that completed, not the fast or the abandoned one");
        assert!(m.proof.contains("not on this host"), "{}", m.proof);
    }

    #[test]
    fn a_500_right_after_the_master_killed_its_worker_is_the_app_servers_own_timeout() {
        use crate::host::record::Record;
        use serde_json::json;
        let answer = |call: &str, args: &str, value| Record::Answer { call: call.into(), args: args.into(), value };
        let app = crate::host::appserver::recognise(
            55,
            "gunicorn",
            &["gunicorn".into(), "--timeout".into(), "1".into(), "app:app".into()],
            std::path::Path::new("/"),
            &|_: &std::path::Path| None,
        );
        let answers = [
            answer("listener_for", "unix:/run/app.sock", json!({"inode": 5, "queue_len": 0, "queue_max": 16})),
            answer("owner_of", "5", json!({"pid": 55, "comm": "gunicorn", "sharers": 1})),
            answer("children", "55", json!([101])),
            answer("app_server", "55", serde_json::to_value(&app).unwrap()),
        ];
        let mut run = Run(Session::new(Env::replay(&answers), Timebase::with_offset_ns(0), Vec::new(), Box::new(Quiet), 16, false));
        run.connect(NGINX, 1_000, 0);
        let sig = tracer_common::SignalEvent {
            hdr: hdr(kind::SIGNAL, 55, 1_000_000_000),
            sig: libc::SIGABRT,
            target_pid: 101,
            target_comm: *b"gunicorn\0\0\0\0\0\0\0\0",
            code: 0,
            result: 0,
        };
        run.feed(raw(&sig));
        run.status(NGINX, 1_200_000_000, 500);
        run.feed(raw(&tracer_common::ExitEvent { hdr: hdr(kind::EXIT, 101, 1_300_000_000) }));
        run.status(NGINX, 9_000_000_000, 500); // long after: not this kill's answer
        let r = run.report();
        assert_eq!((r.total_5xx, r.other_5xx.get(&500)), (0, Some(&2)));
        assert_eq!(r.near_misses.len(), 1, "{:?}", r.near_misses);
        let m = &r.near_misses[0];
        assert_eq!((m.kind.as_str(), m.count, m.target.as_str()), ("app_server_timeout", 1, "unix:/run/app.sock"));
        assert!(m.proof.contains("SIGABRT") && m.proof.contains("pid 55)"), "{}", m.proof);
        assert!(m.fix.contains("--timeout 1 (command line)"), "{}", m.fix);
    }

    #[test]
    fn the_plotted_series_sum_to_the_reports_counts() {
        let mut run = Run::new();
        run.0.keep_history();
        for i in 0..10u64 {
            let ts = 1_000_000_000 + i * 300_000_000;
            if i % 3 == 0 {
                run.connect(NGINX, ts, -(libc::EAGAIN as i64)).status(NGINX, ts + 1_000, 502);
            } else {
                run.connect(NGINX, ts, 0);
                let req = tracer_common::RequestEvent {
                    hdr: hdr(kind::REQUEST, NGINX, ts + 5_000_000),
                    sk: 1,
                    start_ns: ts + 10_000,
                    first_byte_ns: ts + 2_000_000,
                    last_byte_ns: ts + 5_000_000,
                    idle_before_ns: 0,
                    bytes_sent: 10,
                    bytes_recv: 20,
                    seq: 1,
                    end: 2,
                    fd: FD,
                    family: libc::AF_UNIX as u16,
                    _pad: 0,
                };
                run.feed(raw(&req));
            }
        }
        let r = run.report();
        let s = r.series.as_ref().expect("series with the history kept");
        let u = &r.upstreams[0];
        let p = &s.upstreams[0];
        let sum = |v: &Vec<(f64, f64)>| v.iter().map(|x| x.1).sum::<f64>() as u64;
        assert_eq!((sum(&p.connects), sum(&p.failures), sum(&p.completed)), (u.connects, u.failed_connects, u.requests));
        assert_eq!(p.fivexx.values().map(sum).sum::<u64>(), u.status_502 + u.status_504);
        assert_eq!((u.connects, u.failed_connects, u.requests, u.status_502), (10, 4, 6, 4));
    }

    fn kinds(r: &Report) -> Vec<(VerdictKind, u64)> {
        r.verdicts.iter().map(|v| (v.kind, v.count)).collect()
    }

    #[test]
    fn a_close_just_before_the_status_line_explains_it() {
        let r = Run::new().connect(NGINX, 1_000, 0).close(NGINX, 2_000, CloseClass::Premature, CloseHow::Eof, 1).status(NGINX, 2_500, 502).report();
        assert_eq!((r.total_5xx, r.explained), (1, 1));
        assert_eq!(kinds(&r), vec![(VerdictKind::UpstreamClosed, 1)], "no worker death seen: not blamed on one");
        assert_eq!(r.verdicts[0].target, "unix:/run/app.sock");
        assert!(r.absorbed.is_empty());
    }

    #[test]
    fn a_status_line_before_any_cause_is_unexplained_never_guessed() {
        let r = Run::new().connect(NGINX, 1_000, 0).status(NGINX, 1_500, 502).close(NGINX, 2_000, CloseClass::Premature, CloseHow::Eof, 1).report();
        assert_eq!((r.total_5xx, r.explained, r.unexplained.len()), (1, 0, 1));
        assert_eq!(r.absorbed.get("premature_close"), Some(&1), "the later close had no status line after it");
    }

    #[test]
    fn reuse_after_the_peers_fin_is_the_keepalive_race() {
        let r =
            Run::new().connect(NGINX, 1_000, 0).close(NGINX, 2_000, CloseClass::KeepaliveRace, CloseHow::Eof, 2).status(NGINX, 2_100, 502).report();
        assert_eq!(kinds(&r), vec![(VerdictKind::KeepaliveTimeoutMismatch, 1)]);
        assert!(r.verdicts[0].proof.contains("~1.0 s idle"), "{}", r.verdicts[0].proof);
    }

    #[test]
    fn a_reset_during_send_is_joined_like_an_eof() {
        let r = Run::new()
            .connect(NGINX, 1_000, 0)
            .close(NGINX, 2_000, CloseClass::Premature, CloseHow::SendFailed, 1)
            .status(NGINX, 2_100, 502)
            .report();
        assert_eq!(kinds(&r), vec![(VerdictKind::UpstreamClosed, 1)]);
    }

    #[test]
    fn another_workers_cause_does_not_explain_a_status() {
        let r =
            Run::new().connect(NGINX, 1_000, 0).close(NGINX, 2_000, CloseClass::Premature, CloseHow::Eof, 1).status(NGINX + 1, 2_100, 502).report();
        assert_eq!((r.explained, r.unexplained.len()), (0, 1));
    }

    #[test]
    fn a_504_is_not_explained_by_a_502_cause_and_vice_versa() {
        let r = Run::new().connect(NGINX, 1_000, -(libc::EAGAIN as i64)).status(NGINX, 1_100, 504).report();
        assert_eq!((r.total_5xx, r.explained), (1, 0));
        assert_eq!(r.absorbed.get("connect_eagain"), Some(&1));
        let r =
            Run::new().connect(NGINX, 1_900, 0).close(NGINX, 2_000, CloseClass::ProxyAbort, CloseHow::Local, 1).status(NGINX, 2_100, 502).report();
        assert_eq!((r.total_5xx, r.explained), (1, 0));
        assert_eq!(r.absorbed.get("proxy_abort"), Some(&1));
        let r = Run::new()
            .connect(NGINX, 1_000, -(libc::EAGAIN as i64))
            .status(NGINX, 1_100, 502)
            .connect(NGINX, 1_900, 0)
            .close(NGINX, 2_000, CloseClass::ProxyAbort, CloseHow::Local, 1)
            .status(NGINX, 2_100, 504)
            .report();
        assert_eq!(kinds(&r), vec![(VerdictKind::ListenQueueFull, 1), (VerdictKind::ProxyTimeout, 1)]);
    }

    #[test]
    fn a_cause_older_than_the_join_window_is_absorbed() {
        let r = Run::new().connect(NGINX, 1_000, -(libc::EAGAIN as i64)).status(NGINX, 3_000_001_000, 502).report();
        assert_eq!((r.explained, r.unexplained.len()), (0, 1));
        assert_eq!(r.absorbed.get("connect_eagain"), Some(&1));
    }
}
