//! Before and after a fix: two recordings' diagnoses side by side — per root cause the 502/504
//! counts and rates, per upstream the latency — and whether each root cause is gone.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::diagnosis::report::Report;
use crate::diagnosis::verdict::VerdictKind;

crate::codes! {
    /// What became of a root cause from before to after (by its rate: the runs may differ in length).
    pub enum Outcome {
        /// Seen before, not after.
        Gone = "gone",
        /// Fewer per minute after.
        Fewer = "fewer",
        /// About as many per minute (within 10 %).
        Same = "same",
        /// More per minute after.
        More = "more",
        /// Not seen before.
        New = "new",
        /// Not seen after, but the after recording has no traffic to that upstream either: it
        /// proves nothing.
        NoTraffic = "no_traffic_after",
    }
}

/// One recording's diagnosis.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Side {
    pub file: String,
    /// First to last kernel event of the recording.
    pub duration_s: f64,
    pub total_5xx: u64,
    pub unexplained: u64,
    pub lost: u64,
}

/// One root cause (verdict kind on an upstream) in both runs.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CauseRow {
    pub kind: VerdictKind,
    pub target: String,
    pub before: u64,
    pub after: u64,
    pub before_per_min: f64,
    pub after_per_min: f64,
    pub outcome: Outcome,
}

/// One upstream's requests in both runs.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct UpstreamRow {
    pub target: String,
    pub before_requests: u64,
    pub after_requests: u64,
    pub before_ttfb_p99_ms: Option<f64>,
    pub after_ttfb_p99_ms: Option<f64>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Comparison {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub before: Side,
    pub after: Side,
    pub causes: Vec<CauseRow>,
    pub upstreams: Vec<UpstreamRow>,
}

fn per_min(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 * 60.0 / secs
    } else {
        0.0
    }
}

fn outcome(before: f64, after: f64) -> Outcome {
    match (before > 0.0, after > 0.0) {
        (true, false) => Outcome::Gone,
        (false, _) => Outcome::New,
        _ if after < before * 0.9 => Outcome::Fewer,
        _ if after > before * 1.1 => Outcome::More,
        _ => Outcome::Same,
    }
}

fn side(file: &str, r: &Report, duration_s: f64) -> Side {
    Side { file: file.to_string(), duration_s, total_5xx: r.total_5xx, unexplained: r.unexplained.len() as u64, lost: r.lost }
}

/// Compare two diagnoses (`(file, report, duration)` each).
pub fn compare(before: (&str, &Report, f64), after: (&str, &Report, f64)) -> Comparison {
    let (b, a) = (before.1, after.1);
    let mut causes: BTreeMap<(&'static str, String), (VerdictKind, u64, u64)> = BTreeMap::new();
    for (report, is_after) in [(b, false), (a, true)] {
        for v in &report.verdicts {
            let e = causes.entry((v.kind.as_str(), v.target.clone())).or_insert((v.kind, 0, 0));
            if is_after {
                e.2 += v.count;
            } else {
                e.1 += v.count;
            }
        }
    }
    let exercised = |target: &str| a.upstreams.iter().any(|u| u.target == target && u.connects > 0);
    let causes = causes
        .into_iter()
        .map(|((_, target), (kind, nb, na))| {
            let (rb, ra) = (per_min(nb, before.2), per_min(na, after.2));
            let outcome = match outcome(rb, ra) {
                Outcome::Gone if !exercised(&target) => Outcome::NoTraffic,
                o => o,
            };
            CauseRow { kind, target, before: nb, after: na, before_per_min: rb, after_per_min: ra, outcome }
        })
        .collect();
    let mut upstreams: BTreeMap<String, UpstreamRow> = BTreeMap::new();
    for (report, is_after) in [(b, false), (a, true)] {
        for u in &report.upstreams {
            let row = upstreams.entry(u.target.clone()).or_insert_with(|| UpstreamRow {
                target: u.target.clone(),
                before_requests: 0,
                after_requests: 0,
                before_ttfb_p99_ms: None,
                after_ttfb_p99_ms: None,
            });
            let ttfb = (u.requests > 0).then_some(u.ttfb_p99_ms);
            if is_after {
                (row.after_requests, row.after_ttfb_p99_ms) = (u.requests, ttfb);
            } else {
                (row.before_requests, row.before_ttfb_p99_ms) = (u.requests, ttfb);
            }
        }
    }
    Comparison {
        kind: "comparison",
        before: side(before.0, b, before.2),
        after: side(after.0, a, after.2),
        causes,
        upstreams: upstreams.into_values().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_compare_rates_not_counts() {
        assert_eq!(outcome(10.0, 0.0), Outcome::Gone);
        assert_eq!(outcome(0.0, 3.0), Outcome::New);
        assert_eq!(outcome(10.0, 5.0), Outcome::Fewer);
        assert_eq!(outcome(10.0, 10.5), Outcome::Same);
        assert_eq!(outcome(10.0, 20.0), Outcome::More);
        assert_eq!(per_min(30, 30.0), 60.0);
    }
}
