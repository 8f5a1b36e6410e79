//! Packets dropped at a full accept queue, from `skb:kfree_skb` (with `reason` and `rx_sk`).
//!
//! Why: a final ACK (or, with SYN cookies, the first data) that cannot get a child socket
//! because the listener's accept queue is full is freed with reason TCP_LISTEN_OVERFLOW, or
//! NO_SOCKET (what 6.x reports for a SYN-cookie ACK), with `rx_sk` = the listener. The reason
//! values differ between kernels: the loader reads them from the tracepoint's format and sets
//! them here. A dropped SYN fires no event at all (userspace infers it from the connect side).
//!
//! When absent (or the kernel's kfree_skb has no such reasons): no final-ACK drop counts per
//! listener; SYN drops are still inferred from the connect side and checked against nstat.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_common::{linux::TCP_LISTEN, offsets::kfree_skb as record, Kind, ListenOverflowEvent};

use crate::layout::{listener_addr, tcp_state};
use crate::maps::{field, header, output, preamble};

/// skb_drop_reason values of TCP_LISTEN_OVERFLOW and NO_SOCKET, read by userspace from the
/// tracepoint's format and set at load time; 0 = unknown.
#[no_mangle]
static LISTEN_OVERFLOW_REASON: u32 = 0;
#[no_mangle]
static NO_SOCKET_REASON: u32 = 0;

#[tracepoint]
pub fn kfree_skb(ctx: TracePointContext) -> u32 {
    preamble!();
    let reason: u32 = field(&ctx, record::REASON);
    let overflow = unsafe { core::ptr::read_volatile(&LISTEN_OVERFLOW_REASON) };
    let no_socket = unsafe { core::ptr::read_volatile(&NO_SOCKET_REASON) };
    if reason == 0 || (reason != overflow && reason != no_socket) {
        return 0;
    }
    let sk: u64 = field(&ctx, record::RX_SK);
    // Only drops at a listening socket are accept-queue overflows.
    if sk == 0 || tcp_state(sk) != TCP_LISTEN {
        return 0;
    }
    let (port, family, addr4) = listener_addr(sk);
    // Softirq context: the current task is whoever was interrupted, so no process in the header.
    let mut hdr = header(Kind::ListenOverflow, 0);
    hdr.comm = [0; 16];
    output(&ListenOverflowEvent { hdr, skaddr: sk, family, port, addr4, reason, _pad: 0 });
    0
}
