//! Where the kernel programs read, in one place: the fields of classic tracepoint records (each
//! named as in `/sys/kernel/tracing/events/<category>/<name>/format`; the loader checks every
//! field a program reads against this kernel's format file before attaching it, see
//! [`crate::probes::ProbeSpec::fields`]), the argument positions of raw tracepoints, and the
//! `struct sock_common` offsets that have not moved since Linux 2.6. Offsets that depend on the
//! kernel's configuration come from its BTF instead ([`crate::kernel_layout`]).
//!
//! The values are those of Linux 6.18 (checked on this project's machines); every record starts
//! with 8 bytes of common fields, and every syscall argument or result takes 8 bytes after the
//! 4-byte `__syscall_nr` (padded).

/// A field of a classic tracepoint's record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// The name in the format file.
    pub name: &'static str,
    pub offset: usize,
    pub size: usize,
}

const fn f(name: &'static str, offset: usize, size: usize) -> Field {
    Field { name, offset, size }
}

/// `syscalls:sys_enter_connect`.
pub mod sys_enter_connect {
    use super::{f, Field};
    /// `int fd`.
    pub const FD: Field = f("fd", 16, 8);
    /// `struct sockaddr * uservaddr` (user memory).
    pub const USERVADDR: Field = f("uservaddr", 24, 8);
    /// `int addrlen`.
    pub const ADDRLEN: Field = f("addrlen", 32, 8);
}

/// `syscalls:sys_exit_connect`, `sys_exit_accept`, `sys_exit_accept4`: the result.
pub mod sys_exit {
    use super::{f, Field};
    /// `long ret`: the return value, or -errno.
    pub const RET: Field = f("ret", 16, 8);
}

/// `syscalls:sys_enter_listen`.
pub mod sys_enter_listen {
    use super::{f, Field};
    /// `int fd`.
    pub const FD: Field = f("fd", 16, 8);
    /// `int backlog`: as the application passed it, before the somaxconn cap.
    pub const BACKLOG: Field = f("backlog", 24, 8);
}

/// `syscalls:sys_enter_close`.
pub mod sys_enter_close {
    use super::{f, Field};
    /// `unsigned int fd`.
    pub const FD: Field = f("fd", 16, 8);
}

/// `syscalls:sys_enter_writev`.
pub mod sys_enter_writev {
    use super::{f, Field};
    /// `unsigned long fd`.
    pub const FD: Field = f("fd", 16, 8);
    /// `const struct iovec * vec` (user memory; `iov_base` is its first 8 bytes).
    pub const VEC: Field = f("vec", 24, 8);
}

/// `tcp:tcp_retransmit_skb`.
pub mod tcp_retransmit_skb {
    use super::{f, Field};
    /// `const void * skaddr`: the struct sock.
    pub const SKADDR: Field = f("skaddr", 16, 8);
    /// `int state`: the socket's TCP state (SYN_SENT = a SYN retransmit).
    pub const STATE: Field = f("state", 24, 4);
}

/// `tcp:tcp_receive_reset`.
pub mod tcp_receive_reset {
    use super::{f, Field};
    /// `const void * skaddr`.
    pub const SKADDR: Field = f("skaddr", 8, 8);
}

/// `tcp:tcp_destroy_sock`.
pub mod tcp_destroy_sock {
    use super::{f, Field};
    /// `const void * skaddr`.
    pub const SKADDR: Field = f("skaddr", 8, 8);
}

/// `skb:kfree_skb`.
pub mod kfree_skb {
    use super::{f, Field};
    /// `void * rx_sk`: the receiving socket, if any (NULL for most drops).
    pub const RX_SK: Field = f("rx_sk", 24, 8);
    /// `enum skb_drop_reason reason` (its values differ between kernels: the loader reads
    /// them from the format's print fmt).
    pub const REASON: Field = f("reason", 36, 4);
}

/// `signal:signal_generate` (in the sender's context).
pub mod signal_generate {
    use super::{f, Field};
    /// `int sig`.
    pub const SIG: Field = f("sig", 8, 4);
    /// `int code`: si_code (SI_USER = 0, SI_KERNEL = 0x80, …).
    pub const CODE: Field = f("code", 16, 4);
    /// `char comm[16]`: the target's name.
    pub const COMM: Field = f("comm", 20, 16);
    /// `pid_t pid`: the target.
    pub const PID: Field = f("pid", 36, 4);
    /// `int result`: TRACE_SIGNAL_DELIVERED = 0, IGNORED = 1, …
    pub const RESULT: Field = f("result", 44, 4);
}

