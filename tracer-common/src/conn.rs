//! The per-connection request state machine of an upstream connection, as pure functions: the
//! kernel programs (`tracer-ebpf/src/requests.rs`) keep one [`Conn`] per followed socket in an
//! LRU map and call these on each hook with the time and the hook's result; a transition hands
//! what it emits (at most one request record, then at most one close record) to a [`Sink`]: the
//! ring buffer in the kernel, an [`Emit`] in the host tests. No I/O, no loops, no allocation: it
//! compiles for the BPF target and is unit-tested on the host.
//!
//! Why a sink and not a returned `Option<RequestEvent>`: a `None` leaves the payload bytes
//! undefined, LLVM copies them anyway, and the verifier refuses the program for reading a
//! register that was never written (`R2 !read_ok`). Here a record is built only on the path
//! that emits it, every field set.
//!
//! ```text
//! IDLE ──send──▶ REQUEST_SENT ──recv > 0──▶ RESPONDING ──send──▶ REQUEST_SENT (next request, seq + 1)
//!   │                 │                         │
//!   │                 ├─ peer close ─▶ CLOSED   ├─ peer close ─▶ CLOSED   (request record; an idle close
//!   │                 │  (premature, or the      │                          too after a gap ≥ IDLE_GAP_NS)
//!   │                 │  keep-alive race if      └─ local close: request record (local_close)
//!   │                 │  seq ≥ 2)
//!   │                 └─ local close: proxy abort
//!   ├─ peer close ─▶ CLOSED (idle close)
//!   └─ local close: unused, if a TCP connection the handshake had ESTABLISHED
//! ```
//!
//! A peer close is a receive returning 0 (EOF) or ECONNRESET, or a send failing with EPIPE or
//! ECONNRESET (a send on a connection the peer closed still starts a request: the proxy tried
//! to reuse it). Other failed sends (EAGAIN: nothing was sent) and peeks (MSG_PEEK: the bytes
//! stay queued) change nothing, and nothing changes after CLOSED.

use crate::linux::{AF_UNIX, ECONNRESET, EINPROGRESS, EPIPE, MSG_PEEK};
use crate::request::{CloseClass, CloseHow, ConnState, RequestEnd};
use crate::{ConnCloseEvent, EventHeader, Kind, RequestEvent};

/// A peer EOF this long after the last response byte closed an idle keep-alive connection;
/// sooner, it ended the response (HTTP/1.0 style).
pub const IDLE_GAP_NS: u64 = 10_000_000;

/// Is a connect() with this result (0 or -errno) worth following? Connected, or a non-blocking
/// TCP connect under way.
#[inline(always)]
pub fn follows_connect(ret: i64) -> bool {
    ret == 0 || ret == -(EINPROGRESS as i64)
}

/// An upstream connection being followed (the value of the kernel's per-socket map).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conn {
    /// The proxy process that connected it: the header of every record it emits (kind and time
    /// are set per record).
    pub hdr: EventHeader,
    /// When the current request's first byte was sent (when the connection was made, before the
    /// first request).
    pub start_ns: u64,
    pub first_byte_ns: u64,
    pub last_byte_ns: u64,
    /// Idle time before the current request (0 on a fresh connection).
    pub idle_before_ns: u64,
    pub bytes_sent: u32,
    pub bytes_recv: u32,
    /// Requests started on the connection (the current one included).
    pub seq: u32,
    pub fd: i32,
    pub family: u16,
    pub state: ConnState,
    pub _pad: [u8; 5],
}
const _: () = assert!(core::mem::size_of::<Conn>() == 96);

/// Where a transition writes what it emits. A transition calls `request` at most once, then
/// `close` at most once.
pub trait Sink {
    fn request(&mut self, r: &RequestEvent);
    fn close(&mut self, c: &ConnCloseEvent);
}

/// What one transition emitted (the sink of the host tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Emit {
    pub request: Option<RequestEvent>,
    pub close: Option<ConnCloseEvent>,
}

