//! From joined 5xx to verdicts: one per root cause and upstream, with the numbers that prove it
//! and the fix. A 502/504 with no kernel cause is listed as unexplained, never guessed.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::diagnosis::join::{Cause, CauseKind, Status};
use crate::host::appserver::{AppServer, Knob};
use crate::kernel::errno;
use crate::kernel::sockaddr::Target;
use crate::nginx::Discovery;
use crate::output::terminal::human_us;
use crate::session::View;
use crate::state::requests::{CutRequest, DeathCause};
use crate::state::tcp::{key_of, ListenerStats};
use crate::state::{Backlog, ListenerView};

crate::codes! {
    /// The root cause a verdict names.
    pub enum VerdictKind {
        /// Unix connect() EAGAIN: the app server's listen queue was full.
        ListenQueueFull = "listen_queue_full",
        /// connect() ENOENT: the socket file does not exist.
        SocketMissing = "socket_missing",
        /// connect() EACCES/EPERM.
        PermissionDenied = "permission_denied",
        /// ECONNREFUSED, or a TCP RST in SYN_SENT.
        NothingListening = "nothing_listening",
        /// Any other connect() error.
        ConnectError = "connect_error",
        /// TCP connects abandoned, or reset right after the handshake (tcp_abort_on_overflow),
        /// while the local listener's accept queue overflowed.
        TcpAcceptQueueFull = "tcp_accept_queue_full",
        /// TCP connects abandoned with no overflow seen.
        ConnectTimeout = "connect_timeout",
        /// A cut request whose worker was killed by a signal.
        WorkerKilled = "worker_killed",
        /// A cut request whose worker exited without a fatal signal.
        WorkerRecycled = "worker_recycled",
        /// A request sent on a reused connection the upstream had closed.
        KeepaliveTimeoutMismatch = "keepalive_timeout_mismatch",
        /// The upstream closed with a request outstanding; no worker death seen.
        UpstreamClosed = "upstream_closed",
        /// nginx gave up on a request (proxy_read_timeout).
        ProxyTimeout = "proxy_timeout",
        /// A 502 nginx answered without connecting: every server of the upstream group had been
        /// marked down (max_fails within fail_timeout) by the failures named in the proof.
        NoLiveUpstreams = "no_live_upstreams",
    }
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Verdict {
    pub kind: VerdictKind,
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

/// The cut request the kernel reported for this cause (same worker, same close time).
fn cut_for<'a>(v: &'a View, c: &Cause) -> Option<&'a CutRequest> {
    v.state.requests.cut.iter().find(|cut| cut.pid == c.pid && cut.ts_ns == c.ts_ns)
}

/// The local TCP listener behind a cause's target, if it is one.
fn listener_of<'a>(v: &'a View, c: &Cause) -> Option<&'a ListenerStats> {
    match &c.target {
        Some(Target::Inet(a)) => v.state.tcp.listeners.get(&key_of(a)),
        _ => None,
    }
}

