//! Upstream requests, from the proxy's own socket I/O (`sock:sock_send_length` /
//! `sock:sock_recv_length`, every family incl. unix) and its close() calls: a per-connection
//! state machine in the kernel ([`crate::conn`]), IDLE → REQUEST_SENT → RESPONDING → next request
//! (kept alive) or CLOSED.
//! And the process events that explain a cut request: fatal signals and exits.

use crate::{codes, EventHeader};

codes! {
    /// Connection states of the in-kernel request state machine ([`crate::conn`]).
    pub enum ConnState: u8 {
        Idle = 0 => "idle",
        /// The proxy sent request bytes and has had no response byte yet.
        RequestSent = 1 => "request_sent",
        /// Response bytes are arriving.
        Responding = 2 => "responding",
        /// The upstream closed it (EOF, RST, failed send); kept until the proxy's close() so
        /// that a close finding no state at all means the state was evicted.
        Closed = 3 => "closed",
    }
}

codes! {
    /// How a request's response ended ([`RequestEvent::end`]).
    pub enum RequestEnd: u32 {
        /// The proxy sent the next request on the same connection (keep-alive reuse).
        NextRequest = 1 => "next_request",
        /// The upstream closed the connection after responding (EOF).
        PeerClose = 2 => "peer_close",
        /// The proxy closed the connection after response bytes arrived.
        LocalClose = 3 => "local_close",
    }
}

/// One request/response exchange that got at least one response byte.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestEvent {
    /// The proxy process (nginx worker) that owns the connection.
    pub hdr: EventHeader,
    /// Kernel socket address: identifies the connection.
    pub sk: u64,
    /// First request byte sent, monotonic ns.
    pub start_ns: u64,
    /// First response byte received.
    pub first_byte_ns: u64,
    /// Last response byte received.
    pub last_byte_ns: u64,
    /// Idle time of the connection before this request (0 on a fresh connection).
    pub idle_before_ns: u64,
    pub bytes_sent: u32,
    pub bytes_recv: u32,
    /// 1 for the first request on the connection, 2 for the first reuse, …
    pub seq: u32,
    /// A [`RequestEnd`] value.
    pub end: u32,
    pub fd: i32,
    pub family: u16,
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<RequestEvent>() == 40 + 8 * 5 + 4 * 5 + 4);

codes! {
    /// How a connection was closed, when it matters ([`ConnCloseEvent::class`]).
    pub enum CloseClass: u32 {
        /// The upstream closed (EOF or RST) while a request was outstanding on a fresh
        /// connection: "upstream prematurely closed connection".
        Premature = 1 => "premature",
        /// The upstream closed an idle keep-alive connection: normal, not an error.
        Idle = 2 => "idle",
        /// A request was sent on a reused connection the upstream had closed (EOF or RST before
        /// any response byte): the keep-alive race.
        KeepaliveRace = 3 => "keepalive_race",
        /// The proxy closed the connection while a request was outstanding: it gave up
        /// (timeout).
        ProxyAbort = 4 => "proxy_abort",
        /// The proxy closed an ESTABLISHED TCP connection it had never sent a byte on. nginx
        /// does that when its connect timer fires in the same instant the handshake completes
        /// (a SYN retransmitted after 1 s against proxy_connect_timeout 1s): it never saw the
        /// connect succeed and logs "timed out … while connecting". (Or when its client left
        /// meanwhile: then no 504 follows.) Either way the connect was given up, not used.
        Unused = 5 => "unused",
        /// The upstream reset an ESTABLISHED TCP connection the proxy had not sent a byte on yet
        /// (a RST right after the handshake). A listener with `net.ipv4.tcp_abort_on_overflow =
        /// 1` answers a final ACK it has no room for in its accept queue this way; nginx logs
        /// "connect() failed (104: Connection reset by peer) while connecting to upstream".
        ResetUnused = 6 => "reset_unused",
    }
}

codes! {
    /// What the proxy saw of the connection's end ([`ConnCloseEvent::how`]).
    pub enum CloseHow: u32 {
        /// A receive returned 0.
        Eof = 1 => "eof",
        /// A receive failed with ECONNRESET.
        Reset = 2 => "reset",
        /// A send failed (EPIPE / ECONNRESET).
        SendFailed = 3 => "send_failed",
        /// The proxy's own close().
        Local = 4 => "local",
    }
}