/// `sched:sched_process_exit`.
pub mod sched_process_exit {
    use super::{f, Field};
    /// `bool group_dead`: the whole thread group is gone.
    pub const GROUP_DEAD: Field = f("group_dead", 32, 1);
}

/// `sched:sched_process_fork` (the comms are `__data_loc` strings, so the pids sit early).
pub mod sched_process_fork {
    use super::{f, Field};
    /// `pid_t child_pid`.
    pub const CHILD_PID: Field = f("child_pid", 20, 4);
}

/// Raw tracepoint `inet_sock_set_state(struct sock *sk, int oldstate, int newstate)`: argument
/// positions.
pub mod inet_sock_set_state_args {
    pub const SK: u32 = 0;
    pub const OLDSTATE: u32 = 1;
    pub const NEWSTATE: u32 = 2;
}

/// Raw tracepoints `sock_send_length` / `sock_recv_length(struct sock *sk, int ret, int flags)`:
/// argument positions.
pub mod sock_msg_length_args {
    pub const SK: u32 = 0;
    /// Bytes sent/received, or -errno.
    pub const RET: u32 = 1;
    /// The msg flags (MSG_PEEK, …).
    pub const FLAGS: u32 = 2;
}

/// `struct sock_common`, at the start of every struct sock: unchanged since Linux 2.6.
pub mod sock_common {
    /// `skc_daddr` (IPv4 peer, network order).
    pub const SKC_DADDR: usize = 0;
    /// `skc_rcv_saddr` (IPv4 local address).
    pub const SKC_RCV_SADDR: usize = 4;
    /// `skc_dport` (network order).
    pub const SKC_DPORT: usize = 12;
    /// `skc_num` (local port, host order).
    pub const SKC_NUM: usize = 14;
    /// `skc_family`.
    pub const SKC_FAMILY: usize = 16;
    /// `skc_state` (one byte).
    pub const SKC_STATE: usize = 18;
    /// Bytes that cover daddr, rcv_saddr, hash, dport, num and family: one read.
    pub const HEAD_LEN: usize = 18;
    /// `skc_v6_daddr` / `skc_v6_rcv_saddr` on common x86_64/arm64 configurations: used only when
    /// the kernel's BTF is missing (they depend on the configuration).
    pub const SKC_V6_DADDR_USUAL: u64 = 56;
    pub const SKC_V6_RCV_SADDR_USUAL: u64 = 72;
}

/// `SSL_write(SSL *ssl, const void *buf, int num)` and `SSL_write_ex(SSL *ssl, const void *buf,
/// size_t num, size_t *written)`: argument positions (0-based) of the uprobe program.
pub mod ssl_write {
    /// The plaintext (user memory).
    pub const BUF: usize = 1;
    /// Its length (an `int` for `SSL_write`: only the low 31 bits are used).
    pub const NUM: usize = 2;
}

/// HTTP/2 framing (RFC 9113 §4.1, §6.2) and the HPACK bytes the TLS status program reads.
pub mod http2 {
    /// Bytes of a frame header: 24-bit length, type, flags, 31-bit stream id.
    pub const FRAME_HEADER: usize = 9;
    /// Frame type HEADERS.
    pub const TYPE_HEADERS: u8 = 0x1;
    /// The highest frame type of RFC 9113 (CONTINUATION).
    pub const MAX_KNOWN_TYPE: u8 = 0x9;
    /// HEADERS flags that move the header block's start (nginx sets neither).
    pub const FLAG_PADDED: u8 = 0x8;
    pub const FLAG_PRIORITY: u8 = 0x20;
    /// Bytes of a header block read for its `:status`: a size update (≤ 4 bytes) + a 5-byte literal.
    pub const BLOCK_PREFIX: usize = 12;
    /// HPACK indexed static entry 14 (`:status 500`).
    pub const INDEXED_500: u8 = 0x8e;
    /// Frames walked per write at most (the verifier needs a bound; a write holds a few frames per
    /// stream, nginx's output buffer being 16 KiB).
    pub const MAX_FRAMES: usize = 16;
}
