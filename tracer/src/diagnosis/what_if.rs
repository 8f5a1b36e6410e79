//! What if the backlog (or the worker count) had been different? The recorded arrivals at a unix
//! listener (every connect(), served or refused) are replayed through a model of its queue: `W`
//! workers taking one connection each for a service time `S`, first come first served, and a
//! queue that refuses a connection (EAGAIN) once more than `backlog` wait (it holds backlog + 1).
//! `S` is measured from the recording (the median gap between responses while the workers were
//! busy, times `W`), and the model is first checked against what was recorded: its refusals at
//! the recorded backlog are printed beside the real ones.

use std::collections::VecDeque;

use serde::Serialize;

use crate::diagnosis::verdict::VerdictKind;
use crate::host::appserver::Knob;
use crate::session::View;

/// The most workers modelled (and searched for the smallest worker count with no refusal).
pub const MAX_WORKERS: u32 = 1024;

/// The queue model of one listener.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Model {
    pub workers: u32,
    pub service_ns: u64,
}

/// Connections refused by a listener with `backlog` and the model's workers, for `arrivals`
/// (monotonic ns, in order).
pub fn refused(arrivals: &[u64], m: Model, backlog: u32) -> u64 {
    let mut free = vec![0u64; m.workers.max(1) as usize];
    let mut queue: VecDeque<u64> = VecDeque::new();
    let mut refused = 0;
    for &t in arrivals {
        // Workers that finished by `t` take queued connections in order.
        loop {
            let (i, &f) = free.iter().enumerate().min_by_key(|(_, f)| **f).expect("at least one worker");
            if f > t {
                break;
            }
            match queue.pop_front() {
                Some(a) => free[i] = f.max(a).saturating_add(m.service_ns),
                None => break,
            }
        }
        let (i, &f) = free.iter().enumerate().min_by_key(|(_, f)| **f).expect("at least one worker");
        if f <= t && queue.is_empty() {
            free[i] = t.saturating_add(m.service_ns);
        } else if queue.len() <= backlog as usize {
            queue.push_back(t);
        } else {
            refused += 1;
        }
    }
    refused
}

/// The smallest value in `1..=max` for which `refused(value)` is 0 (refusals only fall as it
/// grows), or None.
fn smallest(max: u32, refused: impl Fn(u32) -> u64) -> Option<u32> {
    if refused(max) > 0 {
        return None;
    }
    let (mut lo, mut hi) = (1, max);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if refused(mid) == 0 {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Some(lo)
}

/// One change asked for (`--what-if backlog=N,workers=M`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Change {
    pub backlog: Option<u32>,
    pub workers: Option<u32>,
}

