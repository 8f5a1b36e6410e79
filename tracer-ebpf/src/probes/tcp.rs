//! TCP connect and listener probes, tracepoints only (inet_sock_set_state as a raw tracepoint).
//!
//! Connect side: `sock:inet_sock_set_state` CLOSE→SYN_SENT runs inside the caller's connect(), so
//! the process filter applies there and the caller is remembered per socket; SYN retransmits
//! (`tcp:tcp_retransmit_skb` in SYN_SENT) and a RST in SYN_SENT (`tcp:tcp_receive_reset`) are
//! counted on that entry; leaving SYN_SENT emits one event with latency and outcome.
//!
//! Listener side: a final ACK dropped at a full accept queue is `skb:kfree_skb` with reason
//! TCP_LISTEN_OVERFLOW and `rx_sk` = the listener (a dropped SYN fires no event: userspace
//! infers it from the connect side). A child socket going SYN_RECV→ESTABLISHED is queued for
//! accept(); accept()'s exit (the new fd's socket, found through the task's fd table) gives the
//! time it waited.

use aya_ebpf::{
    helpers::bpf_probe_read_kernel,
    macros::{map, raw_tracepoint, tracepoint},
    maps::LruHashMap,
    programs::{RawTracePointContext, TracePointContext},
};
use tracer_common::{counters, kind, tcp::outcome, AcceptEvent, EventHeader, ListenOverflowEvent, TcpAddrs, TcpConnectEvent, CONN_MAP_ENTRIES};

use crate::layout::{layout, stream_sock_of_fd};
use crate::maps::{count, field, header, hooks_only, now_ns, pid_tgid, submit_flags, traced, EVENTS, LRU_PER_CPU};

use crate::net::{
    tcp_state, AF_INET, AF_INET6, SKC_DADDR, SKC_DPORT, SKC_FAMILY, SKC_NUM, SKC_RCV_SADDR, SYSCALL_RET, TCP_CLOSE, TCP_ESTABLISHED, TCP_LISTEN,
    TCP_SYN_RECV, TCP_SYN_SENT,
};

/// skb_drop_reason values of TCP_LISTEN_OVERFLOW and NO_SOCKET, read by userspace from the
/// tracepoint's format (they differ between kernels) and set at load time; 0 = unknown.
#[no_mangle]
static LISTEN_OVERFLOW_REASON: u32 = 0;
#[no_mangle]
static NO_SOCKET_REASON: u32 = 0;

/// A connect in SYN_SENT.
#[repr(C)]
pub struct Connecting {
    hdr: EventHeader,
    start_ns: u64,
    syn_retransmits: u32,
    rst: u32,
}

#[map]
static CONNECTING: LruHashMap<u64, Connecting> = LruHashMap::with_max_entries(CONN_MAP_ENTRIES, LRU_PER_CPU);

/// An established connection waiting in its listener's accept queue.
#[repr(C)]
pub struct Queued {
    since_ns: u64,
    addrs: TcpAddrs,
}

/// Queued (established, not yet accepted) connections by their struct sock.
#[map]
static ACCEPT_QUEUE: LruHashMap<u64, Queued> = LruHashMap::with_max_entries(CONN_MAP_ENTRIES, LRU_PER_CPU);

/// The addresses of a TCP socket, read from its struct sock_common (what inet_sock_set_state's
/// record would carry, read only for the transitions that need it).
#[inline(always)]
fn sock_addrs(sk: u64) -> TcpAddrs {
    let base = sk as *const u8;
    // skc_daddr, skc_rcv_saddr, skc_hash, skc_dport (network order), skc_num (host order),
    // skc_family: the first 18 bytes, in one read.
    let head: [u8; 18] = unsafe { bpf_probe_read_kernel(base as *const [u8; 18]) }.unwrap_or([0; 18]);
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
        // Config-dependent offsets (56 and 72 on common x86_64/arm64 kernels), from BTF.
        let (d, s) = if l.skc_v6_daddr != 0 { (l.skc_v6_daddr, l.skc_v6_rcv_saddr) } else { (56, 72) };
        a.daddr = unsafe { bpf_probe_read_kernel(base.add(d as usize) as *const [u8; 16]) }.unwrap_or([0; 16]);
        a.saddr = unsafe { bpf_probe_read_kernel(base.add(s as usize) as *const [u8; 16]) }.unwrap_or([0; 16]);
    } else {
        a.daddr[..4].copy_from_slice(&head[SKC_DADDR..SKC_DADDR + 4]);
        a.saddr[..4].copy_from_slice(&head[SKC_RCV_SADDR..SKC_RCV_SADDR + 4]);
    }
    a
}

