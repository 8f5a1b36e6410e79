//! The records `watch` emits. Field names are the stable JSON schema documented in the README:
//! add fields, never rename or repurpose one.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::host::timebase::Timebase;
use crate::kernel::errno;
use crate::kernel::events::{Connect, TcpConnect};
use crate::kernel::load::ProbeStatus;
use crate::kernel::source::Lost;
use crate::state::requests::{CutRequest, DeathCause, RequestStats};
use crate::state::tcp::{ListenerStats, TcpTarget};
use crate::state::{ListenerView, TargetStats};
use tracer_common::request::{CloseClass, CloseHow};
use tracer_common::tcp::ConnectOutcome;

/// `{"type":"connect_failed", ...}`: one failed connect().
#[derive(Clone, Debug, Serialize)]
pub struct ConnectFailed {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Unix time, seconds.
    pub time: f64,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub fd: i32,
    pub target: String,
    pub family: &'static str,
    pub errno: i32,
    pub error: String,
    pub meaning: &'static str,
    pub duration_us: f64,
}

impl ConnectFailed {
    pub fn new(c: &Connect, tb: &Timebase) -> ConnectFailed {
        ConnectFailed {
            kind: "connect_failed",
            time: tb.unix_secs(c.ts_ns),
            pid: c.pid,
            tid: c.tid,
            comm: c.comm.clone(),
            fd: c.fd,
            target: c.target.to_string(),
            family: c.target.family(),
            errno: c.errno,
            error: errno::name(c.errno),
            meaning: errno::meaning(c.errno),
            duration_us: c.duration_ns as f64 / 1e3,
        }
    }
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ErrnoSummary {
    pub errno: i32,
    pub count: u64,
    /// Unix time of the first and last failure, seconds.
    pub first: f64,
    pub last: f64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ListenerSummary {
    /// Socket inode of the listener.
    pub inode: u32,
    /// Pending connections at the last sample.
    pub queue_len: u32,
    /// Largest queue length seen while sampling.
    pub peak_queue_len: u32,
    /// Effective backlog: min(listen() backlog, somaxconn).
    pub queue_max: u32,
    pub owner_pid: Option<u32>,
    pub owner_comm: Option<String>,
    /// Other processes sharing the listener (pre-fork workers).
    pub owner_sharers: Option<u32>,
    /// The backlog passed to listen(), and how we know it: "traced" (seen), "derived" (queue_max
    /// is below somaxconn so listen() got exactly that), "at_least" (capped at somaxconn).
    pub listen_backlog: Option<i64>,
    pub listen_backlog_source: Option<&'static str>,
    pub somaxconn: Option<u32>,
}

/// `{"type":"target", ...}`: the running totals for one upstream target.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TargetSummary {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// True on the summaries printed at exit.
    #[serde(rename = "final")]
    pub is_final: bool,
    pub target: String,
    pub family: &'static str,
    pub connects: u64,
    pub failed: u64,
    /// By errno name (EAGAIN, ENOENT, ...).
    pub errors: BTreeMap<String, ErrnoSummary>,
    pub connect_p50_us: f64,
    pub connect_p99_us: f64,
    pub connect_max_us: f64,
    /// None when no sample found a listener (socket missing, nothing listening).
    pub listener: Option<ListenerSummary>,
    /// TCP targets: what happened after connect() returned (None for unix targets).
    pub tcp: Option<TcpSummary>,
    /// Requests over connections to this target (None when none was seen).
    pub requests: Option<RequestSummary>,
}

/// Upstream requests to one target: latency and how connections ended.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RequestSummary {
    /// Requests that got at least one response byte.
    pub completed: u64,
    /// Request sent → first response byte.
    pub ttfb_p50_us: f64,
    pub ttfb_p90_us: f64,
    pub ttfb_p99_us: f64,
    pub ttfb_p999_us: f64,
    pub ttfb_max_us: f64,
    /// Request sent → last response byte.
    pub total_p50_us: f64,
    pub total_p90_us: f64,
    pub total_p99_us: f64,
    pub total_p999_us: f64,
    pub total_max_us: f64,
    /// Upstream closed while a request was outstanding (fresh connection).
    pub premature_closes: u64,
    /// Request sent on a reused connection the upstream had closed.
    pub keepalive_races: u64,
    /// The proxy closed while a request was outstanding (gave up: timeout).
    pub proxy_aborts: u64,
    /// Upstream closed an idle kept-alive connection (normal).
    pub idle_closes: u64,
}

