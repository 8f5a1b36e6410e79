//! Ring-buffer records → typed events. The header's `kind` says which struct follows.

use std::mem::size_of;

use tracer_common::{
    kind, AcceptEvent, ConnCloseEvent, ConnectEvent, EventHeader, ExitEvent, ForkEvent, ListenEvent, ListenOverflowEvent, RequestEvent, SignalEvent,
    StatusEvent, TcpConnectEvent,
};

use crate::kernel::errno;
use crate::kernel::sockaddr::Target;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than the {need}-byte {what}")]
    Short { len: usize, need: usize, what: &'static str },
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
}

/// A decoded kernel event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Connect(ConnectEvent),
    Listen(ListenEvent),
    TcpConnect(TcpConnectEvent),
    ListenOverflow(ListenOverflowEvent),
    Accept(AcceptEvent),
    Request(RequestEvent),
    ConnClose(ConnCloseEvent),
    Signal(SignalEvent),
    Exit(ExitEvent),
    Fork(ForkEvent),
    Status(StatusEvent),
}

fn read<T: Copy>(bytes: &[u8], what: &'static str) -> Result<T, DecodeError> {
    if bytes.len() < size_of::<T>() {
        return Err(DecodeError::Short { len: bytes.len(), need: size_of::<T>(), what });
    }
    // SAFETY: length checked; T is a repr(C) plain-old-data wire struct; unaligned read.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

impl Event {
    pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
        let hdr: EventHeader = read(bytes, "event header")?;
        match hdr.kind {
            kind::CONNECT => Ok(Event::Connect(read(bytes, "connect event")?)),
            kind::LISTEN => Ok(Event::Listen(read(bytes, "listen event")?)),
            kind::TCP_CONNECT => Ok(Event::TcpConnect(read(bytes, "tcp connect event")?)),
            kind::LISTEN_OVERFLOW => Ok(Event::ListenOverflow(read(bytes, "listen overflow event")?)),
            kind::ACCEPT => Ok(Event::Accept(read(bytes, "accept event")?)),
            kind::REQUEST => Ok(Event::Request(read(bytes, "request event")?)),
            kind::CONN_CLOSE => Ok(Event::ConnClose(read(bytes, "close event")?)),
            kind::SIGNAL => Ok(Event::Signal(read(bytes, "signal event")?)),
            kind::EXIT => Ok(Event::Exit(read(bytes, "exit event")?)),
            kind::FORK => Ok(Event::Fork(read(bytes, "fork event")?)),
            kind::STATUS => Ok(Event::Status(read(bytes, "status event")?)),
            other => Err(DecodeError::UnknownKind(other)),
        }
    }

    pub fn header(&self) -> &EventHeader {
        match self {
            Event::Connect(e) => &e.hdr,
            Event::Listen(e) => &e.hdr,
            Event::TcpConnect(e) => &e.hdr,
            Event::ListenOverflow(e) => &e.hdr,
            Event::Accept(e) => &e.hdr,
            Event::Request(e) => &e.hdr,
            Event::ConnClose(e) => &e.hdr,
            Event::Signal(e) => &e.hdr,
            Event::Exit(e) => &e.hdr,
            Event::Fork(e) => &e.hdr,
            Event::Status(e) => &e.hdr,
        }
    }
}

/// The process name from a header (NUL-padded).
pub fn comm(hdr: &EventHeader) -> String {
    comm_str(&hdr.comm)
}

/// A NUL-padded kernel task name.
pub fn comm_str(c: &[u8; 16]) -> String {
    let end = c.iter().position(|&b| b == 0).unwrap_or(c.len());
    String::from_utf8_lossy(&c[..end]).into_owned()
}

/// A connect() with its address decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connect {
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub fd: i32,
    pub target: Target,
    /// 0 or a positive errno.
    pub errno: i32,
    pub duration_ns: u64,
}

impl Connect {
    pub fn from_event(e: &ConnectEvent) -> Connect {
        Connect {
            ts_ns: e.hdr.ts_ns,
            pid: e.hdr.pid,
            tid: e.hdr.tid,
            comm: comm(&e.hdr),
            fd: e.fd,
            target: Target::parse(&e.addr, e.addrlen),
            errno: if e.ret < 0 { (-e.ret) as i32 } else { 0 },
            duration_ns: e.duration_ns,
        }
    }

