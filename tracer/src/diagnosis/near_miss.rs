//! Failures that did not (yet) become a 502/504, ranked below the verdicts: each with where it
//! happened, how often, its proof and its own fix. Today: TCP connects that completed only after
//! a dropped SYN was retransmitted — a full accept queue one `proxy_connect_timeout` away from
//! 504s.

use serde::Serialize;

use crate::nginx::Discovery;
use crate::output::terminal::human_us;
use crate::session::View;
use crate::state::tcp::key_of;

crate::codes! {
    /// What nearly became a 502/504.
    pub enum NearMissKind {
        /// Connects delayed ≥ 1 s by dropped SYNs that still completed.
        ConnectDelayedBySynDrops = "connect_delayed_by_syn_drops",
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

/// Every near miss the session saw, most frequent first.
pub fn find(view: &View, nginx: &Discovery) -> Vec<NearMiss> {
    let connect_timeout =
        nginx.proxy_connect_timeout_s.map_or("its proxy_connect_timeout (default 60 s)".to_string(), |t| format!("proxy_connect_timeout {t} s"));
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
                    format!("Raise the listener's backlog (and net.core.somaxconn if lower) or add workers: each of these was a {connect_timeout} away from a 504."),
                )
            }
            None => (
                remote.to_string(),
                format!("{count} connects to {remote} completed only after a SYN was retransmitted: {took}. The listener is not on this host: its accept queue or the network dropped the SYNs."),
                format!("Run the tracer on the upstream host to see its accept queue; each of these was a {connect_timeout} away from a 504."),
            ),
        };
        out.push(NearMiss { kind: NearMissKind::ConnectDelayedBySynDrops, target, count, proof, fix });
    }
    out.sort_by(|a, b| b.count.cmp(&a.count).then(a.target.cmp(&b.target)));
    out
}