impl RequestSummary {
    pub fn new(s: &RequestStats) -> RequestSummary {
        let q = |h: &hdrhistogram::Histogram<u64>, p: f64| us(h.value_at_quantile(p));
        RequestSummary {
            completed: s.completed,
            ttfb_p50_us: q(&s.ttfb_ns, 0.5),
            ttfb_p90_us: q(&s.ttfb_ns, 0.9),
            ttfb_p99_us: q(&s.ttfb_ns, 0.99),
            ttfb_p999_us: q(&s.ttfb_ns, 0.999),
            ttfb_max_us: us(s.ttfb_ns.max()),
            total_p50_us: q(&s.total_ns, 0.5),
            total_p90_us: q(&s.total_ns, 0.9),
            total_p99_us: q(&s.total_ns, 0.99),
            total_p999_us: q(&s.total_ns, 0.999),
            total_max_us: us(s.total_ns.max()),
            premature_closes: s.closes_of(CloseClass::Premature),
            keepalive_races: s.closes_of(CloseClass::KeepaliveRace),
            proxy_aborts: s.closes_of(CloseClass::ProxyAbort),
            idle_closes: s.closes_of(CloseClass::Idle),
        }
    }
}

/// The worker behind a cut request.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct WorkerDeath {
    pub pid: u32,
    pub comm: String,
    /// Fatal signal it received (None: it exited on its own, e.g. max-requests recycling).
    pub signal: Option<i32>,
    pub signal_name: Option<&'static str>,
    pub sender_pid: Option<u32>,
    pub sender_comm: Option<String>,
    pub exited: bool,
    /// "killed_by_master" (gunicorn timeout, uwsgi harakiri), "oom_kill", "killed" (another
    /// process), "exited" (no fatal signal: max-requests recycling, reload), "unknown".
    pub cause: DeathCause,
}

/// `{"type":"upstream_close", ...}`: a request the upstream cut short, or the proxy gave up on.
#[derive(Clone, Debug, Serialize)]
pub struct UpstreamClose {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time: f64,
    pub pid: u32,
    pub comm: String,
    pub fd: i32,
    /// `unix:/path`, `ip:port`, or null when the connection's connect() was not seen.
    pub target: Option<String>,
    /// "premature", "keepalive_race" or "proxy_abort".
    pub class: CloseClass,
    /// "eof", "reset", "send_failed" or "local".
    pub how: CloseHow,
    /// How long the request had been outstanding.
    pub request_age_ms: f64,
    /// Idle time of the connection before this request was sent on it (reuse).
    pub idle_before_ms: f64,
    /// Requests sent on the connection (1 = fresh connection).
    pub seq: u32,
    pub worker: Option<WorkerDeath>,
}

impl UpstreamClose {
    pub fn new(c: &CutRequest, tb: &Timebase) -> UpstreamClose {
        let e = &c.ev;
        UpstreamClose {
            kind: "upstream_close",
            time: tb.unix_secs(c.ts_ns),
            pid: c.pid,
            comm: c.comm.clone(),
            fd: e.fd,
            target: c.target.as_ref().map(|t| t.to_string()),
            class: e.class,
            how: e.how,
            request_age_ms: e.request_age_ns as f64 / 1e6,
            idle_before_ms: e.idle_ns as f64 / 1e6,
            seq: e.seq,
            worker: c.worker.as_ref().map(|d| WorkerDeath {
                pid: d.pid,
                comm: d.comm.clone(),
                signal: d.signal.as_ref().map(|s| s.0),
                signal_name: d.signal.as_ref().map(|s| errno::signal_name(s.0)),
                sender_pid: d.signal.as_ref().map(|s| s.1),
                sender_comm: d.signal.as_ref().map(|s| s.2.clone()),
                exited: d.exited,
                cause: d.cause,
            }),
        }
    }
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1e3
}

impl ListenerSummary {
    pub fn new(v: &ListenerView, peak_queue_len: u32) -> ListenerSummary {
        ListenerSummary {
            inode: v.listener.inode,
            queue_len: v.listener.queue_len,
            peak_queue_len: peak_queue_len.max(v.listener.queue_len),
            queue_max: v.listener.queue_max,
            owner_pid: v.owner.as_ref().map(|o| o.pid),
            owner_comm: v.owner.as_ref().map(|o| o.comm.clone()),
            owner_sharers: v.owner.as_ref().map(|o| o.sharers),
            listen_backlog: v.backlog.map(|b| b.value()),
            listen_backlog_source: v.backlog.map(|b| b.source()),
            somaxconn: v.somaxconn,
        }
    }
}

/// TCP connect attempts to one target or listener, after connect() returned.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TcpSummary {
    pub attempts: u64,
    pub established: u64,
    /// RST in SYN_SENT (nothing listening).
    pub refused: u64,
    /// The caller gave up (connect timeout) or SYN retries ran out: closed in SYN_SENT, or
    /// closed unused as the handshake completed (`abandoned_late`).
    pub abandoned: u64,
    /// Of `abandoned`: established in the kernel as the caller's connect timer fired; closed
    /// before a byte was sent.
    pub abandoned_late: u64,
    pub syn_retransmits: u64,
    /// Attempts that needed ≥ 1 SYN retransmit (≥ 1 s).
    pub delayed_connects: u64,
    /// SYN_SENT→ESTABLISHED (established and abandoned_late attempts).
    pub connect_latency_p50_us: f64,
    pub connect_latency_p99_us: f64,
    pub connect_latency_max_us: f64,
}

