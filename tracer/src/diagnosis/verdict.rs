//! From joined 5xx to verdicts: one per root cause and upstream, with the numbers that prove it
//! and the fix. A 502/504 with no kernel cause is listed as unexplained, never guessed.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::diagnosis::join::{CauseKind, Status};
use crate::kernel::errno;
use crate::kernel::sockaddr::Target;
use crate::nginx::Discovery;
use crate::output::terminal::human_us;
use crate::state::requests::{Cause as DeathCause, CutRequest};
use crate::state::session::Session;

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Verdict {
    /// listen_queue_full, socket_missing, permission_denied, nothing_listening, connect_error,
    /// tcp_accept_queue_full, connect_timeout, worker_killed, worker_recycled,
    /// keepalive_timeout_mismatch, upstream_closed, proxy_timeout.
    pub kind: &'static str,
    pub target: String,
    /// 5xx this cause explains, by status.
    pub statuses: BTreeMap<u16, u64>,
    pub count: u64,
    /// All 502/504 nginx answered for requests to this target.
    pub target_total: u64,
    /// One sentence that states the cause with its numbers.
    pub proof: String,
    pub evidence: Vec<String>,
    pub fix: String,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Unexplained {
    pub time: f64,
    pub pid: u32,
    pub status: u16,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Report {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// 502/504 seen in the kernel (status lines nginx wrote).
    pub total_5xx: u64,
    pub explained: u64,
    pub verdicts: Vec<Verdict>,
    pub unexplained: Vec<Unexplained>,
    /// Other 5xx (not produced by an upstream failure nginx saw): passed through or internal.
    pub other_5xx: BTreeMap<u16, u64>,
    /// Upstream failures nginx absorbed (retried) without an error to the client.
    pub absorbed: BTreeMap<String, u64>,
    /// nginx's error log, counted by kind of upstream error, for comparison.
    pub error_log: BTreeMap<crate::nginx::ErrorKind, u64>,
    /// One row per upstream target.
    pub upstreams: Vec<UpstreamRow>,
    /// Every 502/504 with its time and cause (for the timeline).
    pub timeline: Vec<TimelineItem>,
    pub events: u64,
    pub lost: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct UpstreamRow {
    pub target: String,
    pub connects: u64,
    pub failed_connects: u64,
    pub requests: u64,
    pub ttfb_p99_ms: f64,
    pub status_502: u64,
    pub status_504: u64,
    pub causes: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TimelineItem {
    pub time: f64,
    pub status: u16,
    pub target: Option<String>,
    pub verdict: Option<&'static str>,
}

/// The cut request the kernel reported for this cause (same worker, same close time).
fn cut_for<'a>(s: &'a Session, pid: u32, ts_ns: u64) -> Option<&'a CutRequest> {
    s.requests.cut.iter().find(|c| c.pid == pid && c.ts_ns == ts_ns)
}

fn verdict_kind(s: &Session, st: &Status) -> &'static str {
    let c = st.cause.as_ref().expect("explained");
    match c.kind {
        CauseKind::ConnectError(e) if e == libc::EAGAIN => "listen_queue_full",
        CauseKind::ConnectError(e) if e == libc::ENOENT => "socket_missing",
        CauseKind::ConnectError(e) if e == libc::EACCES || e == libc::EPERM => "permission_denied",
        CauseKind::ConnectError(e) if e == libc::ECONNREFUSED => "nothing_listening",
        CauseKind::ConnectError(_) => "connect_error",
        CauseKind::TcpRefused => "nothing_listening",
        CauseKind::ConnectTimeout => {
            let full = c.target.as_ref().and_then(|t| match t {
                Target::Inet(a) => s.tcp.listeners.get(&crate::state::tcp::key_of(a)),
                _ => None,
            });
            if full.is_some_and(|l| l.overflowing()) {
                "tcp_accept_queue_full"
            } else {
                "connect_timeout"
            }
        }
        CauseKind::Premature | CauseKind::KeepaliveRace => {
            let death = cut_for(s, c.pid, c.ts_ns).and_then(|cut| cut.worker.as_ref()).map(|d| d.cause);
            match (c.kind, death) {
                (_, Some(DeathCause::Exited)) => "worker_recycled",
                (_, Some(DeathCause::KilledByMaster | DeathCause::OomKill | DeathCause::Killed)) => "worker_killed",
                (CauseKind::KeepaliveRace, _) => "keepalive_timeout_mismatch",
                _ => "upstream_closed",
            }
        }
        CauseKind::ProxyAbort => "proxy_timeout",
    }
}

fn median(mut v: Vec<u64>) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[v.len() / 2]
}