impl std::str::FromStr for Change {
    type Err = String;
    fn from_str(s: &str) -> Result<Change, String> {
        let mut c = Change::default();
        for part in s.split(',') {
            let (k, v) = part.split_once('=').ok_or_else(|| format!("'{part}': expected KEY=N (backlog=N, workers=N)"))?;
            let n: u32 = v.trim().parse().map_err(|_| format!("'{part}': {v} is not a whole number"))?;
            match k.trim() {
                "backlog" => c.backlog = Some(n),
                "workers" if (1..=MAX_WORKERS).contains(&n) => c.workers = Some(n),
                "workers" => return Err(format!("workers must be between 1 and {MAX_WORKERS}")),
                other => return Err(format!("'{other}': unknown (what-if knows backlog and workers)")),
            }
        }
        Ok(c)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Prediction {
    pub backlog: u32,
    pub workers: u32,
    /// 502s the model predicts (refused connects).
    pub refused: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WhatIf {
    pub target: String,
    pub model: Model,
    /// The backlog the listener had (as the tracer knew it).
    pub backlog: u32,
    pub arrivals: u64,
    /// EAGAIN the tracer saw, and what the model gives for the same backlog.
    pub recorded_refused: u64,
    pub model_refused: u64,
    pub predictions: Vec<Prediction>,
    /// The smallest backlog with no refusal at the current workers (None: none up to 65535).
    pub smallest_backlog: Option<u32>,
    /// The fewest workers with no refusal at the current backlog (None: none up to 1024).
    pub smallest_workers: Option<u32>,
    /// (backlog, refused) from 0 to past the smallest sufficient backlog, for the plot.
    pub curve: Vec<(u32, u64)>,
}

/// The model of `target`'s listener from the recording, if the data is there.
fn model(view: &View, target: &crate::kernel::sockaddr::Target, completions: &[u64]) -> Option<Model> {
    // An app server's config file is outside input: a worker count beyond what the search tries
    // is not modelled (the model allocates one slot per worker).
    let app_workers = view
        .app_for(target)
        .and_then(|a| a.setting(Knob::Workers, &target.to_string()))
        .and_then(|s| s.value.parse().ok())
        .filter(|w| (1..=MAX_WORKERS).contains(w));
    let workers = app_workers.or_else(|| view.state.requests.worker_count(target).map(|n| n.saturating_sub(1).max(1) as u32))?;
    let mut gaps: Vec<u64> = completions.windows(2).map(|w| w[1].saturating_sub(w[0])).filter(|g| *g > 0).collect();
    if gaps.is_empty() {
        return None;
    }
    gaps.sort_unstable();
    Some(Model { workers, service_ns: gaps[gaps.len() / 2].saturating_mul(workers as u64) })
}

/// A what-if for every listener whose queue overflowed (`listen_queue_full` verdicts).
pub fn find(view: &View, verdicts: &[crate::diagnosis::verdict::Verdict], changes: &[Change]) -> Vec<WhatIf> {
    let Some(h) = view.state.history.as_ref() else { return Vec::new() };
    let mut out = Vec::new();
    for v in verdicts.iter().filter(|v| v.kind == VerdictKind::ListenQueueFull) {
        let Some(t) = view.state.connects.targets().find(|t| t.target.to_string() == v.target) else { continue };
        let (Some(arrivals), Some(completions)) = (h.arrivals.get(&t.target), h.completions.get(&t.target)) else { continue };
        let Some(m) = model(view, &t.target, completions) else { continue };
        let Some(lv) = t.listener.as_ref() else { continue };
        let backlog = lv.listener.queue_max;
        let with = |b: u32, w: u32| refused(arrivals, Model { workers: w, ..m }, b);
        let smallest_backlog = smallest(65535, |b| with(b, m.workers));
        let top = smallest_backlog.unwrap_or(backlog * 4).max(backlog).max(8) * 5 / 4;
        let curve = (0..=24u32).map(|i| top * i / 24).map(|b| (b, with(b, m.workers))).collect();
        out.push(WhatIf {
            target: v.target.clone(),
            model: m,
            backlog,
            arrivals: arrivals.len() as u64,
            recorded_refused: t.errno_count(libc::EAGAIN),
            model_refused: with(backlog, m.workers),
            predictions: changes
                .iter()
                .map(|c| {
                    let (b, w) = (c.backlog.unwrap_or(backlog), c.workers.unwrap_or(m.workers));
                    Prediction { backlog: b, workers: w, refused: with(b, w) }
                })
                .collect(),
            smallest_backlog,
            smallest_workers: smallest(MAX_WORKERS, |w| with(backlog, w)),
            curve,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_against_one_worker_refuses_all_but_backlog_plus_two() {
        // 100 connects within 10 ms, one worker, 0.5 s each: one is served, backlog + 1 wait.
        let arrivals: Vec<u64> = (0..100).map(|i| i * 100_000).collect();
        let m = Model { workers: 1, service_ns: 500_000_000 };
        assert_eq!(refused(&arrivals, m, 16), 100 - 16 - 2);
        assert_eq!(refused(&arrivals, Model { workers: 4, ..m }, 16), 100 - 16 - 1 - 4);
        assert_eq!(smallest(65535, |b| refused(&arrivals, m, b)), Some(98));
        // Spread out enough, nothing waits.
        let slow: Vec<u64> = (0..10).map(|i| i * 1_000_000_000).collect();
        assert_eq!(refused(&slow, m, 0), 0);
    }

    #[test]
    fn changes_parse() {
        assert_eq!("backlog=64".parse::<Change>(), Ok(Change { backlog: Some(64), workers: None }));
        assert_eq!("backlog=8, workers=2".parse::<Change>(), Ok(Change { backlog: Some(8), workers: Some(2) }));
        assert!("workers=0".parse::<Change>().is_err());
        assert!("timeout=3".parse::<Change>().is_err());
    }

    #[test]
    fn huge_worker_counts_and_service_times_neither_allocate_nor_overflow() {
        // `workers=4000000000` allocated one slot per worker (an abort), and a service time
        // near u64::MAX overflowed the model's clock.
        assert!("workers=4000000000".parse::<Change>().unwrap_err().contains("between 1 and 1024"));
        assert_eq!("workers=1024".parse::<Change>(), Ok(Change { backlog: None, workers: Some(1024) }));
        let m = Model { workers: 1, service_ns: u64::MAX };
        assert_eq!(refused(&[1, 2, 3, u64::MAX], m, 1), 0);
    }
}