    /// A connect that did not reach the listener. EINPROGRESS (non-blocking TCP connect in
    /// flight) and EISCONN are normal, not failures.
    pub fn failed(&self) -> bool {
        self.errno != 0 && !errno::is_in_progress(self.errno)
    }
}

/// An IP address from the 16-byte field of a TCP event (IPv4 in the first 4 bytes).
pub fn ip(family: u16, addr: &[u8; 16]) -> std::net::IpAddr {
    if family == libc::AF_INET6 as u16 {
        std::net::IpAddr::V6(std::net::Ipv6Addr::from(*addr))
    } else {
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]))
    }
}

/// A TCP connect attempt with its addresses decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpConnect {
    pub ts_ns: u64,
    pub pid: u32,
    pub comm: String,
    pub local: std::net::SocketAddr,
    pub remote: std::net::SocketAddr,
    pub start_ns: u64,
    pub latency_ns: u64,
    /// `tracer_common::tcp::outcome::*`.
    pub outcome: u32,
    pub syn_retransmits: u32,
}

impl TcpConnect {
    pub fn from_event(e: &TcpConnectEvent) -> TcpConnect {
        let a = &e.addrs;
        TcpConnect {
            ts_ns: e.hdr.ts_ns,
            pid: e.hdr.pid,
            comm: comm(&e.hdr),
            local: std::net::SocketAddr::new(ip(a.family, &a.saddr), a.sport),
            remote: std::net::SocketAddr::new(ip(a.family, &a.daddr), a.dport),
            start_ns: e.start_ns,
            latency_ns: e.latency_ns,
            outcome: e.outcome,
            syn_retransmits: e.syn_retransmits,
        }
    }

    pub fn outcome_name(&self) -> &'static str {
        use tracer_common::tcp::outcome;
        match self.outcome {
            outcome::ESTABLISHED => "established",
            outcome::REFUSED => "refused",
            outcome::ABANDONED => "abandoned",
            _ => "unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_common::connect::SOCKADDR_MAX;

    fn connect_bytes(ret: i64) -> Vec<u8> {
        let mut comm = [0u8; 16];
        comm[..5].copy_from_slice(b"nginx");
        let mut addr = [0u8; SOCKADDR_MAX];
        addr[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
        addr[2..13].copy_from_slice(b"/tmp/a.sock");
        let e = ConnectEvent {
            hdr: EventHeader { kind: kind::CONNECT, pid: 10, tid: 11, _pad: 0, ts_ns: 5, comm },
            duration_ns: 1200,
            ret,
            fd: 7,
            addrlen: 2 + 11 + 1,
            addr,
        };
        let p = &e as *const ConnectEvent as *const u8;
        unsafe { std::slice::from_raw_parts(p, size_of::<ConnectEvent>()) }.to_vec()
    }

    #[test]
    fn decodes_a_connect() {
        let Event::Connect(e) = Event::decode(&connect_bytes(-11)).unwrap() else { panic!() };
        let c = Connect::from_event(&e);
        assert_eq!(c.comm, "nginx");
        assert_eq!((c.pid, c.tid, c.fd, c.errno, c.duration_ns), (10, 11, 7, 11, 1200));
        assert_eq!(c.target.to_string(), "unix:/tmp/a.sock");
        assert!(c.failed());
    }

    #[test]
    fn einprogress_is_not_a_failure() {
        let Event::Connect(e) = Event::decode(&connect_bytes(-115)).unwrap() else { panic!() };
        assert!(!Connect::from_event(&e).failed());
    }

    #[test]
    fn short_and_unknown_records_are_errors() {
        let b = connect_bytes(0);
        assert!(matches!(Event::decode(&b[..30]), Err(DecodeError::Short { need: 40, .. })));
        assert!(matches!(Event::decode(&b[..100]), Err(DecodeError::Short { what: "connect event", .. })));
        let mut u = b.clone();
        u[..4].copy_from_slice(&99u32.to_ne_bytes());
        assert_eq!(Event::decode(&u), Err(DecodeError::UnknownKind(99)));
    }
}
