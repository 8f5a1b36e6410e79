//! Upstream requests, tracepoints only: the proxy's socket I/O drives a per-connection state
//! machine kept here, so only state changes reach userspace (not every send/recv).
//!
//! Which sockets: the stream sockets a traced process connect()ed. `sys_exit_connect` finds the
//! fd's `struct sock` through the task's fd table (`layout::stream_sock_of_fd`) and starts
//! following it at once; connections opened before the tracer started are not followed.
//! `sock_send_length` / `sock_recv_length` give the socket and result for every family, unix
//! included; they run as raw tracepoints (the arguments as passed, no record to fill: they fire
//! on every send/recv of every process, and a map lookup by socket decides). `sys_enter_close`
//! ends a connection from the proxy's side; `tcp:tcp_destroy_sock` clears state of TCP sockets
//! that vanish without a close() we saw.
//!
//! IDLE (connected) → REQUEST_SENT (bytes sent) → RESPONDING (first byte back) → next request (reuse), peer
//! close (EOF/RST/failed send) or local close. A peer close before any response byte is a
//! premature close (or, on a reused connection, the keep-alive race); a local close before any
//! response byte is the proxy giving up.

use aya_ebpf::{
    macros::{map, raw_tracepoint, tracepoint},
    maps::LruHashMap,
    programs::{RawTracePointContext, TracePointContext},
};
use tracer_common::{
    counters, kind,
    request::{close, end, how, state},
    ConnCloseEvent, EventHeader, RequestEvent, CONN_MAP_ENTRIES, SK_BY_FD_FACTOR,
};

use crate::maps::{count, field, hooks_only, now_ns, pid_tgid, submit_flags, traced, EVENTS, LRU_PER_CPU};

use crate::layout::stream_sock_of_fd;
use crate::net::{tcp_state, AF_UNIX, ECONNRESET, EPIPE, SYSCALL_ARG0, TCP_ESTABLISHED};
const MSG_PEEK: i32 = 2;
const EINPROGRESS: i64 = -115;
/// A peer EOF this long after the last response byte closed an idle keep-alive connection;
/// sooner, it ended the response (HTTP/1.0 style).
const IDLE_GAP_NS: u64 = 10_000_000;

/// An upstream connection being followed.
#[repr(C)]
pub struct Conn {
    hdr: EventHeader,
    start_ns: u64,
    first_byte_ns: u64,
    last_byte_ns: u64,
    idle_before_ns: u64,
    bytes_sent: u32,
    bytes_recv: u32,
    seq: u32,
    fd: i32,
    family: u16,
    state: u8,
    _pad: [u8; 5],
}

#[map]
static CONNS: LruHashMap<u64, Conn> = LruHashMap::with_max_entries(CONN_MAP_ENTRIES, LRU_PER_CPU);

/// (tgid << 32 | fd) → struct sock of a followed connection (for close()); SK_BY_FD_FACTOR times
/// the size of CONNS, so a close() can count an evicted connection.
#[map]
static SK_BY_FD: LruHashMap<u64, u64> = LruHashMap::with_max_entries(SK_BY_FD_FACTOR * CONN_MAP_ENTRIES, LRU_PER_CPU);

#[inline(always)]
fn fd_key(pid_tgid: u64, fd: i32) -> u64 {
    (pid_tgid & 0xffff_ffff_0000_0000) | (fd as u32 as u64)
}

/// Called by connect_exit: a traced process connected `fd` (or started to) to an address of
/// `family` (a successful connect's address has its socket's family). Follow the socket from now
/// on if it is a stream socket. `tcp_sk`: the socket, if tcp_set_state saw it enter SYN_SENT in
/// this connect(); otherwise it is found through the fd table.
#[inline(always)]
pub fn follow_connected(hdr: &EventHeader, fd: i32, ret: i64, family: u16, tcp_sk: u64) {
    if ret != 0 && ret != EINPROGRESS {
        return;
    }
    let sk = if tcp_sk != 0 {
        tcp_sk
    } else {
        // None also for a connected UDP or unix datagram socket: no requests to follow.
        let Some(sk) = stream_sock_of_fd(fd) else { return };
        sk
    };
    let c = Conn {
        hdr: EventHeader { kind: kind::REQUEST, ..*hdr },
        start_ns: hdr.ts_ns,
        first_byte_ns: 0,
        last_byte_ns: 0,
        idle_before_ns: 0,
        bytes_sent: 0,
        bytes_recv: 0,
        seq: 0,
        fd,
        family,
        state: state::IDLE,
        _pad: [0; 5],
    };
    let id = (hdr.pid as u64) << 32 | hdr.tid as u64;
    if CONNS.insert(&sk, &c, 0).is_err() || SK_BY_FD.insert(&fd_key(id, fd), &sk, 0).is_err() {
        count(counters::CONN_MAP_FULL);
    }
}