/// [`CloseClass`] values as plain integers, for userspace code that still matches on them (to be
/// replaced by [`CloseClass::from_u32`]).
pub mod close {
    use super::CloseClass;
    pub const PREMATURE: u32 = CloseClass::Premature as u32;
    pub const IDLE: u32 = CloseClass::Idle as u32;
    pub const KEEPALIVE_RACE: u32 = CloseClass::KeepaliveRace as u32;
    pub const PROXY_ABORT: u32 = CloseClass::ProxyAbort as u32;
    pub const UNUSED: u32 = CloseClass::Unused as u32;
    pub const RESET_UNUSED: u32 = CloseClass::ResetUnused as u32;
}

/// [`CloseHow`] values as plain integers (see [`close`]).
pub mod how {
    use super::CloseHow;
    pub const EOF: u32 = CloseHow::Eof as u32;
    pub const RESET: u32 = CloseHow::Reset as u32;
    pub const SEND_FAILED: u32 = CloseHow::SendFailed as u32;
    pub const LOCAL: u32 = CloseHow::Local as u32;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnCloseEvent {
    pub hdr: EventHeader,
    pub sk: u64,
    /// Age of the outstanding request (first request byte → close); 0 for idle closes.
    pub request_age_ns: u64,
    /// How long the connection had been idle: before the outstanding request was sent (races),
    /// or until it was closed (idle closes).
    pub idle_ns: u64,
    /// A [`CloseClass`] value.
    pub class: u32,
    /// A [`CloseHow`] value.
    pub how: u32,
    /// Requests sent on the connection, including the outstanding one.
    pub seq: u32,
    pub bytes_recv: u32,
    pub fd: i32,
    pub family: u16,
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<ConnCloseEvent>() == 40 + 8 * 3 + 4 * 5 + 4);

/// A fatal signal generated for a process (`signal:signal_generate`); the header is the sender.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalEvent {
    pub hdr: EventHeader,
    pub sig: i32,
    pub target_pid: i32,
    pub target_comm: [u8; 16],
    /// Signal code (SI_USER = 0, SI_KERNEL = 0x80, …).
    pub code: i32,
    /// TRACE_SIGNAL_DELIVERED = 0, IGNORED = 1, …
    pub result: i32,
}
const _: () = assert!(core::mem::size_of::<SignalEvent>() == 40 + 8 + 16 + 8);

/// A process (thread group) exited (`sched:sched_process_exit` with group_dead).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitEvent {
    pub hdr: EventHeader,
}

/// An app server's master (a pid userspace put in `APP_MASTERS`) forked a worker
/// (`sched:sched_process_fork`): keeps the worker list exact across recycling.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForkEvent {
    /// The parent (the master).
    pub hdr: EventHeader,
    pub child_pid: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<ForkEvent>() == 48);

/// The proxy answered a 5xx: an HTTP/1.x status line (`HTTP/1.1 502 …` at the start of a writev
/// buffer, or of the plaintext handed to the TLS library) or an HTTP/2 HEADERS frame whose
/// `:status` is 5xx (one event per frame, so per stream): the 5xx its client received, seen
/// without reading its logs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusEvent {
    pub hdr: EventHeader,
    /// The client socket, or -1 when not known (the TLS library's write: the fd is not an
    /// argument).
    pub fd: i32,
    pub status: u16,
    /// Where it was read: a [`crate::status::StatusSource`] (was padding, always 0 =
    /// `kernel_writev`, so older recordings decode the same).
    pub source: u16,
}
const _: () = assert!(core::mem::size_of::<StatusEvent>() == 48);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::assert_table;

    #[test]
    fn request_codes_keep_their_values_and_names() {
        assert_table::<ConnState>(&[(0, "idle"), (1, "request_sent"), (2, "responding"), (3, "closed")]);
        assert_table::<RequestEnd>(&[(1, "next_request"), (2, "peer_close"), (3, "local_close")]);
        assert_table::<CloseClass>(&[(1, "premature"), (2, "idle"), (3, "keepalive_race"), (4, "proxy_abort"), (5, "unused"), (6, "reset_unused")]);
        assert_table::<CloseHow>(&[(1, "eof"), (2, "reset"), (3, "send_failed"), (4, "local")]);
        assert_eq!((close::PREMATURE, close::IDLE, close::KEEPALIVE_RACE, close::PROXY_ABORT, close::UNUSED), (1, 2, 3, 4, 5));
        assert_eq!((how::EOF, how::RESET, how::SEND_FAILED, how::LOCAL), (1, 2, 3, 4));
        assert_eq!(core::mem::size_of::<ConnState>(), 1);
    }
}
