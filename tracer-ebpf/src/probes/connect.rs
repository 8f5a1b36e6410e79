//! connect(), from `syscalls:sys_enter_connect` / `syscalls:sys_exit_connect`.
//!
//! Why: `sys_exit_connect` is the only place a unix listen-queue overflow is visible: connect()
//! on a full unix listener returns -EAGAIN and nginx answers 502 at once. The enter half notes
//! the caller's sockaddr pointer and the time; the exit half pairs with it by pid_tgid, reads the
//! sockaddr (family, unix path incl. abstract names, IPv4/IPv6 address) into the event and
//! reports the result and duration. A connected stream socket is handed to `requests` to be
//! followed.
//!
//! When absent: nothing replaces it; the pair is required (kprobes/fentry are unavailable on the
//! target kernels, so the syscall tracepoints are the hook, not a fallback).
//!
//! Owns `PENDING_CONNECT`; `tcp_state` writes the socket into it through [`note_tcp_socket`].

use aya_ebpf::{helpers::bpf_probe_read_user_buf, macros::map, macros::tracepoint, maps::LruHashMap, programs::TracePointContext};
use aya_log_ebpf::warn;
use tracer_common::{
    connect::SOCKADDR_MAX,
    linux::{AF_INET, AF_INET6, AF_UNIX},
    offsets::{sys_enter_connect, sys_exit},
    ConnectEvent, Counter, Kind,
};

use crate::maps::{count, field, header, now_ns, pid_tgid, preamble, submit_flags, EVENTS, LRU_PER_CPU};

/// A connect() between enter and exit. The sockaddr itself is read at exit, straight into the
/// event (the caller's buffer is an input that stays put during the call): no copy through the map.
#[repr(C)]
pub struct PendingConnect {
    start_ns: u64,
    uaddr: u64,
    /// The TCP socket, when the connect went through CLOSE→SYN_SENT (`note_tcp_socket`): the exit
    /// then need not walk the fd table to find it.
    sk: u64,
    fd: i32,
    addrlen: u32,
}

/// Keyed by pid_tgid (one connect() per thread at a time). LRU: a lost exit cannot leak an entry.
#[map]
static PENDING_CONNECT: LruHashMap<u64, PendingConnect> = LruHashMap::with_max_entries(16384, LRU_PER_CPU);

/// Called from tcp_set_state's CLOSE→SYN_SENT, which runs inside this task's connect().
#[inline(always)]
pub fn note_tcp_socket(pid_tgid: u64, sk: u64) {
    if let Some(p) = PENDING_CONNECT.get_ptr_mut(&pid_tgid) {
        unsafe { (*p).sk = sk };
    }
}

#[tracepoint]
pub fn connect_enter(ctx: TracePointContext) -> u32 {
    let id = preamble!(traced);
    let p = PendingConnect {
        start_ns: now_ns(),
        uaddr: field(&ctx, sys_enter_connect::USERVADDR),
        sk: 0,
        fd: field::<u64>(&ctx, sys_enter_connect::FD) as i32,
        addrlen: field::<u64>(&ctx, sys_enter_connect::ADDRLEN) as u32,
    };
    if PENDING_CONNECT.insert(&id, &p, 0).is_err() {
        count(Counter::PendingMapFull);
    }
    0
}

#[tracepoint]
pub fn connect_exit(ctx: TracePointContext) -> u32 {
    preamble!();
    let id = pid_tgid();
    let Some(p) = PENDING_CONNECT.get_ptr(&id) else {
        // Untraced task (filter) or an enter we never saw: nothing to pair with.
        return 0;
    };
    // A copy: the entry is removed right below.
    let p = unsafe { core::ptr::read(p) };
    let _ = PENDING_CONNECT.remove(&id);
    let uaddr = p.uaddr as *const u8;
    // The family first: only unix and IP targets are worth an event.
    let mut fam = [0u8; 2];
    if unsafe { bpf_probe_read_user_buf(uaddr, &mut fam) }.is_err() {
        count(Counter::AddrReadFailed);
        warn!(&ctx, "connect: cannot read the sockaddr at {:x}", p.uaddr);
        return 0;
    }
    let family = u16::from_ne_bytes(fam);
    if family != AF_UNIX && family != AF_INET && family != AF_INET6 {
        return 0;
    }
    let ret: i64 = field(&ctx, sys_exit::RET);
    // One header (comm, clock) for the event and the followed connection.
    let hdr = header(Kind::Connect, id);
    // The fd now names an upstream connection: follow its requests.
    crate::requests::follow_connected(&hdr, p.fd, ret, family, p.sk);
    let Some(mut entry) = EVENTS.reserve::<ConnectEvent>(0) else {
        count(Counter::RingbufFull);
        return 0;
    };
    let e = entry.as_mut_ptr();
    unsafe {
        (*e).hdr = hdr;
        (*e).duration_ns = (*e).hdr.ts_ns.saturating_sub(p.start_ns);
        (*e).ret = ret;
        (*e).fd = p.fd;
        (*e).addrlen = p.addrlen;
        (*e).addr = [0; SOCKADDR_MAX];
        // The family's size (a constant per branch, as the verifier wants): 16 / 28 bytes for
        // IP, the whole sockaddr_un for unix (a short sockaddr at the end of a mapping would
        // fault: then only the family is kept).
        let addr = &mut (*e).addr;
        let read = match family {
            AF_INET => bpf_probe_read_user_buf(uaddr, &mut addr[..16]),
            AF_INET6 => bpf_probe_read_user_buf(uaddr, &mut addr[..28]),
            _ => bpf_probe_read_user_buf(uaddr, &mut addr[..]),
        };
        if read.is_err() {
            count(Counter::AddrReadFailed);
            addr[0] = fam[0];
            addr[1] = fam[1];
        }
    }
    entry.submit(submit_flags());
    0
}
