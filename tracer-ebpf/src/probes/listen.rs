//! listen(), from `syscalls:sys_enter_listen`.
//!
//! Why: the backlog the application asked for, before the kernel caps it at
//! net.core.somaxconn (sock_diag only shows the capped value). Not filtered: listeners belong to
//! the app servers, not to the traced proxy, and listen() is rare.
//!
//! When absent: userspace derives the backlog from sock_diag's effective maximum (exact below
//! somaxconn, shown as `listen(≥N)` at it).

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_common::{offsets::sys_enter_listen, Kind, ListenEvent};

use crate::maps::{field, header, output, pid_tgid, preamble};

#[tracepoint]
pub fn listen_enter(ctx: TracePointContext) -> u32 {
    preamble!();
    let fd = field::<u64>(&ctx, sys_enter_listen::FD) as i32;
    let backlog = field::<u64>(&ctx, sys_enter_listen::BACKLOG) as i32;
    output(&ListenEvent { hdr: header(Kind::Listen, pid_tgid()), fd, backlog });
    0
}
