//! connect() and listen() events from the `syscalls:sys_{enter,exit}_connect` and
//! `syscalls:sys_enter_listen` tracepoints.

use crate::EventHeader;

/// Bytes of the caller's sockaddr that are copied: a `sockaddr_un` is 110 bytes (family + 108-byte
/// path), the largest family we decode; rounded up to a multiple of 8.
pub const SOCKADDR_MAX: usize = 112;

/// A connect() as the caller saw it: target address, result and how long the call took.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectEvent {
    pub hdr: EventHeader,
    /// Time spent inside connect() (enter → exit).
    pub duration_ns: u64,
    /// Return value: 0, or -errno (-11 EAGAIN: unix listen queue full, -115 EINPROGRESS: normal
    /// for a non-blocking TCP connect).
    pub ret: i64,
    pub fd: i32,
    /// The `addrlen` argument. For unix sockets it delimits the name (abstract names may contain
    /// NUL bytes and are not NUL-terminated).
    pub addrlen: u32,
    /// The first `min(addrlen, SOCKADDR_MAX)` bytes of the caller's sockaddr, zero-filled after.
    pub addr: [u8; SOCKADDR_MAX],
}
const _: () = assert!(core::mem::size_of::<ConnectEvent>() == 40 + 8 + 8 + 4 + 4 + SOCKADDR_MAX);

/// A listen() call: the backlog the application asked for, before the kernel caps it at
/// net.core.somaxconn.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenEvent {
    pub hdr: EventHeader,
    pub fd: i32,
    pub backlog: i32,
}
const _: () = assert!(core::mem::size_of::<ListenEvent>() == 48);