/// `(gunicorn pid 12, listen(16), somaxconn 4096)` from a listener view.
fn owner_text(v: &crate::state::ListenerView) -> String {
    let mut p = Vec::new();
    if let Some(o) = &v.owner {
        p.push(format!("{} pid {}", o.comm, o.pid));
    }
    if let Some(b) = v.backlog {
        p.push(if b.source() == "at_least" { format!("listen(≥{})", b.value()) } else { format!("listen({})", b.value()) });
    }
    if let Some(m) = v.somaxconn {
        p.push(format!("somaxconn {m}"));
    }
    p.join(", ")
}

fn build_verdict(s: &Session, nginx: &Discovery, kind: &'static str, target: &str, items: &[&Status], target_total: u64) -> Verdict {
    let count = items.len() as u64;
    let mut statuses = BTreeMap::new();
    for st in items {
        *statuses.entry(st.status).or_insert(0) += 1;
    }
    // "502s", or "5xx (3 × 502 + 1 × 504)" when mixed.
    let status_text = if statuses.len() == 1 {
        format!("{}s", statuses.keys().next().expect("one"))
    } else {
        format!("5xx ({})", statuses.iter().map(|(s, n)| format!("{n} × {s}")).collect::<Vec<_>>().join(" + "))
    };
    let causes: Vec<_> = items.iter().filter_map(|st| st.cause.as_ref()).collect();
    let age = median(causes.iter().map(|c| c.age_ns).collect()) as f64 / 1e3;
    let idle = median(causes.iter().map(|c| c.idle_ns).collect()) as f64 / 1e3;
    let target_stats = s.stats.targets().find(|t| t.target.to_string() == target);
    let mut evidence = Vec::new();
    let (proof, fix) = match kind {
        "listen_queue_full" => {
            let view = target_stats.and_then(|t| t.listener.as_ref());
            let peak = target_stats.map_or(0, |t| t.peak_queue_len);
            let burst = target_stats.map_or(0, |t| t.peak_burst);
            let qmax = view.map_or(0, |v| v.listener.queue_max);
            let rec = (burst.max(qmax * 2).max(128)).next_power_of_two();
            if let Some(v) = view {
                evidence.push(format!("listener inode {}, {} waiting at the sample (max {})", v.listener.inode, peak, qmax));
            }
            evidence.push(format!("peak burst: {burst} connect() calls within 100 ms"));
            (
                format!(
                    "{count}/{target_total} {status_text} on {target} were connect() EAGAIN: its listen queue was full — max {qmax} ({}), {peak} waiting when sampled, peak burst {burst} connects in 100 ms.",
                    view.map(owner_text).unwrap_or_else(|| "owner unknown".into())
                ),
                format!("Raise the app server's backlog (gunicorn --backlog, uwsgi --listen) to ≥ {rec}, and net.core.somaxconn if it is lower; or add workers so the queue drains faster."),
            )
        }
        "socket_missing" => (
            format!("{count}/{target_total} {status_text} on {target}: connect() failed with ENOENT — the socket file does not exist: the app server is down or bound elsewhere."),
            "Start the app server, or make proxy_pass and the app server's bind use the same path.".into(),
        ),
        "permission_denied" => (
            format!("{count}/{target_total} {status_text} on {target}: connect() failed with EACCES — nginx's worker user may not connect to the socket file."),
            "Let nginx's worker user connect: set the socket's mode/group (gunicorn --umask 007 with a shared group, uwsgi --chmod-socket=660 --chown-socket), or change nginx's `user`.".into(),
        ),
        "nothing_listening" => (
            format!("{count}/{target_total} {status_text} on {target}: the connect was refused — nothing listens there."),
            format!("Start the upstream on {target}, or correct proxy_pass."),
        ),
        "connect_error" => {
            let names: Vec<String> = causes
                .iter()
                .filter_map(|c| if let CauseKind::ConnectError(e) = c.kind { Some(errno::name(e)) } else { None })
                .collect();
            (
                format!("{count}/{target_total} {status_text} on {target}: connect() failed ({}).", names.first().cloned().unwrap_or_default()),
                "See the errno: EADDRNOTAVAIL means no free local ports (use upstream keepalive, widen ip_local_port_range).".into(),
            )
        }
        "tcp_accept_queue_full" => {
            let l = causes.first().and_then(|c| match &c.target {
                Some(Target::Inet(a)) => s.tcp.listeners.get(&crate::state::tcp::key_of(a)),
                _ => None,
            });
            let (syn, ack) = l.map_or((0, 0), |l| (l.syn_drops, l.ack_drops));
            let q = l.and_then(|l| l.view.as_ref());
            let ct = nginx.proxy_connect_timeout_s.unwrap_or(60.0);
            evidence.push(format!("{syn} SYNs and {ack} final ACKs dropped at the listener while tracing"));
            (
                format!(
                    "{count}/{target_total} {status_text} on {target} were connects abandoned after proxy_connect_timeout ({ct} s) while its accept queue was full: {syn} SYN + {ack} ACK drops, queue max {} ({}).",
                    q.map_or(0, |v| v.listener.queue_max),
                    q.map(owner_text).unwrap_or_else(|| "owner unknown".into())
                ),
                "Raise the listener's backlog (and net.core.somaxconn if lower) or add workers. A dropped SYN is retried only after 1 s, so a proxy_connect_timeout at or below that turns every drop into a 504.".into(),
            )
        }
        "connect_timeout" => (
            format!("{count}/{target_total} {status_text} on {target}: the TCP connect got no answer within proxy_connect_timeout."),
            "Check that the upstream host is up and its listener is not overflowing (run the tracer on that host).".into(),
        ),
        "worker_killed" | "worker_recycled" | "upstream_closed" => {
            let mut by: BTreeMap<String, u64> = BTreeMap::new();
            for c in &causes {
                if let Some(d) = cut_for(s, c.pid, c.ts_ns).and_then(|cut| cut.worker.as_ref()) {
                    let who = match &d.signal {
                        Some((sig, pid, comm)) => format!(
                            "worker {} killed by {} from {comm} pid {pid} ({})",
                            d.comm,
                            crate::output::records::signal_name(*sig),
                            d.cause.name()
                        ),
                        None => format!("worker {} exited with no fatal signal", d.comm),
                    };
                    *by.entry(who).or_default() += 1;
                }
            }
            evidence.extend(by.iter().map(|(w, n)| format!("{n} × {w}")));
            let races = causes.iter().filter(|c| c.kind == CauseKind::KeepaliveRace).count();
            if races > 0 {
                evidence.push(format!("{races} of them on reused keep-alive connections"));
            }
            let dominant = by.keys().next().cloned().unwrap_or_default();
            let prt = nginx.proxy_read_timeout_s.map_or("its proxy_read_timeout (default 60 s)".to_string(), |t| format!("{t} s (proxy_read_timeout)"));
            match kind {
                "worker_killed" => (
                    format!("{count}/{target_total} {status_text} on {target}: the upstream closed requests {} old because their worker was killed ({dominant}).", human_us(age)),
                    if dominant.contains("killed_by_master") {
                        format!("The app server's own timeout (gunicorn --timeout, uwsgi --harakiri) kills requests that take longer; nginx would wait {prt}. Raise the app server's timeout or make those requests faster.")
                    } else if dominant.contains("oom_kill") {
                        "The OOM killer ended the workers: give them more memory or lower their count.".into()
                    } else {
                        "Something else signals the workers: find out why (the sender is named above).".into()
                    },
                ),
                "worker_recycled" => (
                    format!("{count}/{target_total} {status_text} on {target}: requests went to workers that were exiting without a fatal signal (recycled: max-requests or reload)."),
                    "Recycle without cutting requests: turn off upstream keep-alive to this app server, or raise / spread max-requests (gunicorn --max-requests-jitter, uwsgi --max-requests-delta).".into(),
                ),
                _ => (
                    format!("{count}/{target_total} {status_text} on {target}: the upstream closed the connection with the request outstanding ({} old); no worker death was seen.", human_us(age)),
                    format!("Check the app server for requests cut at ~{}: a timeout, a crash, or a proxy in between.", human_us(age)),
                ),
            }
        }
        "keepalive_timeout_mismatch" => {
            let ka = nginx.keepalive_timeout_s();
            (
                format!(
                    "{count}/{target_total} {status_text} on {target} were requests sent on reused connections the upstream had closed after ~{:.1} s idle; nginx keeps idle upstream connections up to {ka} s.",
                    idle / 1e6
                ),
                format!("Make the upstream's keep-alive timeout longer than nginx's upstream keepalive_timeout ({ka} s), or set keepalive_timeout below {:.1} s in nginx's upstream block.", idle / 1e6),
            )
        }
        _ => (
            format!("{count}/{target_total} {status_text} on {target}: nginx gave up after {} (its proxy_read_timeout) while the upstream was still working.", human_us(age)),
            "Raise proxy_read_timeout above the slowest legitimate response, or make the app answer faster (and keep the app server's own timeout below nginx's).".into(),
        ),
    };
    Verdict { kind, target: target.to_string(), statuses, count, target_total, proof, evidence, fix }
}