/// inet_sock_set_state as a raw tracepoint: (struct sock *sk, int oldstate, int newstate). It
/// fires on every TCP state change on the machine; the classic tracepoint would fill a record
/// with both address pairs each time, where only three transitions matter here. Only TCP
/// (and SCTP, which never uses SYN_SENT/SYN_RECV) sockets pass through it.
#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn tcp_set_state(ctx: RawTracePointContext) -> u32 {
    if hooks_only() {
        return 0;
    }
    let (sk, old, new) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1) as i32, ctx.arg::<u64>(2) as i32);
    match (old, new) {
        (TCP_CLOSE, TCP_SYN_SENT) => {
            // Inside connect(): the caller is the current task.
            let id = pid_tgid();
            if !traced(id) {
                return 0;
            }
            super::connect::note_tcp_socket(id, sk);
            let c = Connecting { hdr: header(kind::TCP_CONNECT, id), start_ns: now_ns(), syn_retransmits: 0, rst: 0 };
            if CONNECTING.insert(&sk, &c, 0).is_err() {
                count(counters::CONN_MAP_FULL);
            }
        }
        (TCP_SYN_SENT, _) => {
            let Some(c) = CONNECTING.get_ptr(&sk) else { return 0 };
            let a = sock_addrs(sk);
            let now = now_ns();
            match EVENTS.reserve::<TcpConnectEvent>(0) {
                Some(mut entry) => {
                    let e = entry.as_mut_ptr();
                    unsafe {
                        (*e).hdr = (*c).hdr;
                        (*e).hdr.ts_ns = now;
                        (*e).addrs = a;
                        (*e).skaddr = sk;
                        (*e).start_ns = (*c).start_ns;
                        (*e).latency_ns = now.saturating_sub((*c).start_ns);
                        (*e).outcome = if new == TCP_ESTABLISHED {
                            outcome::ESTABLISHED
                        } else if (*c).rst != 0 {
                            outcome::REFUSED
                        } else {
                            outcome::ABANDONED
                        };
                        (*e).syn_retransmits = (*c).syn_retransmits;
                    }
                    entry.submit(submit_flags());
                }
                None => count(counters::RINGBUF_FULL),
            }
            let _ = CONNECTING.remove(&sk);
        }
        (TCP_SYN_RECV, TCP_ESTABLISHED) => {
            // A child socket completed the handshake and is now in its listener's accept queue.
            let q = Queued { since_ns: now_ns(), addrs: sock_addrs(sk) };
            if ACCEPT_QUEUE.insert(&sk, &q, 0).is_err() {
                count(counters::CONN_MAP_FULL);
            }
        }
        _ => {}
    }
    0
}

// tcp:tcp_retransmit_skb offsets.
const RT_SKADDR: usize = 16;
const RT_STATE: usize = 24;

#[tracepoint]
pub fn tcp_retransmit(ctx: TracePointContext) -> u32 {
    if hooks_only() {
        return 0;
    }
    let state: i32 = field(&ctx, RT_STATE);
    if state != TCP_SYN_SENT {
        return 0;
    }
    let sk: u64 = field(&ctx, RT_SKADDR);
    if let Some(c) = CONNECTING.get_ptr_mut(&sk) {
        unsafe { (*c).syn_retransmits += 1 };
    }
    0
}

#[tracepoint]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    if hooks_only() {
        return 0;
    }
    let sk: u64 = field(&ctx, 8);
    if let Some(c) = CONNECTING.get_ptr_mut(&sk) {
        unsafe { (*c).rst = 1 };
    }
    0
}

// skb:kfree_skb offsets.
const KF_RX_SK: usize = 24;
const KF_REASON: usize = 36;

#[tracepoint]
pub fn kfree_skb(ctx: TracePointContext) -> u32 {
    if hooks_only() {
        return 0;
    }
    let reason: u32 = field(&ctx, KF_REASON);
    let overflow = unsafe { core::ptr::read_volatile(&LISTEN_OVERFLOW_REASON) };
    let no_socket = unsafe { core::ptr::read_volatile(&NO_SOCKET_REASON) };
    if reason == 0 || (reason != overflow && reason != no_socket) {
        return 0;
    }
    let sk: u64 = field(&ctx, KF_RX_SK);
    if sk == 0 {
        return 0;
    }
    let base = sk as *const u8;
    // Only drops at a listening socket are accept-queue overflows.
    if tcp_state(sk) != TCP_LISTEN {
        return 0;
    }
    let (port, family, addr4) = unsafe {
        (
            bpf_probe_read_kernel(base.add(SKC_NUM) as *const u16).unwrap_or(0),
            bpf_probe_read_kernel(base.add(SKC_FAMILY) as *const u16).unwrap_or(0),
            bpf_probe_read_kernel(base.add(SKC_RCV_SADDR) as *const [u8; 4]).unwrap_or([0; 4]),
        )
    };
    // Softirq context: the current task is whoever was interrupted, so no process in the header.
    let mut hdr = header(kind::LISTEN_OVERFLOW, 0);
    hdr.comm = [0; 16];
    let ev = ListenOverflowEvent { hdr, skaddr: sk, family, port, addr4: if family == AF_INET { addr4 } else { [0; 4] }, reason, _pad: 0 };
    if EVENTS.output::<ListenOverflowEvent>(&ev, submit_flags()).is_err() {
        count(counters::RINGBUF_FULL);
    }
    0
}

/// sys_exit_accept / sys_exit_accept4: the new fd's socket, looked up in the accept queue.
#[tracepoint]
pub fn accept_exit(ctx: TracePointContext) -> u32 {
    if hooks_only() {
        return 0;
    }
    let ret: i64 = field(&ctx, SYSCALL_RET);
    if ret < 0 {
        return 0;
    }
    let Some(sk) = stream_sock_of_fd(ret as i32) else { return 0 };
    let Some(q) = ACCEPT_QUEUE.get_ptr(&sk) else { return 0 };
    let (since, a) = unsafe { ((*q).since_ns, (*q).addrs) };
    let _ = ACCEPT_QUEUE.remove(&sk);
    let hdr = header(kind::ACCEPT, pid_tgid());
    let ev = AcceptEvent {
        wait_ns: hdr.ts_ns.saturating_sub(since),
        hdr,
        // Not known at exit (accept's enter is not hooked: the socket names the connection).
        listen_fd: -1,
        fd: ret as i32,
        peer_family: a.family,
        peer_port: a.dport,
        local_port: a.sport,
        _pad: 0,
        peer_addr: a.daddr,
        local_addr: a.saddr,
    };
    if EVENTS.output::<AcceptEvent>(&ev, submit_flags()).is_err() {
        count(counters::RINGBUF_FULL);
    }
    0
}
