//! Per-second series of each upstream for the report's plots, on one time axis: connect() calls
//! and failures, requests completed and their time to first byte, the listener's queue against
//! its maximum, 502/504 by verdict, and the worker deaths that cut requests.

use std::collections::BTreeMap;

use crate::diagnosis::report::TimelineItem;
use crate::session::View;

/// (unix seconds of the bucket's start, value)
pub type Points = Vec<(f64, f64)>;

#[derive(Clone, Debug, PartialEq, Default)]
pub struct UpstreamSeries {
    pub target: String,
    pub connects: Points,
    pub failures: Points,
    pub completed: Points,
    pub ttfb_p50_ms: Points,
    pub ttfb_p99_ms: Points,
    /// (sampled at, waiting)
    pub queue: Points,
    pub queue_max: Option<u32>,
    /// 502/504 per second, by verdict kind (or `unexplained`).
    pub fivexx: BTreeMap<String, Points>,
    /// (when, what): a worker death that cut a request.
    pub deaths: Vec<(f64, String)>,
    /// Time to first byte of every request: (bucket's upper bound in ms, requests), log buckets.
    pub ttfb_histogram: Vec<(f64, f64)>,
}

/// A TCP listener on this host that dropped connections.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ListenerSeries {
    pub listener: String,
    pub syn_drops: Points,
    pub ack_drops: Points,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct Series {
    /// The shared time axis, unix seconds.
    pub t0: f64,
    pub t1: f64,
    pub upstreams: Vec<UpstreamSeries>,
    pub listeners: Vec<ListenerSeries>,
}

/// At most this many seconds (a week) are zero-filled between the first and the last event: a
/// longer span, which only a corrupt or hostile recording has, keeps its non-empty seconds only
/// (found by the `report` fuzz target: a fill from 0 to 10^10 s ran out of memory).
const MAX_FILLED_SECONDS: i64 = 7 * 86_400;

/// Counts per whole second of `times` (unix seconds), every second from the first to the last.
fn per_second(times: impl Iterator<Item = f64>) -> Points {
    let mut buckets: BTreeMap<i64, f64> = BTreeMap::new();
    for t in times {
        *buckets.entry(t.floor() as i64).or_default() += 1.0;
    }
    let (Some(&a), Some(&b)) = (buckets.keys().next(), buckets.keys().next_back()) else { return Vec::new() };
    if b.saturating_sub(a) > MAX_FILLED_SECONDS {
        return buckets.into_iter().map(|(s, n)| (s as f64, n)).collect();
    }
    (a..=b).map(|s| (s as f64, buckets.get(&s).copied().unwrap_or(0.0))).collect()
}

fn quantile(sorted: &[u64], q: f64) -> u64 {
    sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// The series of every upstream with traffic, or None without the history.
pub fn build(view: &View, timeline: &[TimelineItem]) -> Option<Series> {
    let h = view.state.history.as_ref()?;
    let tb = view.tb;
    let secs = |v: &[u64]| v.iter().map(|&ns| tb.unix_secs(ns)).collect::<Vec<f64>>();
    let mut out = Vec::new();
    for t in view.state.connects.targets() {
        let name = t.target.to_string();
        let mut s = UpstreamSeries { target: name.clone(), ..Default::default() };
        if let Some(v) = h.arrivals.get(&t.target) {
            s.connects = per_second(secs(v).into_iter());
        }
        if let Some(v) = h.failures.get(&t.target) {
            s.failures = per_second(secs(v).into_iter());
        }
        if let (Some(ends), Some(ttfb)) = (h.completions.get(&t.target), h.ttfb.get(&t.target)) {
            s.completed = per_second(secs(ends).into_iter());
            let mut by_second: BTreeMap<i64, Vec<u64>> = BTreeMap::new();
            for (end, ttfb) in ends.iter().zip(ttfb) {
                by_second.entry(tb.unix_secs(*end).floor() as i64).or_default().push(*ttfb);
            }
            for (sec, mut v) in by_second {
                v.sort_unstable();
                s.ttfb_p50_ms.push((sec as f64, quantile(&v, 0.5) as f64 / 1e6));
                s.ttfb_p99_ms.push((sec as f64, quantile(&v, 0.99) as f64 / 1e6));
            }
        }
        if let Some(q) = h.queue.get(&t.target) {
            s.queue = q.iter().map(|&(ts, waiting, _)| (tb.unix_secs(ts), waiting as f64)).collect();
            s.queue.sort_by(|a, b| a.0.total_cmp(&b.0));
            s.queue_max = q.last().map(|&(_, _, max)| max);
        }
        let mut by_kind: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for item in timeline.iter().filter(|i| i.target.as_deref() == Some(name.as_str())) {
            by_kind.entry(item.verdict.map_or("unexplained".to_string(), |k| k.as_str().to_string())).or_default().push(item.time);
        }
        s.fivexx = by_kind.into_iter().map(|(k, v)| (k, per_second(v.into_iter()))).collect();
        s.deaths = view
            .state
            .requests
            .cut
            .iter()
            .filter(|c| c.target.as_ref() == Some(&t.target))
            .filter_map(|c| c.worker.as_ref())
            .map(|d| (tb.unix_secs(d.ts_ns), format!("worker {} pid {}: {}", d.comm, d.pid, d.cause)))
            .collect();
        s.deaths.dedup();
        if let Some(r) = view.state.requests.targets.get(&t.target).filter(|r| !r.ttfb_ns.is_empty()) {
            s.ttfb_histogram =
                r.ttfb_ns.iter_log(1_000_000, 2.0).map(|v| (v.value_iterated_to() as f64 / 1e6, v.count_since_last_iteration() as f64)).collect();
        }
        if !(s.connects.is_empty() && s.completed.is_empty()) {
            out.push(s);
        }
    }
    let mut listeners = Vec::new();
    for (key, l) in &view.state.tcp.listeners {
        let syn: Vec<f64> =
            h.syn_drops.get(key).into_iter().flatten().flat_map(|&(ts, n)| std::iter::repeat_n(tb.unix_secs(ts), n as usize)).collect();
        let ack = h.ack_drops.get(key).map(|v| secs(v)).unwrap_or_default();
        if !(syn.is_empty() && ack.is_empty()) {
            listeners.push(ListenerSeries { listener: l.name(), syn_drops: per_second(syn.into_iter()), ack_drops: per_second(ack.into_iter()) });
        }
    }
    let all = out
        .iter()
        .flat_map(|u| u.connects.iter().chain(&u.completed).chain(&u.queue).map(|p| p.0))
        .chain(listeners.iter().flat_map(|l| l.syn_drops.iter().chain(&l.ack_drops).map(|p| p.0)));
    let (t0, t1) = all.fold((f64::MAX, f64::MIN), |(a, b), t| (a.min(t), b.max(t + 1.0)));
    (t0 < t1).then_some(Series { t0, t1, upstreams: out, listeners })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_without_events_are_zero() {
        assert_eq!(per_second([10.2, 10.9, 12.5].into_iter()), vec![(10.0, 2.0), (11.0, 0.0), (12.0, 1.0)]);
        assert!(per_second(std::iter::empty()).is_empty());
        assert_eq!(per_second([0.5, 1e10].into_iter()), vec![(0.0, 1.0), (1e10, 1.0)], "a span of centuries is not zero-filled");
        assert_eq!(quantile(&[1, 2, 3, 4], 0.5), 2);
        assert_eq!(quantile(&[1, 2, 3, 4], 0.99), 4);
    }
}
