//! The kernel-side loss counters (a per-CPU array indexed by [`Counter`], summed by userspace).
//! Every place a kernel program has to give up on an event increments one of these, so nothing is
//! lost silently.

use crate::codes;

codes! {
    /// Index of a loss counter; the name is the JSON key and the Prometheus `reason` label.
    pub enum Counter: u32 {
        /// The ring buffer had no room: an event was dropped.
        RingbufFull = 0 => "ringbuf_full",
        /// The map that pairs a syscall's enter with its exit was full: that call is not reported.
        PendingMapFull = 1 => "pending_map_full",
        /// Reading the caller's sockaddr from user memory failed: reported with an empty address.
        AddrReadFailed = 2 => "addr_read_failed",
        /// A per-connection map (TCP connect or accept-queue state) was full: that connection is
        /// not followed.
        ConnMapFull = 3 => "conn_map_full",
        /// A connect()ed or accept()ed fd could not be resolved to its socket (kernel layout
        /// unknown or a read failed): that connection is not followed.
        SockLookupFailed = 4 => "sock_lookup_failed",
        /// A followed connection was close()d after its state had been evicted from the full
        /// (LRU) connection map: its requests from the eviction on were not seen. Raise
        /// `--map-entries`.
        ConnEvicted = 5 => "conn_evicted",
    }
}

/// Number of counters (entries of the per-CPU array).
pub const COUNT: u32 = Counter::ALL.len() as u32;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_keep_their_indexes_and_names() {
        crate::codes::assert_table::<Counter>(&[
            (0, "ringbuf_full"),
            (1, "pending_map_full"),
            (2, "addr_read_failed"),
            (3, "conn_map_full"),
            (4, "sock_lookup_failed"),
            (5, "conn_evicted"),
        ]);
        // Indexes of an array: dense from 0.
        assert!(Counter::ALL.iter().enumerate().all(|(i, c)| *c as usize == i));
        assert_eq!(COUNT, 6);
    }
}
