//! Upstream requests, from the proxy's own socket I/O (`sock:sock_send_length` /
//! `sock:sock_recv_length`, every family incl. unix) and its close() calls: a per-connection
//! state machine in the kernel, IDLE → REQUEST_SENT → RESPONDING → IDLE (kept alive) or CLOSED.
//! And the process events that explain a cut request: fatal signals and exits.

use crate::EventHeader;

/// Connection states of the in-kernel request state machine.
pub mod state {
    pub const IDLE: u8 = 0;
    /// The proxy sent request bytes and has had no response byte yet.
    pub const REQUEST_SENT: u8 = 1;
    /// Response bytes are arriving.
    pub const RESPONDING: u8 = 2;
    /// The upstream closed it (EOF, RST, failed send); kept until the proxy's close() so that a
    /// close finding no state at all means the state was evicted.
    pub const CLOSED: u8 = 3;
}

/// How a request's response ended.
pub mod end {
    /// The proxy sent the next request on the same connection (keep-alive reuse).
    pub const NEXT_REQUEST: u32 = 1;
    /// The upstream closed the connection after responding (EOF).
    pub const PEER_CLOSE: u32 = 2;
    /// The proxy closed the connection after response bytes arrived.
    pub const LOCAL_CLOSE: u32 = 3;
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
    /// One of [`end`].
    pub end: u32,
    pub fd: i32,
    pub family: u16,
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<RequestEvent>() == 40 + 8 * 5 + 4 * 5 + 4);

/// How a connection was closed, when it matters.
pub mod close {
    /// The upstream closed (EOF or RST) while a request was outstanding on a fresh connection:
    /// "upstream prematurely closed connection".
    pub const PREMATURE: u32 = 1;
    /// The upstream closed an idle keep-alive connection: normal, not an error.
    pub const IDLE: u32 = 2;
    /// A request was sent on a reused connection the upstream had closed (EOF or RST before any
    /// response byte): the keep-alive race.
    pub const KEEPALIVE_RACE: u32 = 3;
    /// The proxy closed the connection while a request was outstanding: it gave up (timeout).
    pub const PROXY_ABORT: u32 = 4;
    /// The proxy closed an ESTABLISHED TCP connection it had never sent a byte on. nginx does
    /// that when its connect timer fires in the same instant the handshake completes (a SYN
    /// retransmitted after 1 s against proxy_connect_timeout 1s): it never saw the connect
    /// succeed and logs "timed out … while connecting". (Or when its client left meanwhile:
    /// then no 504 follows.) Either way the connect was given up, not used.
    pub const UNUSED: u32 = 5;
}

/// What the proxy saw of the peer's close.
pub mod how {
    pub const EOF: u32 = 1;
    pub const RESET: u32 = 2;
    /// A send failed (EPIPE / ECONNRESET).
    pub const SEND_FAILED: u32 = 3;
    pub const LOCAL: u32 = 4;
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
    /// One of [`close`].
    pub class: u32,
    /// One of [`how`].
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

/// The proxy wrote an HTTP/1.x status line ≥ 500 on a socket (`HTTP/1.1 502 …` at the start of a
/// write/writev/send buffer): the 5xx its client received, seen without reading its logs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusEvent {
    pub hdr: EventHeader,
    pub fd: i32,
    pub status: u16,
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<StatusEvent>() == 48);
