//! What happened when, per upstream: each connect() (and whether it failed), each completed
//! request (its last byte and time to first byte), the listener's queue sampled at every tick.
//! Kept only when asked (`diagnose`/`record`, `report --html` or `--what-if`): for the queue
//! model in `diagnosis::what_if` and the plots in `diagnosis::series`.

use std::collections::BTreeMap;

use crate::kernel::sockaddr::Target;

/// Most instants kept over all targets (16 MiB); the rest are counted in `dropped`.
const MAX_INSTANTS: usize = 2_000_000;

#[derive(Default)]
pub struct History {
    /// Per target: every connect() (served or refused), monotonic ns, in order.
    pub arrivals: BTreeMap<Target, Vec<u64>>,
    /// Per target: every failed connect(), monotonic ns, in order.
    pub failures: BTreeMap<Target, Vec<u64>>,
    /// Per target: every request's last response byte, monotonic ns, in order.
    pub completions: BTreeMap<Target, Vec<u64>>,
    /// Per target: each completed request's time to first byte, ns, in the order of `completions`.
    pub ttfb: BTreeMap<Target, Vec<u64>>,
    /// Per target: (sampled at, waiting, max) of its listener, at every tick and whenever it was
    /// sampled because connects to it failed.
    pub queue: BTreeMap<Target, Vec<(u64, u32, u32)>>,
    /// Per local TCP listener (`state::tcp::ListenerKey`): final ACKs dropped at its full accept
    /// queue, when; and SYNs dropped, inferred from a traced connect's retransmits, when that
    /// connect left SYN_SENT.
    pub ack_drops: BTreeMap<(bool, u16), Vec<u64>>,
    pub syn_drops: BTreeMap<(bool, u16), Vec<(u64, u32)>>,
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

    pub fn failure(&mut self, target: &Target, ts_ns: u64) {
        let v = self.failures.entry(target.clone()).or_default();
        Self::push(&mut self.kept, &mut self.dropped, v, ts_ns);
    }

    pub fn completion(&mut self, target: &Target, ts_ns: u64, ttfb_ns: u64) {
        if self.kept + 2 > MAX_INSTANTS {
            self.dropped += 1;
            return;
        }
        self.kept += 2;
        self.completions.entry(target.clone()).or_default().push(ts_ns);
        self.ttfb.entry(target.clone()).or_default().push(ttfb_ns);
    }

    pub fn ack_drop(&mut self, listener: (bool, u16), ts_ns: u64) {
        let v = self.ack_drops.entry(listener).or_default();
        Self::push(&mut self.kept, &mut self.dropped, v, ts_ns);
    }

    pub fn syn_drops(&mut self, listener: (bool, u16), ts_ns: u64, n: u32) {
        if self.kept >= MAX_INSTANTS {
            self.dropped += 1;
            return;
        }
        self.kept += 1;
        self.syn_drops.entry(listener).or_default().push((ts_ns, n));
    }

    pub fn queue_sample(&mut self, target: &Target, ts_ns: u64, waiting: u32, max: u32) {
        if self.kept + 2 > MAX_INSTANTS {
            self.dropped += 1;
            return;
        }
        self.kept += 2;
        self.queue.entry(target.clone()).or_default().push((ts_ns, waiting, max));
    }
}
