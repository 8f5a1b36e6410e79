//! accept() returning a queued connection, from `syscalls:sys_exit_accept4` and
//! `syscalls:sys_exit_accept` (one program on both).
//!
//! Why: how long an established connection waited in its listener's accept queue before the app
//! took it. The new fd's socket is found through the task's fd table (BTF offsets) and looked up
//! in `tcp_state`'s accept queue (through [`take_queued`]). accept()'s enter is not hooked: the
//! socket names the connection.
//!
//! When absent (or without BTF): no accept-queue wait.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_common::{offsets::sys_exit, AcceptEvent, Kind};

use super::tcp_state::take_queued;
use crate::layout::stream_sock_of_fd;
use crate::maps::{field, header, output, pid_tgid, preamble};

#[tracepoint]
pub fn accept_exit(ctx: TracePointContext) -> u32 {
    preamble!();
    let ret: i64 = field(&ctx, sys_exit::RET);
    if ret < 0 {
        return 0;
    }
    let Some(sk) = stream_sock_of_fd(ret as i32) else { return 0 };
    let Some(q) = take_queued(sk) else { return 0 };
    let hdr = header(Kind::Accept, pid_tgid());
    let a = q.addrs;
    output(&AcceptEvent {
        wait_ns: hdr.ts_ns.saturating_sub(q.since_ns),
        hdr,
        // Not known at exit (accept's enter is not hooked).
        listen_fd: -1,
        fd: ret as i32,
        peer_family: a.family,
        peer_port: a.dport,
        local_port: a.sport,
        _pad: 0,
        peer_addr: a.daddr,
        local_addr: a.saddr,
    });
    0
}
