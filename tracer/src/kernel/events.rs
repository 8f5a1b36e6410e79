//! Ring-buffer records → typed events, decoded once: the header's `kind` says which struct
//! follows, and every code the kernel wrote (close class, how, connect outcome) becomes its enum
//! here; a value no enum has is a decode error (counted), never passed on as a number.

use std::mem::size_of;

use tracer_common::request::{CloseClass, CloseHow};
use tracer_common::status::StatusSource;
use tracer_common::tcp::ConnectOutcome;
use tracer_common::{
    AcceptEvent, ConnCloseEvent, ConnectEvent, EventHeader, ExitEvent, ForkEvent, Kind, ListenEvent, ListenOverflowEvent, RequestEvent, SignalEvent,
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
    #[error("unknown {what} {value}")]
    UnknownCode { what: &'static str, value: u32 },
}

/// The enum of a code the kernel wrote.
fn code<T>(what: &'static str, value: u32, from: impl Fn(u32) -> Option<T>) -> Result<T, DecodeError> {
    from(value).ok_or(DecodeError::UnknownCode { what, value })
}

/// A decoded kernel event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Connect(Connect),
    Listen(ListenEvent),
    TcpConnect(TcpConnect),
    ListenOverflow(ListenOverflowEvent),
    Accept(AcceptEvent),
    Request(RequestEvent),
    ConnClose(ConnClose),
    Signal(SignalEvent),
    Exit(ExitEvent),
    Fork(ForkEvent),
    Status(StatusLine),
}

/// The header of a raw record (its kind, process and time), without decoding the rest.
pub fn header(bytes: &[u8]) -> Result<EventHeader, DecodeError> {
    read(bytes, "event header")
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
        let Some(kind) = Kind::from_u32(hdr.kind) else { return Err(DecodeError::UnknownKind(hdr.kind)) };
        Ok(match kind {
            Kind::Connect => Event::Connect(Connect::from_event(&read(bytes, "connect event")?)),
            Kind::Listen => Event::Listen(read(bytes, "listen event")?),
            Kind::TcpConnect => Event::TcpConnect(TcpConnect::from_event(&read(bytes, "tcp connect event")?)?),
            Kind::ListenOverflow => Event::ListenOverflow(read(bytes, "listen overflow event")?),
            Kind::Accept => Event::Accept(read(bytes, "accept event")?),
            Kind::Request => Event::Request(read(bytes, "request event")?),
            Kind::ConnClose => Event::ConnClose(ConnClose::from_event(&read(bytes, "close event")?)?),
            Kind::Signal => Event::Signal(read(bytes, "signal event")?),
            Kind::Exit => Event::Exit(read(bytes, "exit event")?),
            Kind::Fork => Event::Fork(read(bytes, "fork event")?),
            Kind::Status => Event::Status(StatusLine::from_event(&read(bytes, "status event")?)?),
        })
    }
}

/// A 5xx nginx answered, with where it was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusLine {
    pub hdr: EventHeader,
    /// The client socket, or -1 (read from the TLS library's write: no fd).
    pub fd: i32,
    pub status: u16,
    pub source: StatusSource,
}

impl StatusLine {
    pub fn from_event(e: &StatusEvent) -> Result<StatusLine, DecodeError> {
        let source = code("status source", u32::from(e.source), StatusSource::from_u32)?;
        Ok(StatusLine { hdr: e.hdr, fd: e.fd, status: e.status, source })
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
    pub outcome: ConnectOutcome,
    pub syn_retransmits: u32,
}

impl TcpConnect {
    pub fn from_event(e: &TcpConnectEvent) -> Result<TcpConnect, DecodeError> {
        let a = &e.addrs;
        Ok(TcpConnect {
            ts_ns: e.hdr.ts_ns,
            pid: e.hdr.pid,
            comm: comm(&e.hdr),
            local: std::net::SocketAddr::new(ip(a.family, &a.saddr), a.sport),
            remote: std::net::SocketAddr::new(ip(a.family, &a.daddr), a.dport),
            start_ns: e.start_ns,
            latency_ns: e.latency_ns,
            outcome: code("connect outcome", e.outcome, ConnectOutcome::from_u32)?,
            syn_retransmits: e.syn_retransmits,
        })
    }
}

/// An upstream connection that closed in a way that matters, its codes decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnClose {
    /// The proxy process (nginx worker) that owns the connection.
    pub hdr: EventHeader,
    pub sk: u64,
    /// Age of the outstanding request (first request byte → close); 0 for idle closes.
    pub request_age_ns: u64,
    /// Idle time before the outstanding request was sent (races), or until the close (idle).
    pub idle_ns: u64,
    pub class: CloseClass,
    pub how: CloseHow,
    /// Requests sent on the connection, including the outstanding one.
    pub seq: u32,
    pub fd: i32,
}

impl ConnClose {
    pub fn from_event(e: &ConnCloseEvent) -> Result<ConnClose, DecodeError> {
        Ok(ConnClose {
            hdr: e.hdr,
            sk: e.sk,
            request_age_ns: e.request_age_ns,
            idle_ns: e.idle_ns,
            class: code("close class", e.class, CloseClass::from_u32)?,
            how: code("close how", e.how, CloseHow::from_u32)?,
            seq: e.seq,
            fd: e.fd,
        })
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
            hdr: EventHeader { kind: Kind::Connect as u32, pid: 10, tid: 11, _pad: 0, ts_ns: 5, comm },
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
        let Event::Connect(c) = Event::decode(&connect_bytes(-11)).unwrap() else { panic!() };
        assert_eq!(c.comm, "nginx");
        assert_eq!((c.pid, c.tid, c.fd, c.errno, c.duration_ns), (10, 11, 7, 11, 1200));
        assert_eq!(c.target.to_string(), "unix:/tmp/a.sock");
        assert!(c.failed());
    }

    #[test]
    fn einprogress_is_not_a_failure() {
        let Event::Connect(c) = Event::decode(&connect_bytes(-115)).unwrap() else { panic!() };
        assert!(!c.failed());
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