impl Sink for Emit {
    fn request(&mut self, r: &RequestEvent) {
        assert!(self.request.is_none() && self.close.is_none(), "a request record after another record");
        self.request = Some(*r);
    }
    fn close(&mut self, c: &ConnCloseEvent) {
        assert!(self.close.is_none(), "two close records");
        self.close = Some(*c);
    }
}

impl Conn {
    /// A connection the proxy (`hdr`: its task, `hdr.ts_ns`: when connect() returned) just
    /// connected on `fd` to an address of `family`.
    #[inline(always)]
    pub fn connected(hdr: &EventHeader, fd: i32, family: u16) -> Conn {
        Conn {
            hdr: EventHeader { kind: Kind::Request as u32, ..*hdr },
            start_ns: hdr.ts_ns,
            first_byte_ns: 0,
            last_byte_ns: 0,
            idle_before_ns: 0,
            bytes_sent: 0,
            bytes_recv: 0,
            seq: 0,
            fd,
            family,
            state: ConnState::Idle,
            _pad: [0; 5],
        }
    }

    /// The proxy sent on the connection: `ret` bytes, or -errno.
    #[inline(always)]
    pub fn on_send(&mut self, sk: u64, now_ns: u64, ret: i32, out: &mut impl Sink) {
        if self.state == ConnState::Closed {
            return;
        }
        let failed = ret == -EPIPE || ret == -ECONNRESET;
        if ret < 0 && !failed {
            return; // EAGAIN and the like: nothing was sent, nothing changed
        }
        let sent = if ret > 0 { ret as u32 } else { 0 };
        if self.state == ConnState::RequestSent {
            self.bytes_sent = self.bytes_sent.wrapping_add(sent);
        } else {
            // A new request on a kept-alive connection (even one whose send fails: the proxy
            // tried to reuse it): the previous response is complete.
            if self.state == ConnState::Responding {
                out.request(&self.request_record(sk, now_ns, RequestEnd::NextRequest));
                self.idle_before_ns = now_ns.saturating_sub(self.last_byte_ns);
            } else if self.seq == 0 {
                self.idle_before_ns = 0; // the first request on a new connection
            } else {
                self.idle_before_ns = now_ns.saturating_sub(self.start_ns);
            }
            self.seq = self.seq.wrapping_add(1);
            self.start_ns = now_ns;
            self.first_byte_ns = 0;
            self.last_byte_ns = 0;
            self.bytes_sent = sent;
            self.bytes_recv = 0;
            self.state = ConnState::RequestSent;
        }
        if failed {
            self.peer_closed(sk, now_ns, CloseHow::SendFailed, out);
        }
    }

    /// The proxy received on the connection: `ret` bytes, 0 (EOF) or -errno, with the msg
    /// `flags`.
    #[inline(always)]
    pub fn on_recv(&mut self, sk: u64, now_ns: u64, ret: i32, flags: i32, out: &mut impl Sink) {
        if self.state == ConnState::Closed {
            return;
        }
        if ret > 0 {
            if flags & MSG_PEEK != 0 {
                return; // the bytes stay queued: the real read comes later
            }
            if self.state == ConnState::RequestSent {
                self.state = ConnState::Responding;
                self.first_byte_ns = now_ns;
            }
            if self.state == ConnState::Responding {
                self.last_byte_ns = now_ns;
                self.bytes_recv = self.bytes_recv.wrapping_add(ret as u32);
            }
        } else if ret == 0 || ret == -ECONNRESET {
            let how = if ret == 0 { CloseHow::Eof } else { CloseHow::Reset };
            self.peer_closed(sk, now_ns, how, out);
        }
    }

