//! Kernel constants the probe families share (address families, protocols, errnos).
// Offsets in the syscall tracepoint records (see /sys/kernel/tracing/events/syscalls/*/format):
// 8 bytes of common fields, the syscall nr, then each argument (or the result) as 8 bytes.
pub const SYSCALL_ARG0: usize = 16;
pub const SYSCALL_ARG1: usize = 24;
pub const SYSCALL_ARG2: usize = 32;
pub const SYSCALL_RET: usize = 16;

pub const AF_UNIX: u16 = 1;
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const EPIPE: i32 = 32;
pub const ECONNRESET: i32 = 104;

// struct sock_common, at the start of every struct sock: skc_daddr at 0, skc_rcv_saddr at 4,
// skc_dport (network order) at 12, skc_num (local port, host order) at 14, skc_family at 16,
// skc_state at 18 — unchanged since Linux 2.6.
pub const SKC_DADDR: usize = 0;
pub const SKC_DPORT: usize = 12;
pub const SKC_RCV_SADDR: usize = 4;
pub const SKC_NUM: usize = 14;
pub const SKC_FAMILY: usize = 16;
pub const SKC_STATE: usize = 18;

// TCP states (include/net/tcp_states.h), as the tracepoints pass them.
pub const TCP_ESTABLISHED: i32 = 1;
pub const TCP_SYN_SENT: i32 = 2;
pub const TCP_SYN_RECV: i32 = 3;
pub const TCP_CLOSE: i32 = 7;
pub const TCP_LISTEN: i32 = 10;

/// sock_common.skc_state of a socket (0 if the read fails).
#[inline(always)]
pub fn tcp_state(sk: u64) -> i32 {
    let state: u8 = unsafe { aya_ebpf::helpers::bpf_probe_read_kernel((sk as *const u8).add(SKC_STATE)) }.unwrap_or(0);
    state as i32
}
