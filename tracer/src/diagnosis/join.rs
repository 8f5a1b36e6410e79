//! Ties each 502/504 nginx wrote (status line seen in the kernel) to the upstream event that
//! caused it: same nginx worker, the most recent compatible cause just before it. nginx answers a
//! failed connect, a cut request or a timeout in the same event-loop step, right after the kernel
//! event, so the cause precedes its status line by microseconds to milliseconds.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::Serialize;
pub use tracer_common::status::StatusSource;

pub use crate::state::cause::{Cause, CauseKind};
use crate::state::requests::FORWARD_WINDOW_NS;

/// A 5xx status line, and what caused it (None: unexplained).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Status {
    pub ts_ns: u64,
    pub pid: u32,
    pub fd: i32,
    pub status: u16,
    /// Where the status was read (writev, or the TLS library's write).
    pub source: StatusSource,
    pub cause: Option<Cause>,
}

/// Causes older than this are not joined to a later status line.
const MAX_GAP_NS: u64 = 2_000_000_000;
const MAX_PENDING: usize = 4096;
const MAX_KEPT: usize = 200_000;
/// Causes kept after their join, for the failures that marked an upstream group's servers down
/// (nginx's fail_timeout is 10 s by default).
const MAX_RECENT: usize = 50_000;

#[derive(Default)]
pub struct Correlator {
    pending: HashMap<u32, VecDeque<Cause>>,
    /// Every 502/504 seen, in order (capped at MAX_KEPT; `dropped` counts the rest).
    pub statuses: Vec<Status>,
    pub dropped: u64,
    /// Other 5xx (500, 503, …) by status: passed through from the app or produced by nginx itself.
    pub other_5xx: BTreeMap<u16, u64>,
    /// Those other 5xx with their time and worker, in order (capped at MAX_KEPT like `statuses`).
    pub other: Vec<Status>,
    /// Causes never followed by a status line: nginx retried elsewhere or silently (idempotent
    /// request on a failed keep-alive connection), so the client did not get an error.
    pub absorbed: BTreeMap<CauseKind, u64>,
    /// Every cause, joined or not, most recent last (capped at MAX_RECENT): what an upstream
    /// group's "no live upstreams" 502 is traced back to.
    pub recent: VecDeque<Cause>,
    finished: bool,
}

impl Correlator {
    pub fn cause(&mut self, c: Cause) {
        if self.recent.len() >= MAX_RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(c.clone());
        let q = self.pending.entry(c.pid).or_default();
        while q.front().is_some_and(|old| c.ts_ns.saturating_sub(old.ts_ns) > MAX_GAP_NS) || q.len() >= MAX_PENDING {
            let old = q.pop_front().expect("non-empty");
            *self.absorbed.entry(old.kind).or_default() += 1;
        }
        q.push_back(c);
    }

    /// Worker `pid` calls connect() again. nginx handles a connect() that fails at once (EAGAIN,
    /// ENOENT, …) in the same call: it either writes the 502 or connects to the next server of
    /// the group, before it does anything else. So a failed connect() still waiting for its
    /// status line when the same worker connects again was retried (`proxy_next_upstream`): it
    /// is absorbed now, and cannot be taken by a later, unrelated 502 of that worker.
    pub fn connecting(&mut self, pid: u32) {
        let Some(q) = self.pending.get_mut(&pid) else { return };
        let absorbed = &mut self.absorbed;
        q.retain(|c| match c.kind {
            CauseKind::ConnectError(_) => {
                *absorbed.entry(c.kind).or_default() += 1;
                false
            }
            _ => true,
        });
    }

    pub fn status(&mut self, ts_ns: u64, pid: u32, fd: i32, status: u16, source: StatusSource) {
        if status != 502 && status != 504 {
            *self.other_5xx.entry(status).or_default() += 1;
            if self.other.len() < MAX_KEPT {
                self.other.push(Status { ts_ns, pid, fd, status, source, cause: None });
            }
            return;
        }
        let cause = self.pending.get_mut(&pid).and_then(|q| {
            let i = q.iter().rposition(|c| c.kind.status() == status && c.ts_ns <= ts_ns && ts_ns - c.ts_ns <= MAX_GAP_NS)?;
            q.remove(i)
        });
        if self.statuses.len() < MAX_KEPT {
            self.statuses.push(Status { ts_ns, pid, fd, status, source, cause });
        } else {
            self.dropped += 1;
        }
    }

    /// Hand over the statuses whose verdict can no longer change (the daemon counts them and
    /// keeps nothing): a cut request's worker death may show up to `FORWARD_WINDOW_NS` after it,
    /// so a status is handed over once that long has passed at `now_ns`; after `finish`, all.
    pub fn take_settled(&mut self, now_ns: u64) -> Vec<Status> {
        let finished = self.finished;
        let settled = |st: &Status| finished || now_ns.saturating_sub(st.ts_ns) > FORWARD_WINDOW_NS;
        let (out, keep) = std::mem::take(&mut self.statuses).into_iter().partition(settled);
        self.statuses = keep;
        out
    }

    /// At the end: whatever is still pending was absorbed.
    pub fn finish(&mut self) {
        self.finished = true;
        for q in self.pending.values_mut() {
            for c in q.drain(..) {
                *self.absorbed.entry(c.kind).or_default() += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cause(ts: u64, pid: u32, kind: CauseKind) -> Cause {
        Cause { ts_ns: ts, pid, kind, target: None, age_ns: 0, idle_ns: 0 }
    }

    #[test]
    fn joins_by_worker_and_status_kind() {
        let mut c = Correlator::default();
        c.cause(cause(10, 1, CauseKind::ConnectError(11)));
        c.cause(cause(11, 2, CauseKind::ProxyAbort));
        c.cause(cause(12, 1, CauseKind::Premature));
        c.status(13, 1, 5, 502, StatusSource::KernelWritev); // the latest 502 cause of worker 1
        c.status(14, 1, 6, 502, StatusSource::KernelWritev);
        c.status(15, 2, 7, 504, StatusSource::KernelWritev);
        c.status(16, 2, 8, 504, StatusSource::KernelWritev); // nothing left: unexplained
        c.status(17, 2, 9, 500, StatusSource::KernelWritev);
        let kinds: Vec<_> = c.statuses.iter().map(|s| s.cause.as_ref().map(|c| c.kind)).collect();
        assert_eq!(kinds, vec![Some(CauseKind::Premature), Some(CauseKind::ConnectError(11)), Some(CauseKind::ProxyAbort), None]);
        assert_eq!(c.other_5xx[&500], 1);
    }

    #[test]
    fn old_or_unanswered_causes_are_absorbed() {
        let mut c = Correlator::default();
        c.cause(cause(0, 1, CauseKind::KeepaliveRace));
        c.cause(cause(3_000_000_000, 1, CauseKind::ConnectError(11)));
        c.status(3_000_000_100, 1, 5, 502, StatusSource::KernelWritev);
        assert!(c.take_settled(3_000_000_100).is_empty(), "its cut request may still be explained");
        let settled = c.take_settled(4_100_000_000);
        assert_eq!(settled.len(), 1, "settled a second later");
        assert_eq!(settled[0].cause.as_ref().unwrap().kind, CauseKind::ConnectError(11));
        c.finish();
        assert_eq!(c.absorbed[&CauseKind::KeepaliveRace], 1);
        assert!(c.statuses.is_empty(), "handed over");
    }
}
