//! Per-upstream-target connect() statistics: attempts, failures by errno (with first/last time),
//! connect() duration, and the listener behind the target as sampled while it was failing.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use crate::host::listeners::{Listener, Owner};
use crate::kernel::events::Connect;
use crate::kernel::sockaddr::Target;
use crate::state::lookups::Lookups;

/// Count, first and last time (monotonic ns) of one errno on one target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrnoCount {
    pub count: u64,
    pub first_ns: u64,
    pub last_ns: u64,
}

/// Where the backlog the owner asked for comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backlog {
    /// Seen in a listen() call while we were tracing.
    Traced(i32),
    /// Not seen, but the effective maximum is below somaxconn, so listen() was called with exactly
    /// that value (the kernel only caps at somaxconn).
    Derived(u32),
    /// Not seen and the effective maximum equals somaxconn: listen() asked for at least that.
    AtLeast(u32),
}

impl Backlog {
    pub fn value(&self) -> i64 {
        match *self {
            Backlog::Traced(b) => b as i64,
            Backlog::Derived(b) | Backlog::AtLeast(b) => b as i64,
        }
    }
    pub fn source(&self) -> &'static str {
        match self {
            Backlog::Traced(_) => "traced",
            Backlog::Derived(_) => "derived",
            Backlog::AtLeast(_) => "at_least",
        }
    }
}

/// The listener behind a target, as last sampled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerView {
    pub listener: Listener,
    pub owner: Option<Owner>,
    pub backlog: Option<Backlog>,
    pub somaxconn: Option<u32>,
}

impl ListenerView {
    /// A fresh sample of `l`; the owner lookup (a /proc scan) is reused from `prev` while the
    /// socket is the same.
    pub fn new(
        l: Listener,
        prev: Option<&ListenerView>,
        backlog_seen: Option<i32>,
        owner: impl FnOnce(u32) -> Option<Owner>,
        somaxconn: Option<u32>,
    ) -> ListenerView {
        let owner = match prev {
            Some(v) if v.listener.inode == l.inode && v.owner.is_some() => v.owner.clone(),
            _ => owner(l.inode),
        };
        let backlog = match (backlog_seen, somaxconn) {
            (Some(b), _) => Some(Backlog::Traced(b)),
            (None, Some(max)) if l.queue_max < max => Some(Backlog::Derived(l.queue_max)),
            (None, Some(max)) => Some(Backlog::AtLeast(max)),
            (None, None) => None,
        };
        ListenerView { listener: l, owner, backlog, somaxconn }
    }
}

#[derive(Clone, Debug)]
pub struct TargetStats {
    pub target: Target,
    /// Every connect() to this target (successful, in progress or failed).
    pub connects: u64,
    pub errors: BTreeMap<i32, ErrnoCount>,
    /// connect() call duration, nanoseconds.
    pub duration_ns: Histogram<u64>,
    /// Last listener sample (None: never sampled, or no listener at the time).
    pub listener: Option<ListenerView>,
    /// Largest queue length seen in any sample.
    pub peak_queue_len: u32,
    /// Monotonic time of the last sample attempt.
    pub sampled_ns: Option<u64>,
    /// Changed since the last summary was printed.
    pub dirty: bool,
    /// Most connect() calls seen within any 100 ms: the burst the listener had to absorb.
    pub peak_burst: u32,
    recent: std::collections::VecDeque<u64>,
}

impl TargetStats {
    fn new(target: Target) -> TargetStats {
        TargetStats {
            target,
            connects: 0,
            errors: BTreeMap::new(),
            duration_ns: Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("static bounds"),
            listener: None,
            peak_queue_len: 0,
            sampled_ns: None,
            dirty: true,
            peak_burst: 0,
            recent: std::collections::VecDeque::new(),
        }
    }

    pub fn failed(&self) -> u64 {
        self.errors.values().map(|e| e.count).sum()
    }

    pub fn errno_count(&self, errno: i32) -> u64 {
        self.errors.get(&errno).map_or(0, |e| e.count)
    }
}

/// All targets, keyed by target; capped so a scan of many addresses cannot grow memory without
/// bound (connects to targets past the cap are counted in `untracked`).
pub struct ConnectStats {
    targets: BTreeMap<Target, TargetStats>,
    max_targets: usize,
    pub untracked: u64,
}

/// The window of `peak_burst`.
const BURST_WINDOW_NS: u64 = 100_000_000;

/// How often a failing target's listener is sampled at most.
pub const SAMPLE_EVERY_NS: u64 = 100_000_000;

impl ConnectStats {
    pub fn new(max_targets: usize) -> ConnectStats {
        ConnectStats { targets: BTreeMap::new(), max_targets, untracked: 0 }
    }