// Raw tracepoint arguments of sock_send_length / sock_recv_length: (struct sock *sk, int ret,
// int flags).
#[inline(always)]
fn io_args(ctx: &RawTracePointContext) -> (u64, i32) {
    (ctx.arg::<u64>(0), ctx.arg::<u64>(1) as i32)
}

fn emit_request(c: &Conn, sk: u64, end_reason: u32) {
    match EVENTS.reserve::<RequestEvent>(0) {
        Some(mut entry) => {
            let e = entry.as_mut_ptr();
            unsafe {
                (*e).hdr = c.hdr;
                (*e).hdr.kind = kind::REQUEST;
                (*e).hdr.ts_ns = now_ns();
                (*e).sk = sk;
                (*e).start_ns = c.start_ns;
                (*e).first_byte_ns = c.first_byte_ns;
                (*e).last_byte_ns = c.last_byte_ns;
                (*e).idle_before_ns = c.idle_before_ns;
                (*e).bytes_sent = c.bytes_sent;
                (*e).bytes_recv = c.bytes_recv;
                (*e).seq = c.seq;
                (*e).end = end_reason;
                (*e).fd = c.fd;
                (*e).family = c.family;
                (*e)._pad = 0;
            }
            entry.submit(submit_flags());
        }
        None => count(counters::RINGBUF_FULL),
    }
}

fn emit_close(c: &Conn, sk: u64, class: u32, how_: u32, age_ns: u64, idle_ns: u64) {
    match EVENTS.reserve::<ConnCloseEvent>(0) {
        Some(mut entry) => {
            let e = entry.as_mut_ptr();
            unsafe {
                (*e).hdr = c.hdr;
                (*e).hdr.kind = kind::CONN_CLOSE;
                (*e).hdr.ts_ns = now_ns();
                (*e).sk = sk;
                (*e).request_age_ns = age_ns;
                (*e).idle_ns = idle_ns;
                (*e).class = class;
                (*e).how = how_;
                (*e).seq = c.seq;
                (*e).bytes_recv = c.bytes_recv;
                (*e).fd = c.fd;
                (*e).family = c.family;
                (*e)._pad = 0;
            }
            entry.submit(submit_flags());
        }
        None => count(counters::RINGBUF_FULL),
    }
}

/// The upstream closed the connection (EOF, RST, or a send failed). The state stays (CLOSED)
/// until the proxy's close() removes it (or tcp_destroy, or LRU eviction of a dead entry).
fn peer_closed(c: &mut Conn, sk: u64, how_: u32) {
    let now = now_ns();
    match c.state {
        state::REQUEST_SENT => {
            let class = if c.seq > 1 { close::KEEPALIVE_RACE } else { close::PREMATURE };
            emit_close(c, sk, class, how_, now.saturating_sub(c.start_ns), c.idle_before_ns);
        }
        state::RESPONDING => {
            emit_request(c, sk, end::PEER_CLOSE);
            let gap = now.saturating_sub(c.last_byte_ns);
            if gap >= IDLE_GAP_NS {
                emit_close(c, sk, close::IDLE, how_, 0, gap);
            }
        }
        _ => emit_close(c, sk, close::IDLE, how_, 0, now.saturating_sub(c.start_ns)),
    }
    c.state = state::CLOSED;
}

