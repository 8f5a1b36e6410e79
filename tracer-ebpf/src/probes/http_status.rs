//! The 5xx status lines the proxy writes to its clients, read from the first bytes of its
//! writev() buffers at `syscalls:sys_enter_writev`: nginx (plaintext HTTP/1.x) writes
//! `HTTP/1.1 502 Bad Gateway` at the start of iov[0] (its write() calls are log lines, so only
//! writev is hooked). TLS and HTTP/2 hide it: userspace falls back to nginx's error log.

use aya_ebpf::{helpers::bpf_probe_read_user_buf, macros::tracepoint, programs::TracePointContext};
use tracer_common::{counters, kind, StatusEvent};

use crate::maps::{count, field, header, hooks_only, pid_tgid, submit_flags, traced, EVENTS};
use crate::net::{SYSCALL_ARG0, SYSCALL_ARG1};

/// sys_enter_writev(fd, iov, iovcnt) of a traced thread.
#[tracepoint]
pub fn status_line(ctx: TracePointContext) -> u32 {
    if hooks_only() {
        return 0;
    }
    let id = pid_tgid();
    if !traced(id) {
        return 0;
    }
    let fd = field::<u64>(&ctx, SYSCALL_ARG0) as i32;
    let iov: u64 = field(&ctx, SYSCALL_ARG1);
    // struct iovec { void *iov_base; size_t iov_len; }: the first buffer.
    let mut base = [0u8; 8];
    if unsafe { bpf_probe_read_user_buf(iov as *const u8, &mut base) }.is_err() {
        return 0;
    }
    let buf = u64::from_ne_bytes(base);
    // "HTTP/1.1 502": 12 bytes.
    let mut line = [0u8; 12];
    if buf == 0 || unsafe { bpf_probe_read_user_buf(buf as *const u8, &mut line) }.is_err() {
        return 0;
    }
    if &line[..7] != b"HTTP/1." || line[8] != b' ' || line[9] != b'5' {
        return 0;
    }
    let digit = |b: u8| b.is_ascii_digit();
    if !digit(line[10]) || !digit(line[11]) {
        return 0;
    }
    let status = 500 + (line[10] - b'0') as u16 * 10 + (line[11] - b'0') as u16;
    let ev = StatusEvent { hdr: header(kind::STATUS, id), fd, status, _pad: 0 };
    if EVENTS.output::<StatusEvent>(&ev, submit_flags()).is_err() {
        count(counters::RINGBUF_FULL);
    }
    0
}
