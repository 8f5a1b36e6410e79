//! TCP state per upstream target (connect outcome, latency, SYN retransmits) and per local
//! listener (final-ACK drops seen in the kernel, SYN drops inferred from the connect side, how
//! long connections waited in the accept queue, the queue as sampled while overflowing).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use hdrhistogram::Histogram;
use tracer_common::tcp::ConnectOutcome;

use super::ListenerView;
use crate::kernel::events::TcpConnect;
use crate::state::cause::{Cause, CauseKind};
use crate::state::lookups::Lookups;
use tracer_common::{AcceptEvent, ListenOverflowEvent};

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("static bounds")
}

/// Connect attempts to one upstream ip:port.
#[derive(Clone, Debug)]
pub struct TcpTarget {
    pub attempts: u64,
    pub established: u64,
    /// RST in SYN_SENT: nothing listening.
    pub refused: u64,
    /// The caller gave up on the connect (proxy_connect_timeout) or SYN retries ran out: closed
    /// in SYN_SENT, or closed unused just as it became ESTABLISHED (see `late`).
    pub abandoned: u64,
    /// Of `abandoned`: the handshake completed, but the caller closed it without sending a byte
    /// (its connect timer fired in the same instant). Counted in `latency_ns`, not `established`.
    pub late: u64,
    /// Established, then reset by the peer before the first request (tcp_abort_on_overflow at
    /// a full accept queue). Still counted in `established`.
    pub reset_unused: u64,
    pub syn_retransmits: u64,
    /// Attempts that needed at least one SYN retransmit (≥ 1 s on Linux).
    pub delayed: u64,
    /// SYN_SENT→ESTABLISHED, every attempt that got there (`established` + `late`).
    pub latency_ns: Histogram<u64>,
    /// SYN_SENT→ESTABLISHED of the attempts that got there only after a SYN retransmit.
    pub delayed_latency_ns: Histogram<u64>,
}

impl TcpTarget {
    fn new() -> TcpTarget {
        TcpTarget {
            attempts: 0,
            established: 0,
            refused: 0,
            abandoned: 0,
            late: 0,
            reset_unused: 0,
            syn_retransmits: 0,
            delayed: 0,
            latency_ns: histogram(),
            delayed_latency_ns: histogram(),
        }
    }

    fn record(&mut self, c: &TcpConnect) {
        self.attempts += 1;
        self.syn_retransmits += c.syn_retransmits as u64;
        if c.syn_retransmits > 0 {
            self.delayed += 1;
        }
        match c.outcome {
            ConnectOutcome::Established => {
                self.established += 1;
                let _ = self.latency_ns.record(c.latency_ns.max(1));
                if c.syn_retransmits > 0 {
                    let _ = self.delayed_latency_ns.record(c.latency_ns.max(1));
                }
            }
            ConnectOutcome::Refused => self.refused += 1,
            ConnectOutcome::Abandoned => self.abandoned += 1,
        }
    }

    /// Attempts that completed only after a SYN retransmit and were then used: a connect timeout
    /// away from a 504. (An attempt given up as it completed — `late` — had its SYN retransmitted
    /// at the same instant the caller's timer fired, so it is taken off.)
    pub fn delayed_completed(&self) -> u64 {
        self.delayed_latency_ns.len().saturating_sub(self.late)
    }

    /// An attempt recorded as established was closed unused: the caller had given up on it.
    fn given_up_late(&mut self) {
        self.established = self.established.saturating_sub(1);
        self.abandoned += 1;
        self.late += 1;
    }
}

/// A local listener: (is IPv6, port). Listener sockets are told apart by port and family; the
/// address comes from sock_diag.
pub type ListenerKey = (bool, u16);

