//! Everything the collector asks the host (sock_diag, /proc, clocks, counters) goes through here,
//! so a recording can store the answers and a report can replay them: live, live + recording, or
//! replay. The collector's logic is then the same code in `watch`, `diagnose` and `report`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;

use serde::{de::DeserializeOwned, Serialize};

use crate::host::listeners::{self, Listener, Owner};
use crate::host::record::{Mark, Record, Recorder};
use crate::host::timebase::Timebase;
use crate::kernel::sockaddr::Target;
use crate::kernel::source::Lost;

pub struct Env {
    /// Recorded answers per (question, argument), each in the order they were given: a newer
    /// collector that asks in another order, or less often, still finds its answers.
    replay: Option<HashMap<(String, String), VecDeque<serde_json::Value>>>,
    /// Questions a replay had no recorded answer for (answered with "nothing").
    pub unanswered: u64,
    recorder: Option<Recorder>,
    /// The first way a replay diverged from its recording, if any.
    pub replay_error: Option<String>,
    /// Writing the record file failed (reported once at the end).
    pub record_error: Option<std::io::Error>,
}

impl Env {
    pub fn live(recorder: Option<Recorder>) -> Env {
        Env { replay: None, unanswered: 0, recorder, replay_error: None, record_error: None }
    }

    /// Answers in recorded order (the non-answer records are driven by the caller).
    pub fn replay(records: &[Record]) -> Env {
        let mut answers: HashMap<(String, String), VecDeque<serde_json::Value>> = HashMap::new();
        for r in records {
            if let Record::Answer { call, args, value } = r {
                answers.entry((call.clone(), args.clone())).or_default().push_back(value.clone());
            }
        }
        Env { replay: Some(answers), unanswered: 0, recorder: None, replay_error: None, record_error: None }
    }

    pub fn is_replay(&self) -> bool {
        self.replay.is_some()
    }

    fn answer<T: Serialize + DeserializeOwned + Default>(&mut self, call: &'static str, args: String, live: impl FnOnce() -> T) -> T {
        if let Some(answers) = self.replay.as_mut() {
            let q = answers.get_mut(&(call.to_string(), args));
            // A question answered only once (a process's owner, a cached lookup) keeps its answer
            // for later askers; otherwise answers are taken in order.
            let v = match q {
                Some(q) if q.len() > 1 => q.pop_front(),
                Some(q) => q.front().cloned(),
                None => None,
            };
            return match v {
                Some(v) => serde_json::from_value(v).unwrap_or_else(|e| {
                    self.replay_error.get_or_insert(format!("answer to {call} does not decode: {e}"));
                    T::default()
                }),
                None => {
                    self.unanswered += 1;
                    T::default()
                }
            };
        }
        let v = live();
        self.write(|r| r.answer(call, &args, &v));
        v
    }

    fn write(&mut self, f: impl FnOnce(&mut Recorder) -> std::io::Result<()>) {
        if let Some(r) = self.recorder.as_mut() {
            if let Err(e) = f(r) {
                self.record_error.get_or_insert(e);
                self.recorder = None;
            }
        }
    }

    pub fn event(&mut self, raw: &[u8]) {
        self.write(|r| r.event(raw));
    }

    pub fn mark(&mut self, m: Mark) {
        self.write(|r| r.mark(m));
    }

    pub fn now_ns(&mut self) -> u64 {
        self.answer("now_ns", String::new(), Timebase::monotonic_now_ns)
    }

    pub fn listener_for(&mut self, t: &Target) -> Option<Listener> {
        self.answer("listener_for", t.to_string(), || {
            listeners::listener_for(t).unwrap_or_else(|e| {
                log::warn!("sock_diag for {t}: {e}");
                None
            })
        })
    }

    /// The listener behind `target` sampled for the queue plot (a question of its own, so a
    /// recording's `listener_for` answers stay in their order).
    pub fn queue_sample(&mut self, t: &Target) -> Option<Listener> {
        self.answer("queue_sample", t.to_string(), || listeners::listener_for(t).ok().flatten())
    }

    pub fn tcp_listener_bound(&mut self, a: SocketAddr) -> Option<(SocketAddr, Listener)> {
        self.answer("tcp_listener_bound", a.to_string(), || listeners::tcp_listener_bound(a).ok().flatten())
    }

    /// `listen`: the (pid, fd) the tracer saw call listen() on this socket, if any (a cheaper
    /// lookup; the recorded question is the same).
    pub fn owner_of(&mut self, inode: u32, listen: Option<(u32, i32)>) -> Option<Owner> {
        self.answer("owner_of", inode.to_string(), || match listen {
            Some((pid, fd)) => listeners::owner_of_listener(inode, pid, fd),
            None => listeners::owner_of(inode),
        })
    }

    pub fn children(&mut self, pid: u32) -> Vec<u32> {
        self.answer("children", pid.to_string(), || listeners::children(pid))
    }

    pub fn socket_inode(&mut self, pid: u32, fd: i32) -> Option<u32> {
        self.answer("socket_inode", format!("{pid}/{fd}"), || listeners::socket_inode(pid, fd))
    }

    /// The app server `pid` is and its settings (command line, config files, defaults).
    pub fn app_server(&mut self, pid: u32) -> Option<crate::host::appserver::AppServer> {
        self.answer("app_server", pid.to_string(), || crate::host::appserver::read(pid))
    }

    pub fn somaxconn(&mut self) -> Option<u32> {
        self.answer("somaxconn", String::new(), listeners::somaxconn)
    }

    /// `net.ipv4.tcp_abort_on_overflow` in the network namespace of `pid` (the sysctl is per
    /// namespace), or of the tracer for None.
    pub fn tcp_abort_on_overflow(&mut self, pid: Option<u32>) -> Option<u32> {
        self.answer("tcp_abort_on_overflow", pid.map(|p| p.to_string()).unwrap_or_default(), || {
            listeners::netns_sysctl(pid, "net/ipv4/tcp_abort_on_overflow")
        })
    }

    pub fn nstat(&mut self) -> BTreeMap<String, u64> {
        self.answer("nstat", String::new(), crate::host::netstat::read)
    }

    /// Events decoded and lost so far (from the live source).
    pub fn source_stats(&mut self, live: impl FnOnce() -> (u64, Lost)) -> (u64, Lost) {
        self.answer("source_stats", String::new(), live)
    }

    /// nginx error-log lines written since the start (see `nginx::ErrorLog`).
    pub fn error_log_lines(&mut self, live: impl FnOnce() -> Vec<String>) -> Vec<String> {
        self.answer("error_log_lines", String::new(), live)
    }
}