/// The root cause of an explained status.
pub fn classify(v: &View, c: &Cause) -> VerdictKind {
    match c.kind {
        CauseKind::ConnectError(e) if e == libc::EAGAIN => VerdictKind::ListenQueueFull,
        CauseKind::ConnectError(e) if e == libc::ENOENT => VerdictKind::SocketMissing,
        CauseKind::ConnectError(e) if e == libc::EACCES || e == libc::EPERM => VerdictKind::PermissionDenied,
        CauseKind::ConnectError(e) if e == libc::ECONNREFUSED => VerdictKind::NothingListening,
        CauseKind::ConnectError(_) => VerdictKind::ConnectError,
        CauseKind::TcpRefused => VerdictKind::NothingListening,
        CauseKind::ConnectTimeout | CauseKind::ConnectReset if listener_of(v, c).is_some_and(|l| l.overflowing()) => VerdictKind::TcpAcceptQueueFull,
        // Reset right after the handshake with no overflow seen here: a remote listener (run the
        // tracer there) or something else resetting.
        CauseKind::ConnectReset => VerdictKind::ConnectError,
        CauseKind::ConnectTimeout => VerdictKind::ConnectTimeout,
        CauseKind::Premature | CauseKind::KeepaliveRace => match (c.kind, cut_for(v, c).and_then(|cut| cut.worker.as_ref()).map(|d| d.cause)) {
            (_, Some(DeathCause::Exited)) => VerdictKind::WorkerRecycled,
            (_, Some(DeathCause::KilledByMaster | DeathCause::OomKill | DeathCause::Killed)) => VerdictKind::WorkerKilled,
            (CauseKind::KeepaliveRace, _) => VerdictKind::KeepaliveTimeoutMismatch,
            _ => VerdictKind::UpstreamClosed,
        },
        CauseKind::ProxyAbort => VerdictKind::ProxyTimeout,
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
fn owner_text(v: &ListenerView) -> String {
    let mut p = Vec::new();
    if let Some(o) = &v.owner {
        p.push(format!("{} pid {}", o.comm, o.pid));
    }
    if let Some(b) = v.backlog {
        p.push(match b {
            Backlog::AtLeast(n) => format!("listen(≥{n})"),
            _ => format!("listen({})", b.value()),
        });
    }
    if let Some(m) = v.somaxconn {
        p.push(format!("somaxconn {m}"));
    }
    p.join(", ")
}

/// `gunicorn (pid 12): --backlog 16 (command line)`, with what could not be read.
pub fn setting_text(app: &AppServer, knob: Knob, target: &str) -> Option<String> {
    let s = app.setting(knob, target)?;
    let unread = if app.unreadable.is_empty() { String::new() } else { format!(" (could not read {})", app.unreadable.join(", ")) };
    Some(format!("{} (pid {}): {}{unread}", app.kind, app.pid, s.describe()))
}

/// What one group of 5xx (same kind, same target) has to say.
struct Group<'a> {
    view: &'a View<'a>,
    nginx: &'a Discovery,
    target: &'a str,
    causes: Vec<&'a Cause>,
    items: &'a [&'a Status],
    /// "3/5 502s on unix:/x" — the start of every proof.
    head: String,
}

