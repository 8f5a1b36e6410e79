//! Upstream requests per target: time to first byte and to last byte, how connections ended
//! (premature close, keep-alive race, proxy abort, idle close), and — for a cut request — the
//! worker that died and who killed it (signals and exits seen around the close).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use hdrhistogram::Histogram;
use tracer_common::request::close;
use tracer_common::{ConnCloseEvent, RequestEvent};

use crate::sockaddr::Target;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("static bounds")
}

/// A process death that may explain a cut request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Death {
    pub ts_ns: u64,
    pub pid: u32,
    pub comm: String,
    /// The fatal signal sent to it, if any: (signal, sender pid, sender comm).
    pub signal: Option<(i32, u32, String)>,
    /// It exited (None: only the signal was seen so far).
    pub exited: bool,
}

/// A request the upstream cut short or the proxy gave up on.
#[derive(Clone, Debug)]
pub struct CutRequest {
    pub ts_ns: u64,
    pub pid: u32,
    pub comm: String,
    pub target: Option<Target>,
    pub ev: ConnCloseEvent,
    pub worker: Option<Death>,
}

#[derive(Clone, Debug)]
pub struct RequestStats {
    /// Requests that got at least one response byte.
    pub completed: u64,
    /// First request byte sent → first response byte.
    pub ttfb_ns: Histogram<u64>,
    /// First request byte sent → last response byte.
    pub total_ns: Histogram<u64>,
    /// Closes by class (`tracer_common::request::close::*`).
    pub closes: BTreeMap<u32, u64>,
    pub dirty: bool,
}

impl RequestStats {
    fn new() -> RequestStats {
        RequestStats { completed: 0, ttfb_ns: histogram(), total_ns: histogram(), closes: BTreeMap::new(), dirty: true }
    }
    pub fn closes_of(&self, class: u32) -> u64 {
        self.closes.get(&class).copied().unwrap_or(0)
    }
}

/// How far back a death may be to explain a cut request.
const DEATH_WINDOW_NS: u64 = 5_000_000_000;
const MAX_DEATHS: usize = 4096;
const MAX_CUT: usize = 10_000;

pub struct Requests {
    /// (pid, fd) → where that fd was last connect()ed.
    fd_target: HashMap<(u32, i32), Target>,
    pub targets: BTreeMap<Target, RequestStats>,
    /// Requests on connections whose connect() we did not see.
    pub unknown: RequestStats,
    /// Worker pids seen holding each target's listener (master + children).
    workers: HashMap<Target, HashSet<u32>>,
    deaths: VecDeque<Death>,
    /// Cut requests, newest last (capped; `cut_dropped` counts the overflow).
    pub cut: VecDeque<CutRequest>,
    pub cut_dropped: u64,
    max_targets: usize,
}

impl Requests {
    pub fn new(max_targets: usize) -> Requests {
        Requests {
            fd_target: HashMap::new(),
            targets: BTreeMap::new(),
            unknown: RequestStats::new(),
            workers: HashMap::new(),
            deaths: VecDeque::new(),
            cut: VecDeque::new(),
            cut_dropped: 0,
            max_targets,
        }
    }

    /// A connect() by the proxy: its fd now names `target`.
    pub fn record_connect(&mut self, pid: u32, fd: i32, target: &Target) {
        if self.fd_target.len() > 1_000_000 {
            self.fd_target.clear(); // bounded: stale fds of dead workers
        }
        self.fd_target.insert((pid, fd), target.clone());
    }

    pub fn target_of(&self, pid: u32, fd: i32) -> Option<&Target> {
        self.fd_target.get(&(pid, fd))
    }

    fn stats(&mut self, target: Option<&Target>) -> &mut RequestStats {
        match target {
            Some(t) if self.targets.contains_key(t) || self.targets.len() < self.max_targets => {
                self.targets.entry(t.clone()).or_insert_with(RequestStats::new)
            }
            _ => &mut self.unknown,
        }
    }

    pub fn record_request(&mut self, e: &RequestEvent) {
        let target = self.target_of(e.hdr.pid, e.fd).cloned();
        let s = self.stats(target.as_ref());
        s.completed += 1;
        let _ = s.ttfb_ns.record(e.first_byte_ns.saturating_sub(e.start_ns).max(1));
        let _ = s.total_ns.record(e.last_byte_ns.saturating_sub(e.start_ns).max(1));
        s.dirty = true;
    }

    /// Known workers of `target` (holders of its listener); accumulated, capped.
    pub fn add_workers(&mut self, target: &Target, pids: impl IntoIterator<Item = u32>) {
        let set = self.workers.entry(target.clone()).or_default();
        for p in pids {
            if set.len() < 4096 {
                set.insert(p);
            }
        }
    }

    pub fn record_signal(&mut self, ts_ns: u64, target_pid: u32, target_comm: String, sig: i32, sender_pid: u32, sender_comm: String) {
        self.push_death(Death { ts_ns, pid: target_pid, comm: target_comm, signal: Some((sig, sender_pid, sender_comm)), exited: false });
    }