#[derive(Clone, Debug)]
pub struct ListenerStats {
    pub key: ListenerKey,
    /// Bound address (from sock_diag), once known.
    pub addr: Option<SocketAddr>,
    /// Final ACKs dropped at a full accept queue (kfree_skb TCP_LISTEN_OVERFLOW).
    pub ack_drops: u64,
    /// SYNs dropped at a full accept queue, inferred from traced connects to this listener:
    /// every SYN retransmit means the previous SYN was dropped, and an attempt abandoned in
    /// SYN_SENT lost its last SYN too. Exact on loopback, where nothing else drops SYNs.
    pub syn_drops: u64,
    /// Traced connects to this listener (and their outcome / latency, as for targets).
    pub connects: TcpTarget,
    pub accepts: u64,
    /// Established → accept() returned.
    pub accept_wait_ns: Histogram<u64>,
    pub view: Option<ListenerView>,
    /// `net.ipv4.tcp_abort_on_overflow` in the listener's network namespace (read when it was
    /// sampled): with 1, a final ACK the full queue has no room for is answered with a RST.
    pub abort_on_overflow: Option<bool>,
    pub peak_queue_len: u32,
    pub sampled_ns: Option<u64>,
    pub dirty: bool,
}

impl ListenerStats {
    fn new(key: ListenerKey) -> ListenerStats {
        ListenerStats {
            key,
            addr: None,
            ack_drops: 0,
            syn_drops: 0,
            connects: TcpTarget::new(),
            accepts: 0,
            accept_wait_ns: histogram(),
            view: None,
            abort_on_overflow: None,
            peak_queue_len: 0,
            sampled_ns: None,
            dirty: true,
        }
    }

    pub fn overflowing(&self) -> bool {
        self.ack_drops + self.syn_drops > 0
    }

    /// `127.0.0.1:18000`, or `*:18000` / `[::]:18000`-style when the address is not known yet.
    pub fn name(&self) -> String {
        match self.addr {
            Some(a) => a.to_string(),
            None if self.key.0 => format!("[::]:{}", self.key.1),
            None => format!("*:{}", self.key.1),
        }
    }
}

pub struct TcpStats {
    pub targets: BTreeMap<SocketAddr, TcpTarget>,
    pub listeners: BTreeMap<ListenerKey, ListenerStats>,
    max_entries: usize,
    pub untracked: u64,
}

pub fn key_of(a: &SocketAddr) -> ListenerKey {
    (a.is_ipv6(), a.port())
}

impl TcpStats {
    pub fn new(max_entries: usize) -> TcpStats {
        TcpStats { targets: BTreeMap::new(), listeners: BTreeMap::new(), max_entries, untracked: 0 }
    }

    fn listener(&mut self, key: ListenerKey) -> Option<&mut ListenerStats> {
        if !self.listeners.contains_key(&key) && self.listeners.len() >= self.max_entries {
            self.untracked += 1;
            return None;
        }
        Some(self.listeners.entry(key).or_insert_with(|| ListenerStats::new(key)))
    }

    /// Account a connect attempt; `local_listener` says whether its target is a listener on this
    /// host (then its SYN drops are attributed to it).
    pub fn record_connect(&mut self, c: &TcpConnect, local_listener: bool) {
        if self.targets.contains_key(&c.remote) || self.targets.len() < self.max_entries {
            self.targets.entry(c.remote).or_insert_with(TcpTarget::new).record(c);
        } else {
            self.untracked += 1;
        }
        if !local_listener {
            return;
        }
        let lost_last_syn = c.outcome == ConnectOutcome::Abandoned;
        if let Some(l) = self.listener(key_of(&c.remote)) {
            l.connects.record(c);
            l.syn_drops += c.syn_retransmits as u64 + lost_last_syn as u64;
            l.dirty = true;
        }
    }

    /// A connect recorded as established to `remote` was closed unused (`close::UNUSED`): it
    /// becomes abandoned. Its last SYN was answered, so no SYN drop is added.
    pub fn record_given_up_late(&mut self, remote: SocketAddr, local_listener: bool) {
        if let Some(t) = self.targets.get_mut(&remote) {
            t.given_up_late();
        }
        if let Some(l) = self.listeners.get_mut(&key_of(&remote)).filter(|_| local_listener) {
            l.connects.given_up_late();
            l.dirty = true;
        }
    }

    /// A connect recorded as established to `remote` was reset before its first request.
    pub fn record_reset_unused(&mut self, remote: SocketAddr, local_listener: bool) {
        if let Some(t) = self.targets.get_mut(&remote) {
            t.reset_unused += 1;
        }
        if let Some(l) = self.listeners.get_mut(&key_of(&remote)).filter(|_| local_listener) {
            l.connects.reset_unused += 1;
            l.dirty = true;
        }
    }