    /// Account one connect(). Returns whether its target's listener should be sampled now.
    pub fn record(&mut self, c: &Connect) -> bool {
        if !self.targets.contains_key(&c.target) && self.targets.len() >= self.max_targets {
            self.untracked += 1;
            return false;
        }
        // Clone the target only for a new entry: this runs for every connect().
        if !self.targets.contains_key(&c.target) {
            self.targets.insert(c.target.clone(), TargetStats::new(c.target.clone()));
        }
        let t = self.targets.get_mut(&c.target).expect("inserted above");
        t.connects += 1;
        t.dirty = true;
        while t.recent.front().is_some_and(|&old| c.ts_ns.saturating_sub(old) > BURST_WINDOW_NS) {
            t.recent.pop_front();
        }
        t.recent.push_back(c.ts_ns);
        t.peak_burst = t.peak_burst.max(t.recent.len() as u32);
        let _ = t.duration_ns.record(c.duration_ns.max(1));
        if !c.failed() {
            return false;
        }
        let e = t.errors.entry(c.errno).or_insert(ErrnoCount { count: 0, first_ns: c.ts_ns, last_ns: c.ts_ns });
        e.count += 1;
        e.last_ns = e.last_ns.max(c.ts_ns);
        e.first_ns = e.first_ns.min(c.ts_ns);
        t.sampled_ns.is_none_or(|s| c.ts_ns.saturating_sub(s) >= SAMPLE_EVERY_NS)
    }

    /// A connect() by the proxy; its target's listener is sampled while it is failing: its queue
    /// is what explains EAGAIN. Returns the sample taken, if any: (when, waiting, max).
    pub fn on_connect(&mut self, c: &Connect, host: &mut Lookups) -> Option<(u64, u32, u32)> {
        if !self.record(c) {
            return None;
        }
        let l = host.env.listener_for(&c.target);
        let now = host.now_ns();
        let prev = self.targets.get(&c.target).and_then(|t| t.listener.clone());
        let view = l.map(|l| host.listener_view(l, prev.as_ref(), now));
        let sample = view.as_ref().map(|v| (now, v.listener.queue_len, v.listener.queue_max));
        self.record_sample(&c.target, now, view);
        sample
    }

    /// Store a listener sample for `target` taken at `now_ns` (None: no listener found).
    pub fn record_sample(&mut self, target: &Target, now_ns: u64, view: Option<ListenerView>) {
        let Some(t) = self.targets.get_mut(target) else { return };
        t.sampled_ns = Some(now_ns);
        let Some(view) = view else { return };
        t.peak_queue_len = t.peak_queue_len.max(view.listener.queue_len);
        t.listener = Some(view);
        t.dirty = true;
    }

    pub fn get(&self, target: &Target) -> Option<&TargetStats> {
        self.targets.get(target)
    }

    pub fn targets(&self) -> impl Iterator<Item = &TargetStats> {
        self.targets.values()
    }

    /// Targets changed since the last call, marking them clean.
    pub fn take_dirty(&mut self) -> Vec<TargetStats> {
        super::take_dirty(self.targets.values_mut(), |t| &mut t.dirty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect(target: &str, errno: i32, ts_ns: u64) -> Connect {
        Connect { ts_ns, pid: 1, tid: 1, comm: "nginx".into(), fd: 3, target: Target::UnixPath(target.as_bytes().to_vec()), errno, duration_ns: 1000 }
    }

    #[test]
    fn counts_failures_per_target_and_errno() {
        let mut s = ConnectStats::new(16);
        assert!(s.record(&connect("/a", 11, 10)));
        s.record(&connect("/a", 11, 50));
        s.record(&connect("/a", 0, 60));
        s.record(&connect("/a", 115, 70)); // EINPROGRESS: not a failure
        s.record(&connect("/b", 2, 80));
        let a = s.get(&Target::UnixPath(b"/a".to_vec())).unwrap();
        assert_eq!((a.connects, a.failed(), a.errno_count(11)), (4, 2, 2));
        assert_eq!(a.errors[&11], ErrnoCount { count: 2, first_ns: 10, last_ns: 50 });
        assert_eq!(s.get(&Target::UnixPath(b"/b".to_vec())).unwrap().errno_count(2), 1);
    }

    #[test]
    fn samples_are_rate_limited() {
        let mut s = ConnectStats::new(16);
        let t = Target::UnixPath(b"/a".to_vec());
        assert!(s.record(&connect("/a", 11, 1_000)));
        s.record_sample(&t, 1_000, None);
        assert!(!s.record(&connect("/a", 11, 2_000)));
        assert!(s.record(&connect("/a", 11, 1_000 + SAMPLE_EVERY_NS)));
    }

    #[test]
    fn backlog_traced_derived_or_lower_bound() {
        let l = |inode, queue_max| Listener { inode, queue_len: 17, queue_max };
        let backlog = |l, seen| ListenerView::new(l, None, seen, |_| None, Some(4096)).backlog;
        assert_eq!(backlog(l(7, 16), None), Some(Backlog::Derived(16)));
        assert_eq!(backlog(l(8, 4096), None), Some(Backlog::AtLeast(4096)));
        assert_eq!(backlog(l(8, 4096), Some(10000)), Some(Backlog::Traced(10000)));
        let mut s = ConnectStats::new(16);
        let t = Target::UnixPath(b"/a".to_vec());
        s.record(&connect("/a", 11, 1));
        s.record_sample(&t, 1, Some(ListenerView::new(l(7, 16), None, None, |_| None, Some(4096))));
        assert_eq!(s.get(&t).unwrap().peak_queue_len, 17);
    }

    #[test]
    fn targets_are_capped() {
        let mut s = ConnectStats::new(2);
        s.record(&connect("/a", 11, 1));
        s.record(&connect("/b", 11, 1));
        s.record(&connect("/c", 11, 1));
        s.record(&connect("/a", 11, 2));
        assert_eq!(s.targets().count(), 2);
        assert_eq!(s.untracked, 1);
    }
}