    pub fn record_exit(&mut self, ts_ns: u64, pid: u32, comm: String) {
        // Merge with the signal that killed it, if we saw one.
        if let Some(d) = self.deaths.iter_mut().rev().find(|d| d.pid == pid && !d.exited) {
            d.exited = true;
            return;
        }
        self.push_death(Death { ts_ns, pid, comm, signal: None, exited: true });
    }

    fn push_death(&mut self, d: Death) {
        if self.deaths.len() >= MAX_DEATHS {
            self.deaths.pop_front();
        }
        self.deaths.push_back(d);
    }

    /// The worker of `target` that died most recently before `ts_ns` (within the window).
    fn killer(&self, target: Option<&Target>, ts_ns: u64) -> Option<Death> {
        let workers = target.and_then(|t| self.workers.get(t))?;
        self.deaths
            .iter()
            .rev()
            .filter(|d| d.ts_ns <= ts_ns && ts_ns - d.ts_ns <= DEATH_WINDOW_NS)
            .find(|d| workers.contains(&d.pid))
            .cloned()
    }

    /// A connection closed; returns the cut request when it is one (not for idle closes).
    pub fn record_close(&mut self, e: &ConnCloseEvent, comm: String) -> Option<CutRequest> {
        let target = self.target_of(e.hdr.pid, e.fd).cloned();
        let s = self.stats(target.as_ref());
        *s.closes.entry(e.class).or_default() += 1;
        s.dirty = true;
        if e.class == close::IDLE {
            return None;
        }
        let worker = match e.class {
            close::PREMATURE | close::KEEPALIVE_RACE => self.killer(target.as_ref(), e.hdr.ts_ns),
            _ => None,
        };
        let cut = CutRequest { ts_ns: e.hdr.ts_ns, pid: e.hdr.pid, comm, target, ev: *e, worker };
        if self.cut.len() >= MAX_CUT {
            self.cut.pop_front();
            self.cut_dropped += 1;
        }
        self.cut.push_back(cut.clone());
        Some(cut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_common::{request::how, EventHeader};

    fn hdr(ts_ns: u64) -> EventHeader {
        EventHeader { kind: 0, pid: 10, tid: 10, _pad: 0, ts_ns, comm: [0; 16] }
    }

    fn close_ev(class: u32, ts_ns: u64) -> ConnCloseEvent {
        ConnCloseEvent { hdr: hdr(ts_ns), sk: 1, request_age_ns: 5, idle_ns: 0, class, how: how::EOF, seq: 1, bytes_recv: 0, fd: 7, family: 1, _pad: 0 }
    }

    #[test]
    fn requests_are_attributed_to_the_fd_target() {
        let mut r = Requests::new(16);
        let t = Target::UnixPath(b"/run/app.sock".to_vec());
        r.record_connect(10, 7, &t);
        let e = RequestEvent {
            hdr: hdr(100),
            sk: 1,
            start_ns: 1_000,
            first_byte_ns: 2_001_000,
            last_byte_ns: 3_001_000,
            idle_before_ns: 0,
            bytes_sent: 10,
            bytes_recv: 20,
            seq: 1,
            end: 1,
            fd: 7,
            family: 1,
            _pad: 0,
        };
        r.record_request(&e);
        let s = &r.targets[&t];
        assert_eq!(s.completed, 1);
        assert!((s.ttfb_ns.value_at_quantile(0.5) as i64 - 2_000_000).abs() < 2_000);
        let mut unknown = e;
        unknown.fd = 8;
        r.record_request(&unknown);
        assert_eq!(r.unknown.completed, 1);
    }

    #[test]
    fn a_premature_close_names_the_killed_worker_and_its_killer() {
        let mut r = Requests::new(16);
        let t = Target::UnixPath(b"/run/app.sock".to_vec());
        r.record_connect(10, 7, &t);
        r.add_workers(&t, [100, 101]);
        r.record_signal(1_000, 999, "other".into(), 9, 1, "x".into()); // not a worker
        r.record_signal(2_000, 101, "gunicorn".into(), 9, 55, "harness".into());
        r.record_exit(2_500, 101, "gunicorn".into());
        let cut = r.record_close(&close_ev(close::PREMATURE, 3_000), "nginx".into()).unwrap();
        let w = cut.worker.unwrap();
        assert_eq!((w.pid, w.exited), (101, true));
        assert_eq!(w.signal, Some((9, 55, "harness".to_string())));
        assert!(r.record_close(&close_ev(close::IDLE, 4_000), "nginx".into()).is_none(), "idle closes are not cuts");
        assert_eq!(r.targets[&t].closes_of(close::IDLE), 1);
        assert_eq!(r.targets[&t].closes_of(close::PREMATURE), 1);
    }

    #[test]
    fn a_clean_exit_is_a_death_without_signal() {
        let mut r = Requests::new(16);
        let t = Target::UnixPath(b"/s".to_vec());
        r.record_connect(10, 7, &t);
        r.add_workers(&t, [100]);
        r.record_exit(1_000, 100, "uwsgi".into());
        let cut = r.record_close(&close_ev(close::KEEPALIVE_RACE, 2_000), "nginx".into()).unwrap();
        assert_eq!(cut.worker.unwrap().signal, None);
    }
}
