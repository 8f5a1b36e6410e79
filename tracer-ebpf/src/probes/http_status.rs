//! The 5xx status lines the proxy writes to its clients, read from the first bytes of its
//! write()/writev()/sendto() buffers at `syscalls:sys_enter_*` (called from `io_enter`, which
//! already runs for those syscalls). nginx (plaintext HTTP/1.x) writes `HTTP/1.1 502 Bad Gateway`
//! at the start of iov[0]. TLS and HTTP/2 hide it: userspace falls back to nginx's error log.

use aya_ebpf::helpers::bpf_probe_read_user_buf;
use tracer_common::{counters, kind, StatusEvent};

use crate::maps::{EVENTS, count, header, submit_flags};

// Syscall numbers (the tracepoint record's __syscall_nr) of the writes that can carry a status line.
#[cfg(bpf_target_arch = "aarch64")]
mod nr {
    pub const WRITE: i32 = 64;
    pub const WRITEV: i32 = 66;
    pub const SENDTO: i32 = 206;
}
#[cfg(not(bpf_target_arch = "aarch64"))]
mod nr {
    pub const WRITE: i32 = 1;
    pub const WRITEV: i32 = 20;
    pub const SENDTO: i32 = 44;
}

/// `arg1` is the buffer (write, sendto) or the iovec array (writev).
#[inline(always)]
pub fn check(pid_tgid: u64, syscall: i32, fd: i32, arg1: u64) {
    let buf = match syscall {
        nr::WRITE | nr::SENDTO => arg1,
        nr::WRITEV => {
            // struct iovec { void *iov_base; size_t iov_len; }: the first buffer.
            let mut iov = [0u8; 8];
            if unsafe { bpf_probe_read_user_buf(arg1 as *const u8, &mut iov) }.is_err() {
                return;
            }
            u64::from_ne_bytes(iov)
        }
        _ => return,
    };
    // "HTTP/1.1 502": 12 bytes.
    let mut line = [0u8; 12];
    if buf == 0 || unsafe { bpf_probe_read_user_buf(buf as *const u8, &mut line) }.is_err() {
        return;
    }
    if &line[..7] != b"HTTP/1." || line[8] != b' ' || line[9] != b'5' {
        return;
    }
    let digit = |b: u8| b.is_ascii_digit();
    if !digit(line[10]) || !digit(line[11]) {
        return;
    }
    let status = 500 + (line[10] - b'0') as u16 * 10 + (line[11] - b'0') as u16;
    let ev = StatusEvent { hdr: header(kind::STATUS, pid_tgid), fd, status, _pad: 0 };
    if EVENTS.output::<StatusEvent>(&ev, submit_flags()).is_err() {
        count(counters::RINGBUF_FULL);
    }
}