impl TcpSummary {
    pub fn new(t: &TcpTarget) -> TcpSummary {
        TcpSummary {
            attempts: t.attempts,
            established: t.established,
            refused: t.refused,
            abandoned: t.abandoned,
            abandoned_late: t.late,
            syn_retransmits: t.syn_retransmits,
            delayed_connects: t.delayed,
            connect_latency_p50_us: us(t.latency_ns.value_at_quantile(0.5)),
            connect_latency_p99_us: us(t.latency_ns.value_at_quantile(0.99)),
            connect_latency_max_us: us(t.latency_ns.max()),
        }
    }
}

/// `{"type":"tcp_connect", ...}`: one TCP connect attempt, when it left SYN_SENT.
#[derive(Clone, Debug, Serialize)]
pub struct TcpConnectRecord {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time: f64,
    pub pid: u32,
    pub comm: String,
    /// Local ip:port of the connection (the upstream sees this as the client).
    pub local: String,
    pub remote: String,
    /// "established", "refused" or "abandoned".
    pub outcome: ConnectOutcome,
    /// SYN_SENT → outcome.
    pub latency_us: f64,
    pub syn_retransmits: u32,
}

impl TcpConnectRecord {
    pub fn new(c: &TcpConnect, tb: &Timebase) -> TcpConnectRecord {
        TcpConnectRecord {
            kind: "tcp_connect",
            time: tb.unix_secs(c.ts_ns),
            pid: c.pid,
            comm: c.comm.clone(),
            local: c.local.to_string(),
            remote: c.remote.to_string(),
            outcome: c.outcome,
            latency_us: us(c.latency_ns),
            syn_retransmits: c.syn_retransmits,
        }
    }
}

/// `{"type":"tcp_listener", ...}`: a TCP listener on this host.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TcpListenerSummary {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(rename = "final")]
    pub is_final: bool,
    pub listener: String,
    pub family: &'static str,
    /// Final ACKs dropped at the full accept queue (seen in the kernel).
    pub ack_drops: u64,
    /// SYNs dropped at the full accept queue (inferred from traced connects: SYN retransmits +
    /// attempts abandoned in SYN_SENT).
    pub syn_drops: u64,
    /// Traced connects to this listener.
    pub connects: TcpSummary,
    pub accepts: u64,
    pub accept_wait_p50_us: f64,
    pub accept_wait_p99_us: f64,
    pub accept_wait_max_us: f64,
    /// Queue and owner as sampled while overflowing (None if never sampled).
    pub queue: Option<ListenerSummary>,
}

impl TcpListenerSummary {
    pub fn new(l: &ListenerStats, is_final: bool) -> TcpListenerSummary {
        TcpListenerSummary {
            kind: "tcp_listener",
            is_final,
            listener: l.name(),
            family: if l.key.0 { "ipv6" } else { "ipv4" },
            ack_drops: l.ack_drops,
            syn_drops: l.syn_drops,
            connects: TcpSummary::new(&l.connects),
            accepts: l.accepts,
            accept_wait_p50_us: us(l.accept_wait_ns.value_at_quantile(0.5)),
            accept_wait_p99_us: us(l.accept_wait_ns.value_at_quantile(0.99)),
            accept_wait_max_us: us(l.accept_wait_ns.max()),
            queue: l.view.as_ref().map(|v| ListenerSummary::new(v, l.peak_queue_len)),
        }
    }
}

impl TargetSummary {
    pub fn new(t: &TargetStats, tcp: Option<&TcpTarget>, requests: Option<&RequestStats>, tb: &Timebase, is_final: bool) -> TargetSummary {
        let errors = t
            .errors
            .iter()
            .map(|(&no, e)| {
                (errno::name(no), ErrnoSummary { errno: no, count: e.count, first: tb.unix_secs(e.first_ns), last: tb.unix_secs(e.last_ns) })
            })
            .collect();
        let listener = t.listener.as_ref().map(|v| ListenerSummary::new(v, t.peak_queue_len));
        TargetSummary {
            kind: "target",
            is_final,
            target: t.target.to_string(),
            family: t.target.family(),
            connects: t.connects,
            failed: t.failed(),
            errors,
            connect_p50_us: us(t.duration_ns.value_at_quantile(0.5)),
            connect_p99_us: us(t.duration_ns.value_at_quantile(0.99)),
            connect_max_us: us(t.duration_ns.max()),
            listener,
            tcp: tcp.map(TcpSummary::new),
            requests: requests.map(RequestSummary::new),
        }
    }
}

/// `{"type":"stats", ...}`: what the tracer saw and lost.
#[derive(Clone, Debug, Serialize)]
pub struct Stats {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(rename = "final")]
    pub is_final: bool,
    /// Events decoded from the ring buffer.
    pub events: u64,
    pub lost: Lost,
    /// connect()s to targets beyond the target cap (counted, not itemised).
    pub untracked_connects: u64,
    pub probes: Vec<ProbeStatus>,
    /// Node-wide TcpExt counters (nstat) since the tracer started: ListenOverflows, ListenDrops,
    /// TCPSynRetrans — the cross-check for the per-listener numbers.
    pub node_counters: BTreeMap<String, u64>,
}
