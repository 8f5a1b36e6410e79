//! Reads of kernel memory: the struct sock behind an fd (through the task's fd table, at offsets
//! userspace found in the kernel's BTF: `tracer_common::kernel_layout`), and what the TCP probes
//! read from a struct sock (`struct sock_common` offsets from `tracer_common::offsets`, which have
//! not moved since 2.6; IPv6 addresses and the source port from BTF).

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};
use tracer_common::{
    kernel_layout::KernelLayout,
    linux::{AF_INET, AF_INET6, SOCK_STREAM},
    offsets::sock_common::{
        HEAD_LEN, SKC_DADDR, SKC_DPORT, SKC_FAMILY, SKC_NUM, SKC_RCV_SADDR, SKC_STATE, SKC_V6_DADDR_USUAL, SKC_V6_RCV_SADDR_USUAL,
    },
    Counter, TcpAddrs,
};

use crate::maps::count;

/// Set by the loader; read-only for the programs.
#[no_mangle]
static LAYOUT: KernelLayout = KernelLayout::UNKNOWN;

#[inline(always)]
pub fn layout() -> KernelLayout {
    unsafe { core::ptr::read_volatile(&LAYOUT) }
}

#[inline(always)]
fn read_ptr(base: u64, offset: u64) -> Option<u64> {
    if base == 0 {
        return None;
    }
    unsafe { bpf_probe_read_kernel((base + offset) as *const u64) }.ok().filter(|p| *p != 0)
}

/// The struct sock of the current task's `fd` if it is a stream socket. None for another kind of
/// socket (a connected UDP resolver, a unix datagram socket to syslog), and None — counted as
/// `sock_lookup_failed` — when the layout is unknown or a read failed. Follows
/// current->files->fdt->fd[fd]->private_data (struct socket)->sk. Called right after a
/// connect()/accept() on that fd returned, in the same task, so the fd still names that socket.
#[inline(always)]
pub fn stream_sock_of_fd(fd: i32) -> Option<u64> {
    match walk_fd(fd) {
        Ok(sk) => sk,
        Err(()) => {
            count(Counter::SockLookupFailed);
            None
        }
    }
}

#[inline(always)]
fn walk_fd(fd: i32) -> Result<Option<u64>, ()> {
    let l = layout();
    if !l.can_walk_fds() || fd < 0 {
        return Err(());
    }
    let task = unsafe { bpf_get_current_task() };
    let files = read_ptr(task, l.task_files).ok_or(())?;
    let fdt = read_ptr(files, l.files_fdt).ok_or(())?;
    let fds = read_ptr(fdt, l.fdtable_fd).ok_or(())?;
    let file = read_ptr(fds, fd as u64 * 8).ok_or(())?;
    let socket = read_ptr(file, l.file_private_data).ok_or(())?;
    let ty: u16 = unsafe { bpf_probe_read_kernel((socket + l.socket_type) as *const u16) }.map_err(|_| ())?;
    if ty != SOCK_STREAM {
        return Ok(None);
    }
    read_ptr(socket, l.socket_sk).map(Some).ok_or(())
}

/// sock_common.skc_state of a socket (0 if the read fails).
#[inline(always)]
pub fn tcp_state(sk: u64) -> i32 {
    let state: u8 = unsafe { bpf_probe_read_kernel((sk as *const u8).add(SKC_STATE)) }.unwrap_or(0);
    state as i32
}

/// The addresses of a TCP socket, read from its struct sock_common (what inet_sock_set_state's
/// record would carry, read only for the transitions that need it).
#[inline(always)]
pub fn sock_addrs(sk: u64) -> TcpAddrs {
    let base = sk as *const u8;
    // skc_daddr, skc_rcv_saddr, skc_hash, skc_dport (network order), skc_num (host order),
    // skc_family: one read.
    let head: [u8; HEAD_LEN] = unsafe { bpf_probe_read_kernel(base as *const [u8; HEAD_LEN]) }.unwrap_or([0; HEAD_LEN]);
    let family = u16::from_ne_bytes([head[SKC_FAMILY], head[SKC_FAMILY + 1]]);
    let mut a = TcpAddrs {
        family,
        sport: u16::from_ne_bytes([head[SKC_NUM], head[SKC_NUM + 1]]),
        dport: u16::from_be_bytes([head[SKC_DPORT], head[SKC_DPORT + 1]]),
        _pad: 0,
        saddr: [0; 16],
        daddr: [0; 16],
    };
    // The source port comes from inet_sport: a connect that fails releases its port
    // (skc_num = 0) before the change to CLOSE is traced. Without BTF, skc_num it is.
    let l = layout();
    let sport_off = l.inet_sport;
    if sport_off != 0 {
        let p: [u8; 2] = unsafe { bpf_probe_read_kernel(base.add(sport_off as usize) as *const [u8; 2]) }.unwrap_or([0; 2]);
        a.sport = u16::from_be_bytes(p);
    }
    if family == AF_INET6 {
        // Config-dependent offsets, from BTF (the usual ones without it).
        let (d, s) = if l.skc_v6_daddr != 0 { (l.skc_v6_daddr, l.skc_v6_rcv_saddr) } else { (SKC_V6_DADDR_USUAL, SKC_V6_RCV_SADDR_USUAL) };
        a.daddr = unsafe { bpf_probe_read_kernel(base.add(d as usize) as *const [u8; 16]) }.unwrap_or([0; 16]);
        a.saddr = unsafe { bpf_probe_read_kernel(base.add(s as usize) as *const [u8; 16]) }.unwrap_or([0; 16]);
    } else {
        a.daddr[..4].copy_from_slice(&head[SKC_DADDR..SKC_DADDR + 4]);
        a.saddr[..4].copy_from_slice(&head[SKC_RCV_SADDR..SKC_RCV_SADDR + 4]);
    }
    a
}

/// A listening socket's local port (host order), family and IPv4 address (zero for IPv6).
#[inline(always)]
pub fn listener_addr(sk: u64) -> (u16, u16, [u8; 4]) {
    let base = sk as *const u8;
    let (port, family, addr4) = unsafe {
        (
            bpf_probe_read_kernel(base.add(SKC_NUM) as *const u16).unwrap_or(0),
            bpf_probe_read_kernel(base.add(SKC_FAMILY) as *const u16).unwrap_or(0),
            bpf_probe_read_kernel(base.add(SKC_RCV_SADDR) as *const [u8; 4]).unwrap_or([0; 4]),
        )
    };
    (port, family, if family == AF_INET { addr4 } else { [0; 4] })
}