    /// The proxy close()d the connection. `tcp_established` is asked (and the socket read) only
    /// for a TCP connection that never carried a request: if the handshake completed, the proxy
    /// gave up on a connect that had in fact succeeded. The caller then forgets the connection.
    #[inline(always)]
    pub fn on_local_close(&mut self, sk: u64, now_ns: u64, tcp_established: impl FnOnce() -> bool, out: &mut impl Sink) {
        match self.state {
            ConnState::RequestSent => {
                let age = now_ns.saturating_sub(self.start_ns);
                out.close(&self.close_record(sk, now_ns, CloseClass::ProxyAbort, CloseHow::Local, age, self.idle_before_ns));
            }
            ConnState::Responding => out.request(&self.request_record(sk, now_ns, RequestEnd::LocalClose)),
            // Never used. Still in SYN_SENT, it is reported by tcp_set_state as abandoned; already
            // ESTABLISHED, only this close shows that the proxy gave up on it.
            ConnState::Idle if self.seq == 0 && self.family != AF_UNIX && tcp_established() => {
                let idle = now_ns.saturating_sub(self.start_ns);
                out.close(&self.close_record(sk, now_ns, CloseClass::Unused, CloseHow::Local, 0, idle));
            }
            _ => {}
        }
        self.state = ConnState::Closed;
    }

    /// The connection received a RST (`tcp:tcp_receive_reset`, softirq context). Only a TCP
    /// connection that never carried a request is ended here: nginx learns of that reset from
    /// getsockopt(SO_ERROR), not from a send or receive, so nothing else would show it. A RST on
    /// a connection in use is seen by the proxy's next send/recv (the other transitions).
    #[inline(always)]
    pub fn on_reset(&mut self, sk: u64, now_ns: u64, out: &mut impl Sink) {
        if self.state == ConnState::Idle && self.seq == 0 && self.family != AF_UNIX {
            let waited = now_ns.saturating_sub(self.start_ns);
            out.close(&self.close_record(sk, now_ns, CloseClass::ResetUnused, CloseHow::Reset, 0, waited));
            self.state = ConnState::Closed;
        }
    }

    /// The upstream closed the connection (EOF, RST, or a send failed). The state stays CLOSED
    /// until the proxy's close() (or the socket's destruction, or LRU eviction) removes it.
    #[inline(always)]
    fn peer_closed(&mut self, sk: u64, now_ns: u64, how: CloseHow, out: &mut impl Sink) {
        match self.state {
            ConnState::RequestSent => {
                let class = if self.seq > 1 { CloseClass::KeepaliveRace } else { CloseClass::Premature };
                let age = now_ns.saturating_sub(self.start_ns);
                out.close(&self.close_record(sk, now_ns, class, how, age, self.idle_before_ns));
            }
            ConnState::Responding => {
                out.request(&self.request_record(sk, now_ns, RequestEnd::PeerClose));
                let gap = now_ns.saturating_sub(self.last_byte_ns);
                if gap >= IDLE_GAP_NS {
                    out.close(&self.close_record(sk, now_ns, CloseClass::Idle, how, 0, gap));
                }
            }
            _ => out.close(&self.close_record(sk, now_ns, CloseClass::Idle, how, 0, now_ns.saturating_sub(self.start_ns))),
        }
        self.state = ConnState::Closed;
    }

    /// The current request, ended by `end`.
    #[inline(always)]
    fn request_record(&self, sk: u64, now_ns: u64, end: RequestEnd) -> RequestEvent {
        RequestEvent {
            hdr: EventHeader { kind: Kind::Request as u32, ts_ns: now_ns, ..self.hdr },
            sk,
            start_ns: self.start_ns,
            first_byte_ns: self.first_byte_ns,
            last_byte_ns: self.last_byte_ns,
            idle_before_ns: self.idle_before_ns,
            bytes_sent: self.bytes_sent,
            bytes_recv: self.bytes_recv,
            seq: self.seq,
            end: end as u32,
            fd: self.fd,
            family: self.family,
            _pad: 0,
        }
    }

    #[inline(always)]
    fn close_record(&self, sk: u64, now_ns: u64, class: CloseClass, how: CloseHow, age_ns: u64, idle_ns: u64) -> ConnCloseEvent {
        ConnCloseEvent {
            hdr: EventHeader { kind: Kind::ConnClose as u32, ts_ns: now_ns, ..self.hdr },
            sk,
            request_age_ns: age_ns,
            idle_ns,
            class: class as u32,
            how: how as u32,
            seq: self.seq,
            bytes_recv: self.bytes_recv,
            fd: self.fd,
            family: self.family,
            _pad: 0,
        }
    }
}

#[cfg(test)]
mod tests;
