//! The event ring buffer as an async source of decoded events, and the kernel's loss counters.

use anyhow::Context as _;
use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::Ebpf;
use tokio::io::unix::AsyncFd;
use tracer_common::Counter;

use crate::kernel::events::Event;

pub struct Source {
    ring: AsyncFd<RingBuf<MapData>>,
    counters: PerCpuArray<MapData, u64>,
    /// Our loaded programs, for the runs the kernel skipped (`runs_skipped`).
    programs: Vec<aya::programs::ProgramFd>,
    /// Records userspace could not decode (a version mismatch would show here).
    pub decode_errors: u64,
    pub events: u64,
}

/// Events the kernel side dropped, by reason (the kernel's counters are `tracer_common::Counter`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lost {
    pub ringbuf_full: u64,
    pub pending_map_full: u64,
    /// A per-connection map was full: a connection is not followed (LRU evictions are counted
    /// as `conn_evicted` instead).
    #[serde(default)]
    pub conn_map_full: u64,
    pub addr_read_failed: u64,
    /// A connect()ed or accept()ed fd could not be resolved to its socket: that connection's
    /// requests (or accept wait) are not followed.
    #[serde(default)]
    pub sock_lookup_failed: u64,
    /// A followed connection's state had been evicted from the full connection map when it was
    /// closed: its requests after the eviction were not seen (`--map-entries` raises the size).
    #[serde(default)]
    pub conn_evicted: u64,
    /// Times the kernel skipped one of our programs because another BPF program was already
    /// running on that CPU (e.g. a drop in a softirq that interrupted a syscall hook): the
    /// programs' `recursion_misses`, summed. Each may be a missed event.
    #[serde(default)]
    pub runs_skipped: u64,
    pub decode_errors: u64,
}

impl Lost {
    /// Every counter by its name (the Prometheus `reason` label and the JSON key).
    pub fn by_reason(&self) -> [(&'static str, u64); 8] {
        [
            ("ringbuf_full", self.ringbuf_full),
            ("pending_map_full", self.pending_map_full),
            ("conn_map_full", self.conn_map_full),
            ("sock_lookup_failed", self.sock_lookup_failed),
            ("conn_evicted", self.conn_evicted),
            ("runs_skipped", self.runs_skipped),
            ("addr_read_failed", self.addr_read_failed),
            ("decode_errors", self.decode_errors),
        ]
    }

    /// Events or connections lost: every counter but `addr_read_failed` (that event was still
    /// reported, with an empty address).
    pub fn total_dropped(&self) -> u64 {
        self.by_reason().iter().filter(|(r, _)| *r != "addr_read_failed").map(|(_, n)| n).sum()
    }
}

impl Source {
    pub fn new(ebpf: &mut Ebpf) -> anyhow::Result<Source> {
        let ring = RingBuf::try_from(ebpf.take_map("EVENTS").context("map EVENTS missing")?)?;
        let counters = PerCpuArray::try_from(ebpf.take_map("COUNTERS").context("map COUNTERS missing")?)?;
        // SAFETY: the ring buffer owns its map fd and moves into the AsyncFd, so the fd stays open
        // for as long as it is registered.
        let ring = unsafe { AsyncFd::register(ring) }.map_err(std::io::Error::from)?;
        // Programs left unloaded (skipped, or not attachable here) have no fd: nothing to count.
        let programs = ebpf.programs().filter_map(|(_, p)| p.fd().ok()?.try_clone().ok()).collect();
        Ok(Source { ring, counters, programs, decode_errors: 0, events: 0 })
    }

    /// Wait until the ring buffer has data, then hand every record to `f`.
    pub async fn next_batch(&mut self, mut f: impl FnMut(Event, &[u8])) -> anyhow::Result<()> {
        let mut guard = self.ring.readable_mut().await?;
        let (events, errors) = drain_ring(guard.get_inner_mut(), &mut f);
        guard.clear_ready();
        self.events += events;
        self.decode_errors += errors;
        Ok(())
    }

    /// Hand every record already in the ring buffer to `f` (used at exit).
    pub fn drain(&mut self, mut f: impl FnMut(Event, &[u8])) {
        let (events, errors) = drain_ring(self.ring.get_mut(), &mut f);
        self.events += events;
        self.decode_errors += errors;
    }

    pub fn lost(&self) -> Lost {
        let sum = |c: Counter| self.counters.get(&(c as u32), 0).map(|v| v.iter().sum::<u64>()).unwrap_or(0);
        Lost {
            ringbuf_full: sum(Counter::RingbufFull),
            pending_map_full: sum(Counter::PendingMapFull),
            conn_map_full: sum(Counter::ConnMapFull),
            addr_read_failed: sum(Counter::AddrReadFailed),
            sock_lookup_failed: sum(Counter::SockLookupFailed),
            conn_evicted: sum(Counter::ConnEvicted),
            runs_skipped: self.programs.iter().map(recursion_misses).sum(),
            decode_errors: self.decode_errors,
        }
    }
}

/// A program's `recursion_misses` from /proc/self/fdinfo (the kernel counts them per program;
/// aya's ProgramInfo does not expose them). 0 when unreadable.
fn recursion_misses(p: &aya::programs::ProgramFd) -> u64 {
    use std::os::fd::{AsFd, AsRawFd};
    let path = format!("/proc/self/fdinfo/{}", p.as_fd().as_raw_fd());
    std::fs::read_to_string(path).ok().and_then(|s| s.lines().find_map(|l| l.strip_prefix("recursion_misses:")?.trim().parse().ok())).unwrap_or(0)
}

/// Decode and hand on every record in the ring; returns (decoded, undecodable).
fn drain_ring(ring: &mut RingBuf<MapData>, f: &mut impl FnMut(Event, &[u8])) -> (u64, u64) {
    let (mut events, mut errors) = (0, 0);
    while let Some(item) = ring.next() {
        match Event::decode(&item) {
            Ok(e) => {
                events += 1;
                f(e, &item);
            }
            Err(err) => {
                errors += 1;
                log::debug!("undecodable record: {err}");
            }
        }
    }
    (events, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's counters keep their names in the outputs.
    #[test]
    fn every_kernel_counter_is_reported_under_its_name() {
        let names: Vec<_> = Lost::default().by_reason().iter().map(|(r, _)| *r).collect();
        for c in Counter::ALL {
            assert!(names.contains(&c.as_str()), "{c} missing from Lost::by_reason");
        }
    }
}
