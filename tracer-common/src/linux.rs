//! Kernel ABI values the programs compare against (uapi numbers, stable across kernels).

/// Address families (`sa_family_t`, `sock_common.skc_family`).
pub const AF_UNIX: u16 = 1;
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// `socket.type` of a stream socket.
pub const SOCK_STREAM: u16 = 1;

/// recvmsg flag: the bytes stay queued (nginx peeks to test a kept-alive connection).
pub const MSG_PEEK: i32 = 2;

/// errno values, as syscalls and the sock_*_length tracepoints return them (negated).
pub const EAGAIN: i32 = 11;
pub const EPIPE: i32 = 32;
pub const ECONNRESET: i32 = 104;
pub const EINPROGRESS: i32 = 115;

/// TCP states (include/net/tcp_states.h), as `inet_sock_set_state`, `tcp_retransmit_skb` and
/// `sock_common.skc_state` give them.
pub const TCP_ESTABLISHED: i32 = 1;
pub const TCP_SYN_SENT: i32 = 2;
pub const TCP_SYN_RECV: i32 = 3;
pub const TCP_CLOSE: i32 = 7;
pub const TCP_LISTEN: i32 = 10;

/// Signals that end a process unless handled: what kills workers (SIGHUP, SIGINT, SIGQUIT,
/// SIGABRT, SIGKILL, SIGSEGV, SIGTERM).
#[inline(always)]
pub fn fatal_signal(sig: i32) -> bool {
    matches!(sig, 1 | 2 | 3 | 6 | 9 | 11 | 15)
}
