//! When each connect() reached an upstream and when each request's last response byte came back:
//! kept only when asked (`tracer report --what-if`), for the queue model in `diagnosis::what_if`.

use std::collections::BTreeMap;

use crate::kernel::sockaddr::Target;

/// Most instants kept over all targets (16 MiB); the rest are counted in `dropped`.
const MAX_INSTANTS: usize = 2_000_000;

#[derive(Default)]
pub struct History {
    /// Per target: every connect() (served or refused), monotonic ns, in order.
    pub arrivals: BTreeMap<Target, Vec<u64>>,
    /// Per target: every request's last response byte, monotonic ns, in order.
    pub completions: BTreeMap<Target, Vec<u64>>,
    kept: usize,
    pub dropped: u64,
}

impl History {
    fn push(kept: &mut usize, dropped: &mut u64, v: &mut Vec<u64>, ts: u64) {
        if *kept >= MAX_INSTANTS {
            *dropped += 1;
            return;
        }
        *kept += 1;
        v.push(ts);
    }

    pub fn arrival(&mut self, target: &Target, ts_ns: u64) {
        let v = self.arrivals.entry(target.clone()).or_default();
        Self::push(&mut self.kept, &mut self.dropped, v, ts_ns);
    }

    pub fn completion(&mut self, target: &Target, ts_ns: u64) {
        let v = self.completions.entry(target.clone()).or_default();
        Self::push(&mut self.kept, &mut self.dropped, v, ts_ns);
    }
}
