//! The end of an upstream connection from the proxy's side, from `syscalls:sys_enter_close`, and
//! cleanup from `tcp:tcp_destroy_sock`.
//!
//! Why: a close() with a request outstanding is the proxy giving up (a proxy abort: its timeout,
//! a 504); with a response under way it ends the request; on a TCP connection that never carried
//! a request it is a connect given up as it established. Only the followed fds of traced tasks
//! matter: `requests` finds them by (tgid, fd). tcp_destroy_sock forgets TCP sockets that vanish
//! without a close() we saw (the LRU map would evict them eventually anyway).
//!
//! When absent: sys_enter_close — no proxy aborts or unused connects, and a response the proxy
//! closed on is reported when the state is evicted, not at all; tcp_destroy_sock — dead TCP
//! connections stay in the map until evicted.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_common::offsets::{sys_enter_close, tcp_destroy_sock};

use crate::maps::{field, preamble};
use crate::requests;

#[tracepoint]
pub fn close_enter(ctx: TracePointContext) -> u32 {
    let id = preamble!(traced);
    requests::on_close(id, field::<u64>(&ctx, sys_enter_close::FD) as i32);
    0
}

#[tracepoint]
pub fn tcp_destroy(ctx: TracePointContext) -> u32 {
    preamble!();
    requests::forget(field(&ctx, tcp_destroy_sock::SKADDR));
    0
}
