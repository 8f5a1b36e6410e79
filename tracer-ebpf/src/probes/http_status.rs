//! The 5xx status lines the proxy writes to its clients, from `syscalls:sys_enter_writev`.
//!
//! Why: each 502/504 is seen in the kernel, without nginx's logs. nginx (plaintext HTTP/1.x)
//! writes `HTTP/1.1 502 Bad Gateway` at the start of iov[0]; its write() calls are log lines, so
//! only writev is hooked (hooking write()/send() too would add a program run to every other
//! write).
//!
//! TLS (and so HTTP/2) hides the status line here: `tls_status.rs` reads it before encryption.
//! When both are absent: userspace takes the 5xx from nginx's error and access logs.

use aya_ebpf::{helpers::bpf_probe_read_user_buf, macros::tracepoint, programs::TracePointContext};
use tracer_common::status::{self, StatusSource, HTTP1_LINE};
use tracer_common::{offsets::sys_enter_writev, Kind, StatusEvent};

use crate::maps::{field, header, output, preamble};

/// sys_enter_writev(fd, iov, iovcnt) of a traced thread.
#[tracepoint]
pub fn status_line(ctx: TracePointContext) -> u32 {
    let id = preamble!(traced);
    let fd = field::<u64>(&ctx, sys_enter_writev::FD) as i32;
    let iov: u64 = field(&ctx, sys_enter_writev::VEC);
    // struct iovec { void *iov_base; size_t iov_len; }: the first buffer.
    let mut base = [0u8; 8];
    if unsafe { bpf_probe_read_user_buf(iov as *const u8, &mut base) }.is_err() {
        return 0;
    }
    let buf = u64::from_ne_bytes(base);
    // "HTTP/1.1 502": 12 bytes.
    let mut line = [0u8; HTTP1_LINE];
    if buf == 0 || unsafe { bpf_probe_read_user_buf(buf as *const u8, &mut line) }.is_err() {
        return 0;
    }
    let Some(status) = status::http1_status(&line) else { return 0 };
    output(&StatusEvent { hdr: header(Kind::Status, id), fd, status, source: StatusSource::KernelWritev as u16 });
    0
}
