//! Everything the collector asks the host (sock_diag, /proc, clocks, counters) goes through here,
//! so a recording can store the answers and a report can replay them: live, live + recording, or
//! replay. The collector's logic is then the same code in `watch`, `diagnose` and `report`.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

use serde::{de::DeserializeOwned, Serialize};

use crate::listeners::{self, Listener, Owner};
use crate::record::{Mark, Record, Recorder};
use crate::sockaddr::Target;
use crate::source::Lost;
use crate::timebase::Timebase;

pub struct Env {
    replay: Option<VecDeque<(String, serde_json::Value)>>,
    recorder: Option<Recorder>,
    /// The first way a replay diverged from its recording, if any.
    pub replay_error: Option<String>,
    /// Writing the record file failed (reported once at the end).
    pub record_error: Option<std::io::Error>,
}

impl Env {
    pub fn live(recorder: Option<Recorder>) -> Env {
        Env { replay: None, recorder, replay_error: None, record_error: None }
    }

    /// Answers in recorded order (the non-answer records are driven by the caller).
    pub fn replay(records: &[Record]) -> Env {
        let answers = records
            .iter()
            .filter_map(|r| match r {
                Record::Answer { call, value } => Some((call.clone(), value.clone())),
                _ => None,
            })
            .collect();
        Env { replay: Some(answers), recorder: None, replay_error: None, record_error: None }
    }

    pub fn is_replay(&self) -> bool {
        self.replay.is_some()
    }

    fn answer<T: Serialize + DeserializeOwned + Default>(&mut self, call: &'static str, live: impl FnOnce() -> T) -> T {
        if let Some(q) = self.replay.as_mut() {
            return match q.pop_front() {
                Some((c, v)) if c == call => serde_json::from_value(v).unwrap_or_else(|e| {
                    self.replay_error.get_or_insert(format!("answer to {call} does not decode: {e}"));
                    T::default()
                }),
                other => {
                    self.replay_error
                        .get_or_insert(format!("expected an answer to {call}, found {:?}", other.map(|o| o.0)));
                    T::default()
                }
            };
        }
        let v = live();
        self.write(|r| r.answer(call, &v));
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
        self.answer("now_ns", Timebase::monotonic_now_ns)
    }

    pub fn listener_for(&mut self, t: &Target) -> Option<Listener> {
        self.answer("listener_for", || {
            listeners::listener_for(t).unwrap_or_else(|e| {
                log::warn!("sock_diag for {t}: {e}");
                None
            })
        })
    }

    pub fn tcp_listener_bound(&mut self, a: SocketAddr) -> Option<(SocketAddr, Listener)> {
        self.answer("tcp_listener_bound", || listeners::tcp_listener_bound(a).ok().flatten())
    }

    pub fn owner_of(&mut self, inode: u32) -> Option<Owner> {
        self.answer("owner_of", || listeners::owner_of(inode))
    }

    pub fn children(&mut self, pid: u32) -> Vec<u32> {
        self.answer("children", || listeners::children(pid))
    }

    pub fn socket_inode(&mut self, pid: u32, fd: i32) -> Option<u32> {
        self.answer("socket_inode", || listeners::socket_inode(pid, fd))
    }

    pub fn somaxconn(&mut self) -> Option<u32> {
        self.answer("somaxconn", listeners::somaxconn)
    }

    pub fn nstat(&mut self) -> BTreeMap<String, u64> {
        self.answer("nstat", crate::netstat::read)
    }

    /// Events decoded and lost so far (from the live source).
    pub fn source_stats(&mut self, live: impl FnOnce() -> (u64, Lost)) -> (u64, Lost) {
        self.answer("source_stats", live)
    }

    /// nginx error-log lines written since the start (see `nginx::ErrorLog`).
    pub fn error_log_lines(&mut self, live: impl FnOnce() -> Vec<String>) -> Vec<String> {
        self.answer("error_log_lines", live)
    }
}
