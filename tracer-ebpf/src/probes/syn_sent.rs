//! What happens to a connect in SYN_SENT: `tcp:tcp_retransmit_skb` (state SYN_SENT: a SYN
//! retransmit, so the previous SYN got no answer — the client side of a full accept queue) and
//! `tcp:tcp_receive_reset` (a RST in SYN_SENT: nothing listening, refused; a RST on an
//! established connection not used yet: `tcp_abort_on_overflow` at a full accept queue).
//!
//! Why: a SYN dropped at a full accept queue fires no event at the listener; the retransmit on
//! the connect side is how the drop is seen and counted. A refused TCP connect does not fail
//! connect() (nginx's is non-blocking: EINPROGRESS); the RST is where it shows.
//!
//! When absent: no SYN retransmit counts (SYN drops are then not inferred) / refused connects
//! are reported as abandoned. Both only annotate `tcp_state`'s entry for the socket.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_common::{
    linux::TCP_SYN_SENT,
    offsets::{tcp_receive_reset, tcp_retransmit_skb},
};

use super::tcp_state::{note_reset, note_syn_retransmit};
use crate::maps::{field, preamble};

#[tracepoint]
pub fn tcp_retransmit(ctx: TracePointContext) -> u32 {
    preamble!();
    let state: i32 = field(&ctx, tcp_retransmit_skb::STATE);
    if state == TCP_SYN_SENT {
        note_syn_retransmit(field(&ctx, tcp_retransmit_skb::SKADDR));
    }
    0
}

#[tracepoint]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    preamble!();
    let sk = field(&ctx, tcp_receive_reset::SKADDR);
    note_reset(sk);
    // A followed connection reset before its first request: the listener's answer to a final
    // ACK its full accept queue had no room for, with tcp_abort_on_overflow = 1.
    crate::requests::on_reset(sk);
    0
}
