//! The whole diagnosis of a session: every 502/504 grouped by (verdict kind, upstream), the ones
//! nothing explains, what nginx absorbed, and the error log beside it for comparison.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::diagnosis::groups;
use crate::diagnosis::join::{Status, StatusSource};
use crate::diagnosis::near_miss::{self, NearMiss};
use crate::diagnosis::series::{self, Series};
use crate::diagnosis::verdict::{self, Verdict, VerdictKind};
use crate::diagnosis::what_if::{self, Change, WhatIf};
use crate::nginx::{Discovery, ErrorKind};
use crate::session::View;

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
    /// Those 502/504 by where they were read: `kernel_writev` (plaintext HTTP/1.x),
    /// `tls_uprobe_http1` / `tls_uprobe_http2` (the TLS library's write). Absent when none.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub status_sources: BTreeMap<StatusSource, u64>,
    /// Status sources whose kernel program did not attach (`program: why`): 5xx sent that way
    /// are only in nginx's logs (`error_log`). Absent when every one attached.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub status_sources_missing: Vec<String>,
    pub explained: u64,
    pub verdicts: Vec<Verdict>,
    pub unexplained: Vec<Unexplained>,
    /// Failures that did not become a 502/504 (yet), ranked below the verdicts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub near_misses: Vec<NearMiss>,
    /// The recorded arrivals through a model of each overflowing listener (`--what-if`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub what_if: Vec<WhatIf>,
    /// Other 5xx (not produced by an upstream failure nginx saw): passed through or internal.
    pub other_5xx: BTreeMap<u16, u64>,
    /// Upstream failures no 502/504 status line followed on that nginx worker, by cause
    /// (`connect_eagain`, `keepalive_race`, …): nginx retried them, or the client left. (Not a
    /// claim that the client got a success: that would need the status nginx answered.)
    pub absorbed: BTreeMap<String, u64>,
    /// nginx's error log, counted by kind of upstream error, for comparison.
    pub error_log: BTreeMap<ErrorKind, u64>,
    /// One row per upstream target.
    pub upstreams: Vec<UpstreamRow>,
    /// Every 502/504 with its time and cause (for the timeline).
    pub timeline: Vec<TimelineItem>,
    pub events: u64,
    pub lost: u64,
    /// Per-second series for the HTML report's plots (with the session's history only; not
    /// part of the JSON).
    #[serde(skip)]
    pub series: Option<Series>,
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
    /// Verdict kind name → 5xx.
    pub causes: BTreeMap<&'static str, u64>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TimelineItem {
    pub time: f64,
    pub status: u16,
    pub target: Option<String>,
    pub verdict: Option<VerdictKind>,
}

/// The kernel programs that read the status nginx answers (`tracer_common::probes`).
const STATUS_PROGRAMS: &[&str] = &["status_line", "tls_status"];

