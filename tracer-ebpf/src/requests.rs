//! Upstream request tracking: the owner of the per-connection maps. `CONNS` holds a
//! [`tracer_common::conn::Conn`] per followed socket, `SK_BY_FD` finds it again from the proxy's
//! close(fd). Other modules reach them only through the functions here:
//! - `probes::connect` calls [`follow_connected`] when a traced process connected a stream socket;
//! - `probes::sock_io` calls [`on_send`] / [`on_recv`] on every send/recv of any socket (the map
//!   lookup by socket decides);
//! - `probes::close` calls [`on_close`] at the proxy's close() and [`forget`] when a TCP socket is
//!   destroyed.
//!
//! The transitions and the records they emit are `tracer_common::conn` (pure, unit-tested on the
//! host); this module only looks the state up and passes the time, the hook's result and the ring
//! buffer as the transition's sink.

use aya_ebpf::{macros::map, maps::LruHashMap};
use tracer_common::{
    conn::{follows_connect, Conn, Sink},
    linux::TCP_ESTABLISHED,
    Counter, EventHeader, CONN_MAP_ENTRIES, SK_BY_FD_FACTOR,
};

use crate::layout::{stream_sock_of_fd, tcp_state};
use crate::maps::{count, now_ns, output, LRU_PER_CPU};

/// Followed upstream connections by their struct sock.
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
    if !follows_connect(ret) {
        return;
    }
    let sk = if tcp_sk != 0 {
        tcp_sk
    } else {
        // None also for a connected UDP or unix datagram socket: no requests to follow.
        let Some(sk) = stream_sock_of_fd(fd) else { return };
        sk
    };
    let c = Conn::connected(hdr, fd, family);
    let id = (hdr.pid as u64) << 32 | hdr.tid as u64;
    if CONNS.insert(&sk, &c, 0).is_err() || SK_BY_FD.insert(&fd_key(id, fd), &sk, 0).is_err() {
        count(Counter::ConnMapFull);
    }
}

/// A send on socket `sk` returned `ret`.
#[inline(always)]
pub fn on_send(sk: u64, ret: i32) {
    let Some(c) = CONNS.get_ptr_mut(&sk) else { return };
    unsafe { &mut *c }.on_send(sk, now_ns(), ret, &mut RingBuffer);
}

/// A receive on socket `sk` returned `ret` with `flags`.
#[inline(always)]
pub fn on_recv(sk: u64, ret: i32, flags: i32) {
    let Some(c) = CONNS.get_ptr_mut(&sk) else { return };
    unsafe { &mut *c }.on_recv(sk, now_ns(), ret, flags, &mut RingBuffer);
}

/// Socket `sk` received a RST (softirq context: the map lookup by socket decides).
#[inline(always)]
pub fn on_reset(sk: u64) {
    let Some(c) = CONNS.get_ptr_mut(&sk) else { return };
    // In SYN_SENT it is a refused connect (`tcp_state` reports that one).
    if tcp_state(sk) != TCP_ESTABLISHED {
        return;
    }
    unsafe { &mut *c }.on_reset(sk, now_ns(), &mut RingBuffer);
}

/// The traced task `pid_tgid` close()s `fd`: if it is a followed connection, end it and forget it.
#[inline(always)]
pub fn on_close(pid_tgid: u64, fd: i32) {
    let key = fd_key(pid_tgid, fd);
    let Some(&sk) = (unsafe { SK_BY_FD.get(&key) }) else { return };
    let _ = SK_BY_FD.remove(&key);
    let Some(c) = CONNS.get_ptr_mut(&sk) else {
        // Followed (the fd is in SK_BY_FD), yet no state: the full LRU map evicted it.
        count(Counter::ConnEvicted);
        return;
    };
    unsafe { &mut *c }.on_local_close(sk, now_ns(), || tcp_state(sk) == TCP_ESTABLISHED, &mut RingBuffer);
    let _ = CONNS.remove(&sk);
}

/// Socket `sk` is being destroyed: drop its state if it was followed.
#[inline(always)]
pub fn forget(sk: u64) {
    let _ = CONNS.remove(&sk);
}

/// The records a transition emits go straight to the ring buffer.
struct RingBuffer;

impl Sink for RingBuffer {
    #[inline(always)]
    fn request(&mut self, r: &tracer_common::RequestEvent) {
        output(r);
    }
    #[inline(always)]
    fn close(&mut self, c: &tracer_common::ConnCloseEvent) {
        output(c);
    }
}