    pub fn record_ack_drop(&mut self, key: ListenerKey) {
        if let Some(l) = self.listener(key) {
            l.ack_drops += 1;
            l.dirty = true;
        }
    }

    pub fn record_accept(&mut self, key: ListenerKey, addr: SocketAddr, wait_ns: u64) {
        if let Some(l) = self.listener(key) {
            l.addr.get_or_insert(addr);
            l.accepts += 1;
            let _ = l.accept_wait_ns.record(wait_ns.max(1));
            l.dirty = true;
        }
    }

    /// Whether `key`'s queue should be sampled at `now_ns` (overflowing, rate-limited).
    pub fn wants_sample(&self, key: ListenerKey, now_ns: u64) -> bool {
        self.listeners
            .get(&key)
            .is_some_and(|l| l.overflowing() && l.sampled_ns.is_none_or(|s| now_ns.saturating_sub(s) >= super::connects::SAMPLE_EVERY_NS))
    }

    pub fn record_sample(&mut self, key: ListenerKey, now_ns: u64, addr: SocketAddr, view: ListenerView) {
        if let Some(l) = self.listeners.get_mut(&key) {
            l.sampled_ns = Some(now_ns);
            l.addr = Some(addr);
            l.peak_queue_len = l.peak_queue_len.max(view.listener.queue_len);
            l.view = Some(view);
            l.dirty = true;
        }
    }

    /// A TCP connect attempt left SYN_SENT: account it (to its listener too, when that is on
    /// this host, sampling the queue while it overflows) and name its cause if it failed.
    pub fn on_connect(&mut self, c: &TcpConnect, host: &mut Lookups) -> Option<Cause> {
        let listener = host.local_listener(c.remote);
        self.record_connect(c, listener.is_some());
        if let Some(addr) = listener {
            self.sample(key_of(&c.remote), addr, host);
        }
        let kind = match c.outcome {
            ConnectOutcome::Refused => CauseKind::TcpRefused,
            ConnectOutcome::Abandoned => CauseKind::ConnectTimeout,
            ConnectOutcome::Established => return None,
        };
        Some(Cause {
            ts_ns: c.ts_ns,
            pid: c.pid,
            kind,
            target: Some(crate::kernel::sockaddr::Target::Inet(c.remote)),
            age_ns: c.latency_ns,
            idle_ns: 0,
        })
    }

    /// A final ACK dropped at a full accept queue.
    pub fn on_ack_drop(&mut self, o: &ListenOverflowEvent, host: &mut Lookups) {
        let v6 = o.family == libc::AF_INET6 as u16;
        let key = (v6, o.port);
        self.record_ack_drop(key);
        let ip: std::net::IpAddr = if v6 { std::net::Ipv6Addr::UNSPECIFIED.into() } else { o.addr4.into() };
        self.sample(key, SocketAddr::new(ip, o.port), host);
    }

    pub fn on_accept(&mut self, a: &AcceptEvent) {
        let local = SocketAddr::new(crate::kernel::events::ip(a.peer_family, &a.local_addr), a.local_port);
        self.record_accept(key_of(&local), local, a.wait_ns);
    }

    /// The proxy closed an established connect to `remote` unused (`close::UNUSED`): its connect
    /// timer had fired as the handshake completed, so the connect timed out.
    pub fn on_given_up_late(&mut self, remote: SocketAddr, ts_ns: u64, pid: u32, waited_ns: u64, host: &mut Lookups) -> Cause {
        let local = host.local_listener(remote).is_some();
        self.record_given_up_late(remote, local);
        let target = Some(crate::kernel::sockaddr::Target::Inet(remote));
        Cause { ts_ns, pid, kind: CauseKind::ConnectTimeout, target, age_ns: waited_ns, idle_ns: 0 }
    }

    /// An established connect to `remote` was reset before nginx sent its request: nginx answers
    /// 502 ("connect() failed (104: Connection reset by peer)").
    pub fn on_reset_unused(&mut self, remote: SocketAddr, ts_ns: u64, pid: u32, waited_ns: u64, host: &mut Lookups) -> Cause {
        let local = host.local_listener(remote);
        self.record_reset_unused(remote, local.is_some());
        if let Some(addr) = local {
            self.sample(key_of(&remote), addr, host);
        }
        let target = Some(crate::kernel::sockaddr::Target::Inet(remote));
        Cause { ts_ns, pid, kind: CauseKind::ConnectReset, target, age_ns: waited_ns, idle_ns: 0 }
    }

