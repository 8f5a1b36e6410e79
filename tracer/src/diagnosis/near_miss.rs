//! Failures that did not (yet) become a 502/504, ranked below the verdicts: each with where it
//! happened, how often, its proof and its own fix: TCP connects that completed only after a
//! dropped SYN was retransmitted (a full accept queue one `proxy_connect_timeout` away from
//! 504s), and 500s the app server answered itself because its own timeout killed the worker.

use serde::Serialize;

use crate::host::appserver::Knob;
use crate::kernel::errno;
use crate::nginx::Discovery;
use crate::output::terminal::human_us;
use crate::session::View;
use crate::state::tcp::key_of;

crate::codes! {
    /// What nearly became a 502/504.
    pub enum NearMissKind {
        /// Connects delayed ≥ 1 s by dropped SYNs that still completed.
        ConnectDelayedBySynDrops = "connect_delayed_by_syn_drops",
        /// 5xx the app server answered itself as its master killed the worker for taking too
        /// long (gunicorn answers 500 to its worker timeout's SIGABRT).
        AppServerTimeout = "app_server_timeout",
    }
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct NearMiss {
    pub kind: NearMissKind,
    /// The listener (on this host) or the upstream target (elsewhere).
    pub target: String,
    pub count: u64,
    pub proof: String,
    pub fix: String,
}

fn us(ns: u64) -> String {
    human_us(ns as f64 / 1e3)
}

/// How soon after its master's signal a killed worker's own answer reaches nginx's client.
const ANSWER_WINDOW_NS: u64 = 2_000_000_000;

/// Each worker its master killed without cutting a request, paired with a 5xx nginx passed on
/// from the upstream (same nginx status, other than 502/504) right after the kill.
fn app_server_timeouts(view: &View, nginx: &Discovery, out: &mut Vec<NearMiss>) {
    let mut used = vec![false; view.join.other.len()];
    for target in view.state.requests.served_targets() {
        let kills = view.state.requests.uncut_master_kills(target);
        let mut answered = Vec::new();
        for d in &kills {
            let found = view.join.other.iter().enumerate().find(|(i, st)| !used[*i] && st.ts_ns >= d.ts_ns && st.ts_ns - d.ts_ns <= ANSWER_WINDOW_NS);
            if let Some((i, st)) = found {
                used[i] = true;
                answered.push((d, st.status));
            }
        }
        let Some((first, status)) = answered.first() else { continue };
        let count = answered.len() as u64;
        let name = target.to_string();
        let timeout = view.app_for(target).and_then(|app| crate::diagnosis::verdict::setting_text(app, Knob::WorkerTimeout, &name));
        let (sig, sender, sender_comm) = first.signal.clone().unwrap_or_default();
        let proof = format!(
            "{count} × {status} nginx passed on from {name}: each came within 2 s after the app server's master ({sender_comm} pid {sender}) sent {} to one of its workers, one such kill per {status}, and none of those kills cut a request — its own timeout{} fired and the worker answered before it exited (which request each worker was serving is not seen).",
            errno::signal_name(sig),
            timeout.as_ref().map_or(String::new(), |t| format!(", {t},"))
        );
        let fix = format!(
            "Raise the app server's timeout{} above the slowest legitimate request, or make those requests faster; nginx would wait {}.",
            timeout.map_or(String::new(), |t| format!(" ({t})")),
            nginx.proxy_read_timeout_s.map_or("its proxy_read_timeout (default 60 s)".to_string(), |t| format!("{t} s (proxy_read_timeout)"))
        );
        out.push(NearMiss { kind: NearMissKind::AppServerTimeout, target: name, count, proof, fix });
    }
}

/// Every near miss the session saw, most frequent first.
pub fn find(view: &View, nginx: &Discovery) -> Vec<NearMiss> {
    let connect_timeout =
        nginx.proxy_connect_timeout_s.map_or("proxy_connect_timeout (default 60 s)".to_string(), |t| format!("proxy_connect_timeout ({t} s)"));
    let mut out = Vec::new();
    for (remote, t) in &view.state.tcp.targets {
        let count = t.delayed_completed();
        if count == 0 {
            continue;
        }
        let h = &t.delayed_latency_ns;
        let took = format!("the connect took {} (p50), {} (max) instead of microseconds", us(h.value_at_quantile(0.5)), us(h.max()));
        let listener = view.state.tcp.listeners.get(&key_of(remote)).filter(|l| l.connects.attempts > 0);
        let (target, proof, fix) = match listener {
            Some(l) => {
                let queue = l.view.as_ref().map_or(String::new(), |v| format!(", queue max {}", v.listener.queue_max));
                (
                    l.name(),
                    format!(
                        "{count} connects to {} completed only after a dropped SYN was retransmitted: {took}; {} SYNs and {} final ACKs dropped at its full accept queue{queue}.",
                        l.name(),
                        l.syn_drops,
                        l.ack_drops
                    ),
                    format!(
                        "Raise the listener's backlog{} (and net.core.somaxconn if lower) or add workers: each of these was one {connect_timeout} away from a 504.",
                        view.app_for(&crate::kernel::sockaddr::Target::Inet(*remote))
                            .and_then(|app| crate::diagnosis::verdict::setting_text(app, Knob::Backlog, &remote.to_string()))
                            .map_or(String::new(), |b| format!(", {b},"))
                    ),
                )
            }
            None => (
                remote.to_string(),
                format!("{count} connects to {remote} completed only after a SYN was retransmitted: {took}. The listener is not on this host: its accept queue or the network dropped the SYNs."),
                format!("Run the tracer on the upstream host to see its accept queue; each of these was one {connect_timeout} away from a 504."),
            ),
        };
        out.push(NearMiss { kind: NearMissKind::ConnectDelayedBySynDrops, target, count, proof, fix });
    }
    app_server_timeouts(view, nginx, &mut out);
    out.sort_by(|a, b| b.count.cmp(&a.count).then(a.target.cmp(&b.target)));
    out
}
