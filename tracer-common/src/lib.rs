//! One wire definition for everything the kernel programs hand to userspace.
//!
//! Every ring-buffer record starts with [`EventHeader`], so userspace dispatches on `kind` before
//! decoding the rest. Structs are `#[repr(C)]` with explicit padding, no `bool`, and a size assert:
//! the same bytes mean the same thing on both sides. Kind ids are never reused.
#![no_std]

pub mod connect;
pub mod counters;
pub mod filter;
pub mod kernel_layout;
pub mod request;
pub mod tcp;

pub use connect::{ConnectEvent, ListenEvent};
pub use request::{ConnCloseEvent, ExitEvent, ForkEvent, RequestEvent, SignalEvent, StatusEvent};
pub use tcp::{AcceptEvent, ListenOverflowEvent, TcpAddrs, TcpConnectEvent};

/// Default entries of each per-connection kernel map (`--map-entries` changes it at load time).
pub const CONN_MAP_ENTRIES: u32 = 65536;
/// SK_BY_FD (fd → followed connection) has this many times the entries of the other
/// per-connection maps: it then outlives a connection's state in CONNS, so a close() can tell
/// that the state was evicted (`counters::CONN_EVICTED`) instead of both vanishing together.
pub const SK_BY_FD_FACTOR: u32 = 2;

/// Length of a task's `comm` in the kernel (TASK_COMM_LEN).
pub const COMM_LEN: usize = 16;

/// Event kinds (first field of every record). Explicit and never reused.
pub mod kind {
    /// A connect() that returned (any result), see [`crate::ConnectEvent`].
    pub const CONNECT: u32 = 1;
    /// A listen() call: the backlog the application asked for, see [`crate::ListenEvent`].
    pub const LISTEN: u32 = 2;
    /// A TCP connect attempt left SYN_SENT, see [`crate::TcpConnectEvent`].
    pub const TCP_CONNECT: u32 = 3;
    /// A final ACK dropped at a full accept queue, see [`crate::ListenOverflowEvent`].
    pub const LISTEN_OVERFLOW: u32 = 4;
    /// accept() returned a TCP connection, see [`crate::AcceptEvent`].
    pub const ACCEPT: u32 = 5;
    /// An upstream request got its response, see [`crate::RequestEvent`].
    pub const REQUEST: u32 = 6;
    /// An upstream connection closed in a way that matters, see [`crate::ConnCloseEvent`].
    pub const CONN_CLOSE: u32 = 7;
    /// A fatal signal was generated, see [`crate::SignalEvent`].
    pub const SIGNAL: u32 = 8;
    /// A process exited, see [`crate::ExitEvent`].
    pub const EXIT: u32 = 9;
    /// An app server's master forked a worker, see [`crate::ForkEvent`].
    pub const FORK: u32 = 10;
    /// The proxy wrote a 5xx status line, see [`crate::StatusEvent`].
    pub const STATUS: u32 = 11;
}

/// Shared first part of every event.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventHeader {
    /// One of [`kind`].
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
