//! TCP events: connect outcome per socket (`sock:inet_sock_set_state`, `tcp:tcp_retransmit_skb`,
//! `tcp:tcp_receive_reset`), final-ACK drops at a full listener (`skb:kfree_skb`), and how long an
//! accepted connection waited in the accept queue (`syscalls:sys_{enter,exit}_accept{,4}`).

use crate::{codes, EventHeader};

/// Addresses as the tcp/sock tracepoints give them. IPv4 addresses use the first 4 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpAddrs {
    /// AF_INET or AF_INET6.
    pub family: u16,
    /// Local port (host order).
    pub sport: u16,
    /// Remote port (host order).
    pub dport: u16,
    pub _pad: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<TcpAddrs>() == 40);

codes! {
    /// How a connection attempt left SYN_SENT ([`TcpConnectEvent::outcome`]).
    pub enum ConnectOutcome: u32 {
        /// SYN-ACK received: ESTABLISHED.
        Established = 1 => "established",
        /// RST received in SYN_SENT: nothing listening (ECONNREFUSED).
        Refused = 2 => "refused",
        /// Closed in SYN_SENT without a RST: the caller gave up (e.g. nginx's
        /// proxy_connect_timeout) or the kernel ran out of SYN retries (ETIMEDOUT).
        Abandoned = 3 => "abandoned",
    }
}

/// [`ConnectOutcome`] values as plain integers, for userspace code that still matches on them
/// (to be replaced by [`ConnectOutcome::from_u32`]).
pub mod outcome {
    use super::ConnectOutcome;
    pub const ESTABLISHED: u32 = ConnectOutcome::Established as u32;
    pub const REFUSED: u32 = ConnectOutcome::Refused as u32;
    pub const ABANDONED: u32 = ConnectOutcome::Abandoned as u32;
}

/// A TCP connect attempt by a traced process, reported when it leaves SYN_SENT.
/// The header names the process that called connect() (saved at CLOSE→SYN_SENT).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpConnectEvent {
    pub hdr: EventHeader,
    pub addrs: TcpAddrs,
    /// Kernel socket address (identifies the connection while it lives).
    pub skaddr: u64,
    /// CLOSE→SYN_SENT, monotonic ns.
    pub start_ns: u64,
    /// SYN_SENT → outcome.
    pub latency_ns: u64,
    /// A [`ConnectOutcome`] value.
    pub outcome: u32,
    /// SYNs retransmitted while in SYN_SENT (each one means the previous SYN got no answer).
    pub syn_retransmits: u32,
}
const _: () = assert!(core::mem::size_of::<TcpConnectEvent>() == 40 + 40 + 8 * 3 + 8);

/// A packet completing a handshake (final ACK, or data on a SYN-cookie connection) dropped at a
/// listener whose accept queue was full: `skb:kfree_skb` with `rx_sk` = a socket in LISTEN and
/// reason TCP_LISTEN_OVERFLOW, or NO_SOCKET (what 6.x reports when a SYN-cookie ACK cannot get a
/// child socket because the accept queue is full).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenOverflowEvent {
    pub hdr: EventHeader,
    /// The listener's kernel address.
    pub skaddr: u64,
    pub family: u16,
    /// The listener's local port (host order).
    pub port: u16,
    /// IPv4 local address of the listener (0.0.0.0 for wildcard; zero for IPv6).
    pub addr4: [u8; 4],
    /// The skb_drop_reason value.
    pub reason: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<ListenOverflowEvent>() == 64);

/// accept() returned a TCP connection: how long it sat established in the accept queue.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcceptEvent {
    pub hdr: EventHeader,
    /// SYN_RECV→ESTABLISHED (queued) to accept() returning.
    pub wait_ns: u64,
    pub listen_fd: i32,
    pub fd: i32,
    /// The peer as accept() reported it (port host order; IPv4 in the first 4 bytes).
    pub peer_family: u16,
    pub peer_port: u16,
    /// The listener's port (the accepted connection's local port, host order): identifies the
    /// listener without a /proc lookup, which fails once the listener is closed.
    pub local_port: u16,
    pub _pad: u16,
    pub peer_addr: [u8; 16],
    /// The accepted connection's local address (IPv4 in the first 4 bytes).
    pub local_addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<AcceptEvent>() == 40 + 8 + 8 + 8 + 16 + 16);

#[cfg(test)]
mod tests {
    #[test]
    fn connect_outcomes_keep_their_values_and_names() {
        crate::codes::assert_table::<super::ConnectOutcome>(&[(1, "established"), (2, "refused"), (3, "abandoned")]);
    }
}
