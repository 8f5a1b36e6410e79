//! The proxy's socket I/O, from `sock:sock_send_length` / `sock:sock_recv_length` as raw
//! tracepoints (Linux ≥ 6.3).
//!
//! Why: they give the socket, the result and the flags of every send/recv on every family (unix
//! included) in the caller's context: the per-connection request state machine (`requests`,
//! `tracer_common::conn`) runs on them, so only state changes reach userspace, not every
//! send/recv. Raw tracepoints take the arguments as passed (no record is filled): they fire on
//! every send/recv of every process, and the map lookup by socket decides at once.
//!
//! When absent (older kernels): no request tracking (latency, premature closes, keep-alive
//! races, proxy aborts, and so no worker blamed for a 502); nginx's error log is then the only
//! evidence of cut requests.

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use tracer_common::offsets::sock_msg_length_args as args;

use crate::maps::preamble;
use crate::requests;

/// (struct sock *sk, int ret, int flags).
#[inline(always)]
fn io_args(ctx: &RawTracePointContext) -> (u64, i32) {
    (ctx.arg::<u64>(args::SK as usize), ctx.arg::<u64>(args::RET as usize) as i32)
}

#[raw_tracepoint(tracepoint = "sock_send_length")]
pub fn sock_send(ctx: RawTracePointContext) -> u32 {
    preamble!();
    let (sk, ret) = io_args(&ctx);
    requests::on_send(sk, ret);
    0
}

#[raw_tracepoint(tracepoint = "sock_recv_length")]
pub fn sock_recv(ctx: RawTracePointContext) -> u32 {
    preamble!();
    let (sk, ret) = io_args(&ctx);
    requests::on_recv(sk, ret, ctx.arg::<u64>(args::FLAGS as usize) as i32);
    0
}
