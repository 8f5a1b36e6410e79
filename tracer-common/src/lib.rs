//! One wire definition for everything the kernel programs hand to userspace.
//!
//! Every ring-buffer record starts with [`EventHeader`], so userspace dispatches on `kind` before
//! decoding the rest. Structs are `#[repr(C)]` with explicit padding, no `bool`, and a size assert:
//! the same bytes mean the same thing on both sides. Kind ids are never reused.
//!
//! Every code the kernel writes (event kind, close class and how, request end, connection state,
//! TCP connect outcome, loss counter) is an enum generated from one name table ([`Code`]): the
//! kernel writes `X as u32`, userspace reads it back with `from_u32` and names it with `as_str`.
//! Beside the wire types: [`offsets`] (where the programs read), [`probes`] (the attach table)
//! and [`conn`] (the per-connection request state machine, pure and host-tested).
#![cfg_attr(not(test), no_std)]

mod codes;
pub mod conn;
pub mod connect;
pub mod counters;
pub mod filter;
pub mod kernel_layout;
pub mod linux;
pub mod offsets;
pub mod probes;
pub mod request;
pub mod status;
pub mod tcp;

use codes::codes;
pub use codes::{Code, UnknownName};
pub use counters::Counter;

pub use connect::{ConnectEvent, ListenEvent};
pub use request::{ConnCloseEvent, ExitEvent, ForkEvent, RequestEvent, SignalEvent, StatusEvent};
pub use tcp::{AcceptEvent, ListenOverflowEvent, TcpAddrs, TcpConnectEvent};

/// Default entries of each per-connection kernel map (`--map-entries` changes it at load time).
pub const CONN_MAP_ENTRIES: u32 = 65536;
/// SK_BY_FD (fd → followed connection) has this many times the entries of the other
/// per-connection maps: it then outlives a connection's state in CONNS, so a close() can tell
/// that the state was evicted ([`Counter::ConnEvicted`]) instead of both vanishing together.
pub const SK_BY_FD_FACTOR: u32 = 2;

/// Length of a task's `comm` in the kernel (TASK_COMM_LEN).
pub const COMM_LEN: usize = 16;

codes! {
    /// Event kinds (first field of every record). Explicit and never reused.
    pub enum Kind: u32 {
        /// A connect() that returned (any result), see [`crate::ConnectEvent`].
        Connect = 1 => "connect",
        /// A listen() call: the backlog the application asked for, see [`crate::ListenEvent`].
        Listen = 2 => "listen",
        /// A TCP connect attempt left SYN_SENT, see [`crate::TcpConnectEvent`].
        TcpConnect = 3 => "tcp_connect",
        /// A final ACK dropped at a full accept queue, see [`crate::ListenOverflowEvent`].
        ListenOverflow = 4 => "listen_overflow",
        /// accept() returned a TCP connection, see [`crate::AcceptEvent`].
        Accept = 5 => "accept",
        /// An upstream request got its response, see [`crate::RequestEvent`].
        Request = 6 => "request",
        /// An upstream connection closed in a way that matters, see [`crate::ConnCloseEvent`].
        ConnClose = 7 => "conn_close",
        /// A fatal signal was generated, see [`crate::SignalEvent`].
        Signal = 8 => "signal",
        /// A process exited, see [`crate::ExitEvent`].
        Exit = 9 => "exit",
        /// An app server's master forked a worker, see [`crate::ForkEvent`].
        Fork = 10 => "fork",
        /// The proxy wrote a 5xx status line, see [`crate::StatusEvent`].
        Status = 11 => "status",
    }
}

/// [`Kind`] values as plain integers, for userspace code that still matches on them (to be
/// replaced by [`Kind::from_u32`]).
pub mod kind {
    use super::Kind;
    pub const CONNECT: u32 = Kind::Connect as u32;
    pub const LISTEN: u32 = Kind::Listen as u32;
    pub const TCP_CONNECT: u32 = Kind::TcpConnect as u32;
    pub const LISTEN_OVERFLOW: u32 = Kind::ListenOverflow as u32;
    pub const ACCEPT: u32 = Kind::Accept as u32;
    pub const REQUEST: u32 = Kind::Request as u32;
    pub const CONN_CLOSE: u32 = Kind::ConnClose as u32;
    pub const SIGNAL: u32 = Kind::Signal as u32;
    pub const EXIT: u32 = Kind::Exit as u32;
    pub const FORK: u32 = Kind::Fork as u32;
    pub const STATUS: u32 = Kind::Status as u32;
}

/// Shared first part of every event.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventHeader {
    /// A [`Kind`] value.
    pub kind: u32,
    /// Thread-group id (the process id as userspace sees it).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    pub _pad: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the event completed.
    pub ts_ns: u64,
    pub comm: [u8; COMM_LEN],
}
const _: () = assert!(core::mem::size_of::<EventHeader>() == 40);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), made only of integers and byte arrays, with explicit padding.
    unsafe impl aya::Pod for crate::EventHeader {}
    unsafe impl aya::Pod for crate::ConnectEvent {}
    unsafe impl aya::Pod for crate::ListenEvent {}
    unsafe impl aya::Pod for crate::filter::FilterConfig {}
    unsafe impl aya::Pod for crate::kernel_layout::KernelLayout {}
    unsafe impl aya::Pod for crate::TcpConnectEvent {}
    unsafe impl aya::Pod for crate::ListenOverflowEvent {}
    unsafe impl aya::Pod for crate::AcceptEvent {}
    unsafe impl aya::Pod for crate::RequestEvent {}
    unsafe impl aya::Pod for crate::ConnCloseEvent {}
    unsafe impl aya::Pod for crate::SignalEvent {}
    unsafe impl aya::Pod for crate::ExitEvent {}
    unsafe impl aya::Pod for crate::ForkEvent {}
    unsafe impl aya::Pod for crate::StatusEvent {}
}

#[cfg(test)]
mod tests {
    #[test]
    fn event_kinds_keep_their_values_and_names() {
        crate::codes::assert_table::<crate::Kind>(&[
            (1, "connect"),
            (2, "listen"),
            (3, "tcp_connect"),
            (4, "listen_overflow"),
            (5, "accept"),
            (6, "request"),
            (7, "conn_close"),
            (8, "signal"),
            (9, "exit"),
            (10, "fork"),
            (11, "status"),
        ]);
        assert_eq!(crate::kind::CONN_CLOSE, 7);
    }
}