    /// Sample an overflowing listener's queue and owner (rate-limited).
    fn sample(&mut self, key: ListenerKey, addr: SocketAddr, host: &mut Lookups) {
        let now = host.now_ns();
        if !self.wants_sample(key, now) {
            return;
        }
        let Some((bound, l)) = host.env.tcp_listener_bound(addr) else { return };
        let prev = self.listeners.get(&key).and_then(|s| s.view.clone());
        let view = host.listener_view(l, prev.as_ref(), now);
        let owner = view.owner.as_ref().map(|o| o.pid);
        self.record_sample(key, now, bound, view);
        let abort = host.abort_on_overflow(owner);
        if let Some(l) = self.listeners.get_mut(&key) {
            l.abort_on_overflow = abort.or(l.abort_on_overflow);
        }
    }

    /// Listeners changed since the last call, marking them clean.
    pub fn take_dirty(&mut self) -> Vec<ListenerStats> {
        super::take_dirty(self.listeners.values_mut(), |l| &mut l.dirty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(port: u16, outcome: ConnectOutcome, retrans: u32) -> TcpConnect {
        TcpConnect {
            ts_ns: 1,
            pid: 1,
            comm: "nginx".into(),
            local: "127.0.0.1:40000".parse().unwrap(),
            remote: SocketAddr::from(([127, 0, 0, 1], port)),
            start_ns: 0,
            latency_ns: 1_000_000,
            outcome,
            syn_retransmits: retrans,
        }
    }

    #[test]
    fn syn_drops_are_retransmits_plus_abandoned_attempts() {
        let mut s = TcpStats::new(16);
        s.record_connect(&attempt(18000, ConnectOutcome::Established, 0), true);
        s.record_connect(&attempt(18000, ConnectOutcome::Established, 2), true);
        s.record_connect(&attempt(18000, ConnectOutcome::Abandoned, 1), true);
        s.record_connect(&attempt(18001, ConnectOutcome::Refused, 0), false);
        s.record_ack_drop((false, 18000));
        let l = &s.listeners[&(false, 18000)];
        assert_eq!((l.syn_drops, l.ack_drops, l.connects.delayed, l.connects.abandoned), (4, 1, 2, 1));
        let t = &s.targets[&"127.0.0.1:18000".parse().unwrap()];
        assert_eq!((t.attempts, t.established, t.syn_retransmits), (3, 2, 3));
        assert_eq!(s.targets[&"127.0.0.1:18001".parse().unwrap()].refused, 1);
        assert!(!s.listeners.contains_key(&(false, 18001)), "remote targets are not listeners");
    }

    #[test]
    fn an_established_connect_closed_unused_was_given_up() {
        let mut s = TcpStats::new(16);
        let remote: SocketAddr = "127.0.0.1:18000".parse().unwrap();
        s.record_connect(&attempt(18000, ConnectOutcome::Established, 1), true);
        s.record_connect(&attempt(18000, ConnectOutcome::Established, 1), true);
        s.record_given_up_late(remote, true);
        let l = &s.listeners[&(false, 18000)];
        assert_eq!((l.connects.established, l.connects.abandoned, l.connects.late), (1, 1, 1));
        assert_eq!(l.syn_drops, 2, "the retransmitted SYNs were answered: only the first ones were dropped");
        assert_eq!(l.connects.latency_ns.len(), 2, "its connect latency is still a measured handshake");
        let t = &s.targets[&remote];
        assert_eq!((t.attempts, t.established, t.abandoned, t.late), (2, 1, 1, 1));
    }

    #[test]
    fn accept_wait_is_recorded_per_listener() {
        let mut s = TcpStats::new(16);
        s.record_accept((false, 18000), "127.0.0.1:18000".parse().unwrap(), 300_000_000);
        let l = &s.listeners[&(false, 18000)];
        assert_eq!(l.accepts, 1);
        assert_eq!(l.name(), "127.0.0.1:18000");
        assert!((l.accept_wait_ns.value_at_quantile(0.5) as f64 - 3e8).abs() < 3e5);
    }
}