impl Group<'_> {
    /// The app server behind this group's upstream.
    fn app(&self) -> Option<&AppServer> {
        let target = self.view.state.connects.targets().find(|t| t.target.to_string() == self.target).map(|t| &t.target);
        let tcp = self.causes.first().and_then(|c| c.target.as_ref());
        [target, tcp].into_iter().flatten().find_map(|t| self.view.app_for(t))
    }

    /// `gunicorn (pid 12): --backlog 16 (command line)`, when the app server and the setting
    /// are known.
    fn setting(&self, knob: Knob) -> Option<String> {
        setting_text(self.app()?, knob, self.target)
    }

    fn max_age_us(&self) -> f64 {
        self.causes.iter().map(|c| c.age_ns).max().unwrap_or(0) as f64 / 1e3
    }

    fn median_age_us(&self) -> f64 {
        median(self.causes.iter().map(|c| c.age_ns).collect()) as f64 / 1e3
    }

    fn median_idle_us(&self) -> f64 {
        median(self.causes.iter().map(|c| c.idle_ns).collect()) as f64 / 1e3
    }

    /// (proof, evidence, fix) for `kind`.
    fn explain(&self, kind: VerdictKind) -> (String, Vec<String>, String) {
        let (head, target) = (&self.head, self.target);
        let mut evidence = Vec::new();
        let (proof, fix) = match kind {
            VerdictKind::ListenQueueFull => {
                let stats = self.view.state.connects.targets().find(|t| t.target.to_string() == target);
                let view = stats.and_then(|t| t.listener.as_ref());
                let peak = stats.map_or(0, |t| t.peak_queue_len);
                let burst = stats.map_or(0, |t| t.peak_burst);
                let qmax = view.map_or(0, |v| v.listener.queue_max);
                let rec = (burst.max(qmax * 2).max(128)).next_power_of_two();
                if let Some(v) = view {
                    evidence.push(format!("listener inode {}, {} waiting at the sample (max {})", v.listener.inode, peak, qmax));
                }
                evidence.push(format!("peak burst: {burst} connect() calls within 100 ms"));
                (
                    format!(
                        "{head} were connect() EAGAIN: its listen queue was full — max {qmax} ({}), {peak} waiting when sampled, peak burst {burst} connects in 100 ms.",
                        view.map(owner_text).unwrap_or_else(|| "owner unknown".into())
                    ),
                    match self.setting(Knob::Backlog) {
                        Some(b) => format!(
                            "Raise the backlog, {b}, to ≥ {rec}, and net.core.somaxconn if it is lower; or add workers so the queue drains faster{}.",
                            self.setting(Knob::Workers).map_or(String::new(), |w| format!(" ({w})"))
                        ),
                        None => format!("Raise the app server's backlog (gunicorn --backlog, uwsgi --listen) to ≥ {rec}, and net.core.somaxconn if it is lower; or add workers so the queue drains faster."),
                    },
                )
            }
            VerdictKind::SocketMissing => (
                format!("{head}: connect() failed with ENOENT — the socket file does not exist: the app server is down or bound elsewhere."),
                "Start the app server, or make proxy_pass and the app server's bind use the same path.".into(),
            ),
            VerdictKind::PermissionDenied => (
                format!("{head}: connect() failed with EACCES — nginx's worker user may not connect to the socket file."),
                "Let nginx's worker user connect: set the socket's mode/group (gunicorn --umask 007 with a shared group, uwsgi --chmod-socket=660 --chown-socket), or change nginx's `user`.".into(),
            ),
            VerdictKind::NothingListening => {
                (format!("{head}: the connect was refused — nothing listens there."), format!("Start the upstream on {target}, or correct proxy_pass."))
            }
            VerdictKind::ConnectError => {
                let first = self.causes.iter().find_map(|c| if let CauseKind::ConnectError(e) = c.kind { Some(e) } else { None });
                if first.is_none() && self.causes.iter().any(|c| c.kind == CauseKind::ConnectReset) {
                    return (
                        format!("{head}: the upstream reset the connection right after the TCP handshake, before nginx sent the request (ECONNRESET); no overflow of a listener on this host was seen."),
                        evidence,
                        format!("A listener with net.ipv4.tcp_abort_on_overflow = 1 does this when its accept queue is full: run the tracer on the host (or in the network namespace) of {target}, raise its backlog, or check what else resets connections there."),
                    );
                }
                let fix = match first {
                    Some(e) if e == libc::EADDRNOTAVAIL => {
                        "No free local ports: use upstream keepalive so connections are reused, or widen net.ipv4.ip_local_port_range.".to_string()
                    }
                    Some(e) if e == libc::ENOTDIR || e == libc::ENAMETOOLONG => {
                        format!("The socket path {target} cannot be a socket ({}): correct proxy_pass or the app server's bind.", errno::meaning(e))
                    }
                    Some(e) if e == libc::EPROTOTYPE || e == libc::ENOTSOCK => format!(
                        "{target} is not a stream socket ({}): point proxy_pass at the app server's stream socket.",
                        errno::meaning(e)
                    ),
                    Some(e) if !errno::meaning(e).is_empty() => format!("connect() to {target} fails: {}.", errno::meaning(e)),
                    _ => format!("connect() to {target} fails with an error nginx cannot recover from: check the errno above."),
                };
                (format!("{head}: connect() failed ({}).", first.map(errno::name).unwrap_or_default()), fix)
            }
            VerdictKind::TcpAcceptQueueFull => {
                let l = self.causes.first().and_then(|c| listener_of(self.view, c));
                let (syn, ack) = l.map_or((0, 0), |l| (l.syn_drops, l.ack_drops));
                let q = l.and_then(|l| l.view.as_ref());
                let ct = self.nginx.proxy_connect_timeout_s.unwrap_or(60.0);
                evidence.push(format!("{syn} SYNs and {ack} final ACKs dropped at the listener while tracing"));
                let resets = self.causes.iter().filter(|c| c.kind == CauseKind::ConnectReset).count();
                let timeouts = self.causes.len() - resets;
                let abort = match l.and_then(|l| l.abort_on_overflow) {
                    Some(true) => "net.ipv4.tcp_abort_on_overflow = 1 in its network namespace",
                    Some(false) => "although net.ipv4.tcp_abort_on_overflow read 0 in its network namespace",
                    None => "net.ipv4.tcp_abort_on_overflow could not be read for its network namespace",
                };
                let what = match (resets, timeouts) {
                    (0, _) => format!("connects abandoned after proxy_connect_timeout ({ct} s)"),
                    (_, 0) => format!("connections the listener reset right after the handshake (its answer to a final ACK it had no room for: {abort}; nginx: \"connect() failed (104: Connection reset by peer)\")"),
                    _ => format!("{resets} connections the listener reset right after the handshake ({abort}) and {timeouts} connects abandoned after proxy_connect_timeout ({ct} s)"),
                };
                (
                    format!(
                        "{head} were {what} while its accept queue was full: {syn} SYN + {ack} ACK drops, queue max {} ({}).",
                        q.map_or(0, |v| v.listener.queue_max),
                        q.map(owner_text).unwrap_or_else(|| "owner unknown".into())
                    ),
                    format!(
                        "Raise the listener's backlog{} (and net.core.somaxconn if lower) or add workers. {}",
                        self.setting(Knob::Backlog).map_or(String::new(), |b| format!(", {b},")),
                        if resets > 0 {
                            "With tcp_abort_on_overflow = 1 every final ACK the full queue cannot take becomes a 502; with 0 (the default) the ACK is dropped and retried, so a short overflow only delays connects."
                        } else {
                            "A dropped SYN is retried only after 1 s, so a proxy_connect_timeout at or below that turns every drop into a 504."
                        }
                    ),
                )
            }
            VerdictKind::ConnectTimeout => (
                format!("{head}: the TCP connect got no answer within proxy_connect_timeout."),
                "Check that the upstream host is up and its listener is not overflowing (run the tracer on that host).".into(),
            ),
            VerdictKind::WorkerKilled | VerdictKind::WorkerRecycled | VerdictKind::UpstreamClosed => return self.explain_cut(kind),
            VerdictKind::KeepaliveTimeoutMismatch => {
                let ka = self.nginx.keepalive_timeout_s();
                let idle = self.median_idle_us();
                (
                    format!(
                        "{head} were requests sent on reused connections the upstream had closed after ~{:.1} s idle; nginx keeps idle upstream connections up to {ka} s.",
                        idle / 1e6
                    ),
                    format!(
                        "Make the upstream's keep-alive timeout{} longer than nginx's upstream keepalive_timeout ({ka} s), or set keepalive_timeout below {:.1} s in nginx's upstream block.",
                        self.setting(Knob::KeepAlive).map_or(String::new(), |k| format!(", {k},")),
                        idle / 1e6
                    ),
                )
            }
            VerdictKind::NoLiveUpstreams => return self.explain_group(),
            VerdictKind::ProxyTimeout => (
                format!("{head}: nginx gave up after {} (its proxy_read_timeout) while the upstream was still working.", human_us(self.median_age_us())),
                "Raise proxy_read_timeout above the slowest legitimate response, or make the app answer faster (and keep the app server's own timeout below nginx's).".into(),
            ),
        };
        (proof, evidence, fix)
    }

    /// "no live upstreams": which failures put each server of the group out (those in each
    /// server's fail_timeout before the first of these 502s), each with the verdict it gets.
    fn explain_group(&self) -> (String, Vec<String>, String) {
        let recent = &self.view.join.recent;
        let first = self.items.iter().min_by_key(|st| st.ts_ns);
        let down = first.and_then(|st| crate::diagnosis::groups::all_down(recent, &self.nginx.upstream_groups, st.pid, st.ts_ns));
        let Some(d) = down else {
            return (format!("{}: every server of the upstream group had been marked down.", self.head), Vec::new(), String::new());
        };
        let mut marked = Vec::new();
        let mut kinds = Vec::new();
        for ((server, by), s) in d.servers.iter().zip(&d.group.servers) {
            if s.down {
                marked.push(format!("{server}: marked down in the config"));
                continue;
            }
            let list: Vec<String> = by
                .iter()
                .map(|(k, n)| {
                    let c = recent.iter().find(|c| c.kind == *k && c.target.as_ref().is_some_and(|t| t.to_string() == *server));
                    let v = c.map_or("?", |c| classify(self.view, c).as_str());
                    kinds.push(format!("{v} on {server}"));
                    format!("{n} × {} ({v})", k.name())
                })
                .collect();
            marked.push(format!("{server}: {} in the {} s before (max_fails={})", list.join(" + "), s.fail_timeout_s, s.max_fails));
        }
        let name = &d.group.name;
        let timeout = d.group.servers.iter().map(|s| s.fail_timeout_s).fold(0.0, f64::max);
        (
            format!(
                "{}: nginx answered without connecting (\"no live upstreams\"): every server of upstream {name} had been marked down — {}.",
                self.head,
                marked.join("; ")
            ),
            marked,
            format!(
                "Fix what failed on each server ({}); while it lasts, nginx answers every request to upstream {name} with 502 for fail_timeout ({timeout} s) after max_fails failures of each server. Add servers or capacity, or tune max_fails/fail_timeout so that one burst does not take the whole group out.",
                kinds.join(", ")
            ),
        )
    }

    /// Requests the upstream cut short: who died, and how.
    fn explain_cut(&self, kind: VerdictKind) -> (String, Vec<String>, String) {
        let (head, age) = (&self.head, human_us(self.median_age_us()));
        // Worker deaths by description; the most common cause first on ties by name.
        let mut by: BTreeMap<String, (u64, DeathCause)> = BTreeMap::new();
        for c in &self.causes {
            if let Some(d) = cut_for(self.view, c).and_then(|cut| cut.worker.as_ref()) {
                let who = match &d.signal {
                    Some((sig, pid, comm)) => {
                        format!("worker {} killed by {} from {comm} pid {pid} ({})", d.comm, errno::signal_name(*sig), d.cause.as_str())
                    }
                    None => format!("worker {} exited with no fatal signal", d.comm),
                };
                by.entry(who).or_insert((0, d.cause)).0 += 1;
            }
        }
        let mut evidence: Vec<String> = by.iter().map(|(w, (n, _))| format!("{n} × {w}")).collect();
        let races = self.causes.iter().filter(|c| c.kind == CauseKind::KeepaliveRace).count();
        if races > 0 {
            evidence.push(format!("{races} of them on reused keep-alive connections"));
        }
        let (dominant, dominant_cause) = by.iter().next().map(|(w, (_, c))| (w.clone(), Some(*c))).unwrap_or_default();
        let prt =
            self.nginx.proxy_read_timeout_s.map_or("its proxy_read_timeout (default 60 s)".to_string(), |t| format!("{t} s (proxy_read_timeout)"));
        let (proof, fix) = match kind {
            VerdictKind::WorkerKilled => (
                format!("{head}: the upstream closed requests {age} old because their worker was killed ({dominant})."),
                match dominant_cause {
                    Some(DeathCause::KilledByMaster) => match self.setting(Knob::WorkerTimeout) {
                        Some(t) => format!(
                            "The app server's own timeout, {t}, killed requests {age} old as nginx saw them (time queued at the app server included; longest {}); nginx would wait {prt}. Raise it above the slowest legitimate request, or make those requests faster.",
                            human_us(self.max_age_us())
                        ),
                        None => format!(
                            "The app server's own timeout (gunicorn --timeout, uwsgi --harakiri) kills requests that take longer; nginx would wait {prt}. Raise the app server's timeout or make those requests faster."
                        ),
                    },
                    Some(DeathCause::OomKill) => "The OOM killer ended the workers: give them more memory or lower their count.".into(),
                    _ => "Something else signals the workers: find out why (the sender is named above).".into(),
                },
            ),
            VerdictKind::WorkerRecycled => (
                format!("{head}: requests went to workers that were exiting without a fatal signal (recycled: max-requests or reload)."),
                match self.setting(Knob::MaxRequests) {
                    Some(m) => format!("Recycle without cutting requests: {m} recycles workers; turn off upstream keep-alive to this app server, or raise / spread it (gunicorn --max-requests-jitter, uwsgi --max-requests-delta)."),
                    None => "Recycle without cutting requests: turn off upstream keep-alive to this app server, or raise / spread max-requests (gunicorn --max-requests-jitter, uwsgi --max-requests-delta).".into(),
                },
            ),
            _ => (
                format!("{head}: the upstream closed the connection with the request outstanding ({age} old); no worker death was seen."),
                format!("Check the app server for requests cut at ~{age}: a timeout, a crash, or a proxy in between."),
            ),
        };
        (proof, evidence, fix)
    }
}

/// The verdict for the `items` of one (kind, target) group.
pub fn build(view: &View, nginx: &Discovery, kind: VerdictKind, target: &str, items: &[&Status], target_total: u64) -> Verdict {
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
    let group = Group {
        view,
        nginx,
        target,
        causes: items.iter().filter_map(|st| st.cause.as_ref()).collect(),
        items,
        head: format!("{count}/{target_total} {status_text} on {target}"),
    };
    let (proof, evidence, fix) = group.explain(kind);
    Verdict { kind, target: target.to_string(), statuses, count, target_total, proof, evidence, fix }
}