#[raw_tracepoint(tracepoint = "sock_send_length")]
pub fn sock_send(ctx: RawTracePointContext) -> u32 {
    if hooks_only() {
        return 0;
    }
    // Every send of every process lands here: the map of followed sockets decides.
    let (sk, ret) = io_args(&ctx);
    let Some(c) = CONNS.get_ptr_mut(&sk) else { return 0 };
    let c = unsafe { &mut *c };
    if c.state == state::CLOSED {
        return 0;
    }
    let failed = ret == -EPIPE || ret == -ECONNRESET;
    if ret < 0 && !failed {
        return 0; // EAGAIN and the like: nothing was sent, nothing changed
    }
    let now = now_ns();
    if c.state == state::REQUEST_SENT {
        c.bytes_sent = c.bytes_sent.wrapping_add(ret.max(0) as u32);
    } else {
        // A new request on a kept-alive connection (even one whose send fails: the proxy tried
        // to reuse it): the previous response is complete.
        if c.state == state::RESPONDING {
            emit_request(c, sk, end::NEXT_REQUEST);
            c.idle_before_ns = now.saturating_sub(c.last_byte_ns);
        } else if c.seq == 0 {
            c.idle_before_ns = 0; // the first request on a new connection
        } else {
            c.idle_before_ns = now.saturating_sub(c.start_ns);
        }
        c.seq += 1;
        c.start_ns = now;
        c.first_byte_ns = 0;
        c.last_byte_ns = 0;
        c.bytes_sent = ret.max(0) as u32;
        c.bytes_recv = 0;
        c.state = state::REQUEST_SENT;
    }
    if failed {
        peer_closed(c, sk, how::SEND_FAILED);
    }
    0
}

#[raw_tracepoint(tracepoint = "sock_recv_length")]
pub fn sock_recv(ctx: RawTracePointContext) -> u32 {
    if hooks_only() {
        return 0;
    }
    let (sk, ret) = io_args(&ctx);
    let Some(c) = CONNS.get_ptr_mut(&sk) else { return 0 };
    let c = unsafe { &mut *c };
    if c.state == state::CLOSED {
        return 0;
    }
    if ret > 0 {
        let flags = ctx.arg::<u64>(2) as i32;
        if flags & MSG_PEEK != 0 {
            return 0;
        }
        let now = now_ns();
        if c.state == state::REQUEST_SENT {
            c.state = state::RESPONDING;
            c.first_byte_ns = now;
        }
        if c.state == state::RESPONDING {
            c.last_byte_ns = now;
            c.bytes_recv = c.bytes_recv.wrapping_add(ret as u32);
        }
    } else if ret == 0 {
        peer_closed(c, sk, how::EOF);
    } else if ret == -ECONNRESET {
        peer_closed(c, sk, how::RESET);
    }
    0
}

#[tracepoint]
pub fn close_enter(ctx: TracePointContext) -> u32 {
    if hooks_only() {
        return 0;
    }
    let id = pid_tgid();
    if !traced(id) {
        return 0;
    }
    let fd = field::<u64>(&ctx, SYSCALL_ARG0) as i32;
    let key = fd_key(id, fd);
    let Some(&sk) = (unsafe { SK_BY_FD.get(&key) }) else { return 0 };
    let _ = SK_BY_FD.remove(&key);
    let Some(c) = CONNS.get_ptr(&sk) else {
        // Followed (the fd is in SK_BY_FD), yet no state: the full LRU map evicted it.
        count(counters::CONN_EVICTED);
        return 0;
    };
    let c = unsafe { &*c };
    match c.state {
        state::REQUEST_SENT => emit_close(c, sk, close::PROXY_ABORT, how::LOCAL, now_ns().saturating_sub(c.start_ns), c.idle_before_ns),
        state::RESPONDING => emit_request(c, sk, end::LOCAL_CLOSE),
        // Never used. Still in SYN_SENT, it is reported by tcp_set_state as abandoned; already
        // ESTABLISHED, only this close shows that the proxy gave up on it.
        state::IDLE if c.seq == 0 && c.family != AF_UNIX && tcp_state(sk) == TCP_ESTABLISHED => {
            emit_close(c, sk, close::UNUSED, how::LOCAL, 0, now_ns().saturating_sub(c.start_ns))
        }
        _ => {}
    }
    let _ = CONNS.remove(&sk);
    0
}

#[tracepoint]
pub fn tcp_destroy(ctx: TracePointContext) -> u32 {
    if hooks_only() {
        return 0;
    }
    let sk: u64 = field(&ctx, 8);
    let _ = CONNS.remove(&sk);
    0
}
