//! Indexes of the kernel-side loss counters (a per-CPU array, summed by userspace). Every place a
//! kernel program has to give up on an event increments one of these, so nothing is lost silently.

/// The ring buffer had no room: an event was dropped.
pub const RINGBUF_FULL: u32 = 0;
/// The map that pairs a syscall's enter with its exit was full: that call is not reported.
pub const PENDING_MAP_FULL: u32 = 1;
/// Reading the caller's sockaddr from user memory failed: reported with an empty address.
pub const ADDR_READ_FAILED: u32 = 2;
/// A per-connection map (TCP connect or accept-queue state) was full: that connection is not
/// followed.
pub const CONN_MAP_FULL: u32 = 3;
/// A connect()ed or accept()ed fd could not be resolved to its socket (kernel layout unknown or
/// a read failed): that connection is not followed.
pub const SOCK_LOOKUP_FAILED: u32 = 4;
/// A followed connection was close()d after its state had been evicted from the full (LRU)
/// connection map: its requests from the eviction on were not seen. Raise `--map-entries`.
pub const CONN_EVICTED: u32 = 5;
/// Number of counters.
pub const COUNT: u32 = 6;

/// Human names, indexed like the constants above.
pub const NAMES: [&str; COUNT as usize] =
    ["ringbuf_full", "pending_map_full", "addr_read_failed", "conn_map_full", "sock_lookup_failed", "conn_evicted"];