/// Build the report from a finished session; `error_lines` are nginx's error-log lines since start.
/// With `what_if` changes (and the session's history kept), each overflowing listener's queue
/// model and its predictions are added.
pub fn build(view: &View, nginx: &Discovery, error_lines: &[String], what_if: &[Change]) -> Report {
    let statuses = &view.join.statuses;
    // Each status's verdict kind and target: its joined cause's, or, for a 502 with none, the
    // upstream group whose every server was down ("no live upstreams").
    let resolved: Vec<Option<(VerdictKind, String)>> = statuses
        .iter()
        .map(|st| match &st.cause {
            Some(c) => Some((verdict::classify(view, c), c.target.as_ref().map(|t| t.to_string()).unwrap_or_else(|| "(unknown upstream)".into()))),
            None if st.status == 502 => groups::all_down(&view.join.recent, &nginx.upstream_groups, st.pid, st.ts_ns)
                .map(|d| (VerdictKind::NoLiveUpstreams, format!("upstream {}", d.group.name))),
            None => None,
        })
        .collect();
    let mut per_target_total: BTreeMap<String, u64> = BTreeMap::new();
    // Grouped in name order, so verdicts with equal counts keep a stable order.
    let mut groups: BTreeMap<(&'static str, String), (VerdictKind, Vec<&Status>)> = BTreeMap::new();
    for (st, r) in statuses.iter().zip(&resolved) {
        if let Some((kind, target)) = r {
            *per_target_total.entry(target.clone()).or_default() += 1;
            groups.entry((kind.as_str(), target.clone())).or_insert((*kind, Vec::new())).1.push(st);
        }
    }
    let mut verdicts: Vec<Verdict> =
        groups.iter().map(|((_, target), (kind, items))| verdict::build(view, nginx, *kind, target, items, per_target_total[target])).collect();
    verdicts.sort_by(|a, b| b.count.cmp(&a.count).then(a.target.cmp(&b.target)));
    let unexplained: Vec<Unexplained> = statuses
        .iter()
        .zip(&resolved)
        .filter(|(_, r)| r.is_none())
        .map(|(st, _)| Unexplained { time: view.tb.unix_secs(st.ts_ns), pid: st.pid, status: st.status })
        .collect();
    let mut error_log = BTreeMap::new();
    for kind in error_lines.iter().filter_map(|l| ErrorKind::of_line(l)) {
        *error_log.entry(kind).or_insert(0) += 1;
    }
    let timeline: Vec<TimelineItem> = statuses
        .iter()
        .zip(&resolved)
        .map(|(st, r)| TimelineItem {
            time: view.tb.unix_secs(st.ts_ns),
            status: st.status,
            target: match &st.cause {
                Some(c) => c.target.as_ref().map(|t| t.to_string()),
                None => r.as_ref().map(|(_, t)| t.clone()),
            },
            verdict: r.as_ref().map(|(k, _)| *k),
        })
        .collect();
    let upstreams = view
        .state
        .connects
        .targets()
        .map(|t| {
            let name = t.target.to_string();
            let mine = || verdicts.iter().filter(|v| v.target == name);
            let count = |code| mine().map(|v| v.statuses.get(&code).copied().unwrap_or(0)).sum();
            let req = view.state.requests.targets.get(&t.target);
            UpstreamRow {
                target: name.clone(),
                connects: t.connects,
                failed_connects: t.failed(),
                requests: req.map_or(0, |r| r.completed),
                ttfb_p99_ms: req.map_or(0.0, |r| r.ttfb_ns.value_at_quantile(0.99) as f64 / 1e6),
                status_502: count(502),
                status_504: count(504),
                causes: mine().map(|v| (v.kind.as_str(), v.count)).collect(),
            }
        })
        .collect();
    let what_if = what_if::find(view, &verdicts, what_if);
    let series = series::build(view, &timeline);
    let mut status_sources = BTreeMap::new();
    for st in statuses {
        *status_sources.entry(st.source).or_insert(0) += 1;
    }
    let mut status_sources_missing: Vec<String> = Vec::new();
    for p in view.probes.iter().filter(|p| STATUS_PROGRAMS.contains(&p.program.as_str())) {
        let attached = view.probes.iter().any(|q| q.program == p.program && q.attached);
        let line = format!("{}: {}", p.program, p.error.as_deref().unwrap_or("not attached"));
        if !attached && !status_sources_missing.contains(&line) {
            status_sources_missing.push(line);
        }
    }
    Report {
        kind: "report",
        total_5xx: statuses.len() as u64,
        status_sources,
        status_sources_missing,
        explained: resolved.iter().filter(|r| r.is_some()).count() as u64,
        verdicts,
        unexplained,
        near_misses: near_miss::find(view, nginx),
        what_if,
        other_5xx: view.join.other_5xx.clone(),
        absorbed: view.join.absorbed.iter().map(|(k, v)| (k.name(), *v)).collect(),
        error_log,
        upstreams,
        timeline,
        events: view.events,
        lost: view.lost.total_dropped(),
        series,
    }
}