/// Build the report from a finished session; `error_lines` are nginx's error-log lines since start.
pub fn build(s: &Session, nginx: &Discovery, error_lines: &[String]) -> Report {
    let statuses = &s.correlator.statuses;
    let target_of =
        |st: &Status| st.cause.as_ref().and_then(|c| c.target.as_ref()).map(|t| t.to_string()).unwrap_or_else(|| "(unknown upstream)".into());
    let mut per_target_total: BTreeMap<String, u64> = BTreeMap::new();
    for st in statuses.iter().filter(|st| st.cause.is_some()) {
        *per_target_total.entry(target_of(st)).or_default() += 1;
    }
    let mut groups: BTreeMap<(&'static str, String), Vec<&Status>> = BTreeMap::new();
    for st in statuses.iter().filter(|st| st.cause.is_some()) {
        groups.entry((verdict_kind(s, st), target_of(st))).or_default().push(st);
    }
    let mut verdicts: Vec<Verdict> =
        groups.iter().map(|((kind, target), items)| build_verdict(s, nginx, kind, target, items, per_target_total[target])).collect();
    verdicts.sort_by(|a, b| b.count.cmp(&a.count).then(a.target.cmp(&b.target)));
    let unexplained: Vec<Unexplained> = statuses
        .iter()
        .filter(|st| st.cause.is_none())
        .map(|st| Unexplained { time: s.tb.unix_secs(st.ts_ns), pid: st.pid, status: st.status })
        .collect();
    let mut error_log = BTreeMap::new();
    for l in error_lines {
        if let Some(k) = crate::nginx::ErrorKind::of_line(l) {
            *error_log.entry(k).or_insert(0) += 1;
        }
    }
    let timeline = statuses
        .iter()
        .map(|st| TimelineItem {
            time: s.tb.unix_secs(st.ts_ns),
            status: st.status,
            target: st.cause.as_ref().and_then(|c| c.target.as_ref()).map(|t| t.to_string()),
            verdict: st.cause.as_ref().map(|_| verdict_kind(s, st)),
        })
        .collect();
    let upstreams = s
        .stats
        .targets()
        .map(|t| {
            let name = t.target.to_string();
            let mine = verdicts.iter().filter(|v| v.target == name);
            let count = |code| mine.clone().map(|v| v.statuses.get(&code).copied().unwrap_or(0)).sum();
            let req = s.requests.targets.get(&t.target);
            UpstreamRow {
                target: name.clone(),
                connects: t.connects,
                failed_connects: t.failed(),
                requests: req.map_or(0, |r| r.completed),
                ttfb_p99_ms: req.map_or(0.0, |r| r.ttfb_ns.value_at_quantile(0.99) as f64 / 1e6),
                status_502: count(502),
                status_504: count(504),
                causes: mine.clone().map(|v| (v.kind.to_string(), v.count)).collect(),
            }
        })
        .collect();
    let explained = statuses.iter().filter(|st| st.cause.is_some()).count() as u64;
    Report {
        kind: "report",
        total_5xx: statuses.len() as u64,
        explained,
        verdicts,
        unexplained,
        other_5xx: s.correlator.other_5xx.clone(),
        absorbed: s.correlator.absorbed.iter().map(|(k, v)| (format!("{k:?}"), *v)).collect(),
        error_log,
        upstreams,
        timeline,
        events: s.source_stats.0,
        lost: s.source_stats.1.total_dropped(),
    }
}
