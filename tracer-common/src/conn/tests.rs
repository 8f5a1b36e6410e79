//! Event sequences through the state machine, with the records they must emit.

use super::*;
use crate::linux::{AF_INET, EAGAIN};
use crate::request::{close, how};

const SK: u64 = 0xffff_8880_0bad_c0de;
const FD: i32 = 17;
const MS: u64 = 1_000_000;
/// connect() returned at this time.
const T0: u64 = 1_000 * MS;

fn header() -> EventHeader {
    let mut comm = [0u8; 16];
    comm[..5].copy_from_slice(b"nginx");
    EventHeader { kind: Kind::Connect as u32, pid: 42, tid: 43, _pad: 0, ts_ns: T0, comm }
}

fn tcp() -> Conn {
    Conn::connected(&header(), FD, AF_INET)
}

fn unix() -> Conn {
    Conn::connected(&header(), FD, AF_UNIX)
}

fn none() -> Emit {
    Emit::default()
}

/// The transitions with an [`Emit`] as their sink: what each emitted.
trait Step {
    fn send(&mut self, now: u64, ret: i32) -> Emit;
    fn recv(&mut self, now: u64, ret: i32, flags: i32) -> Emit;
    fn local_close(&mut self, now: u64, established: impl FnOnce() -> bool) -> Emit;
}

impl Step for Conn {
    fn send(&mut self, now: u64, ret: i32) -> Emit {
        let mut e = Emit::default();
        self.on_send(SK, now, ret, &mut e);
        e
    }
    fn recv(&mut self, now: u64, ret: i32, flags: i32) -> Emit {
        let mut e = Emit::default();
        self.on_recv(SK, now, ret, flags, &mut e);
        e
    }
    fn local_close(&mut self, now: u64, established: impl FnOnce() -> bool) -> Emit {
        let mut e = Emit::default();
        self.on_local_close(SK, now, established, &mut e);
        e
    }
}

/// The request record expected of the test connection, with these fields.
#[allow(clippy::too_many_arguments)]
fn request(at: u64, start: u64, first: u64, last: u64, idle_before: u64, sent: u32, recv: u32, seq: u32, end: RequestEnd) -> RequestEvent {
    RequestEvent {
        hdr: EventHeader { kind: Kind::Request as u32, ts_ns: at, ..header() },
        sk: SK,
        start_ns: start,
        first_byte_ns: first,
        last_byte_ns: last,
        idle_before_ns: idle_before,
        bytes_sent: sent,
        bytes_recv: recv,
        seq,
        end: end as u32,
        fd: FD,
        family: AF_INET,
        _pad: 0,
    }
}

#[allow(clippy::too_many_arguments)]
fn closed(at: u64, class: CloseClass, how: CloseHow, age: u64, idle: u64, seq: u32, recv: u32, family: u16) -> ConnCloseEvent {
    ConnCloseEvent {
        hdr: EventHeader { kind: Kind::ConnClose as u32, ts_ns: at, ..header() },
        sk: SK,
        request_age_ns: age,
        idle_ns: idle,
        class: class as u32,
        how: how as u32,
        seq,
        bytes_recv: recv,
        fd: FD,
        family,
        _pad: 0,
    }
}

/// A fresh TCP connection that carried one request: sent at T0+1ms (100 bytes), response
/// bytes at +5ms (50) and +6ms (30).
fn after_one_response() -> Conn {
    let mut c = tcp();
    assert_eq!(c.send(T0 + MS, 100), none());
    assert_eq!(c.recv(T0 + 5 * MS, 50, 0), none());
    assert_eq!(c.recv(T0 + 6 * MS, 30, 0), none());
    assert_eq!(c.state, ConnState::Responding);
    c
}

#[test]
fn connect_results_worth_following() {
    assert!(follows_connect(0));
    assert!(follows_connect(-115)); // EINPROGRESS: a non-blocking TCP connect under way
    assert!(!follows_connect(-11)); // EAGAIN: unix listen queue full
    assert!(!follows_connect(-111));
    assert!(!follows_connect(-2));
}

#[test]
fn a_new_connection_is_idle_with_the_proxy_as_header() {
    let c = tcp();
    assert_eq!(c.state, ConnState::Idle);
    assert_eq!((c.seq, c.start_ns, c.fd, c.family), (0, T0, FD, AF_INET));
    assert_eq!(c.hdr.kind, Kind::Request as u32);
    assert_eq!((c.hdr.pid, c.hdr.tid), (42, 43));
}

#[test]
fn request_response_then_reuse_emits_the_request_with_its_times() {
    let mut c = after_one_response();
    assert_eq!((c.first_byte_ns, c.last_byte_ns, c.bytes_sent, c.bytes_recv, c.seq), (T0 + 5 * MS, T0 + 6 * MS, 100, 80, 1));
    // More request bytes while no response has come are the same request.
    let mut d = tcp();
    d.send(T0 + MS, 100);
    assert_eq!(d.send(T0 + 2 * MS, 20), none());
    assert_eq!((d.bytes_sent, d.seq, d.start_ns), (120, 1, T0 + MS));

    // The next request 1 s after the last byte: the first one is complete.
    let at = T0 + 1006 * MS;
    let e = c.send(at, 90);
    assert_eq!(e.request, Some(request(at, T0 + MS, T0 + 5 * MS, T0 + 6 * MS, 0, 100, 80, 1, RequestEnd::NextRequest)));
    assert_eq!(e.close, None);
    assert_eq!(c.state, ConnState::RequestSent);
    assert_eq!((c.seq, c.idle_before_ns, c.start_ns, c.bytes_sent, c.bytes_recv, c.first_byte_ns), (2, 1000 * MS, at, 90, 0, 0));
}

#[test]
fn eof_on_a_reused_connection_before_any_response_is_the_keepalive_race() {
    let mut c = after_one_response();
    let reuse = T0 + 1006 * MS;
    c.send(reuse, 90);
    let at = reuse + MS / 10;
    let e = c.recv(at, 0, 0);
    assert_eq!(e.request, None);
    assert_eq!(e.close, Some(closed(at, CloseClass::KeepaliveRace, CloseHow::Eof, MS / 10, 1000 * MS, 2, 0, AF_INET)));
    assert_eq!(c.state, ConnState::Closed);
}

#[test]
fn a_send_failing_on_a_reused_connection_ends_the_previous_request_and_is_the_race() {
    for (ret, code) in [(-EPIPE, how::SEND_FAILED), (-ECONNRESET, how::SEND_FAILED)] {
        let mut c = after_one_response();
        let at = T0 + 1006 * MS;
        let e = c.send(at, ret);
        // The previous response was complete: a request record, then the race.
        assert_eq!(e.request, Some(request(at, T0 + MS, T0 + 5 * MS, T0 + 6 * MS, 0, 100, 80, 1, RequestEnd::NextRequest)));
        let close = e.close.expect("a close record");
        assert_eq!(close, closed(at, CloseClass::KeepaliveRace, CloseHow::SendFailed, 0, 1000 * MS, 2, 0, AF_INET));
        assert_eq!(close.how, code);
        assert_eq!((c.state, c.bytes_sent), (ConnState::Closed, 0));
    }
}

#[test]
fn a_reset_during_the_first_request_is_a_premature_close() {
    let mut c = tcp();
    c.send(T0 + MS, 100);
    let at = T0 + 1500 * MS;
    let e = c.recv(at, -ECONNRESET, 0);
    assert_eq!(e, Emit { request: None, close: Some(closed(at, CloseClass::Premature, CloseHow::Reset, 1499 * MS, 0, 1, 0, AF_INET)) });
    assert_eq!(e.close.unwrap().class, close::PREMATURE);

    // EOF the same way (a worker killed mid-request), and a failed first send.
    let mut c = tcp();
    c.send(T0 + MS, 100);
    assert_eq!(c.recv(T0 + 2 * MS, 0, 0).close.unwrap().class, close::PREMATURE);
    let mut c = tcp();
    let e = c.send(T0 + MS, -EPIPE);
    assert_eq!(e.request, None);
    assert_eq!(e.close, Some(closed(T0 + MS, CloseClass::Premature, CloseHow::SendFailed, 0, 0, 1, 0, AF_INET)));
}

#[test]
fn eof_right_after_the_response_ends_it_without_a_close_record() {
    let mut c = after_one_response();
    let at = T0 + 6 * MS + IDLE_GAP_NS - 1;
    let e = c.recv(at, 0, 0);
    assert_eq!(e.request, Some(request(at, T0 + MS, T0 + 5 * MS, T0 + 6 * MS, 0, 100, 80, 1, RequestEnd::PeerClose)));
    assert_eq!(e.close, None);
    assert_eq!(c.state, ConnState::Closed);
}

#[test]
fn eof_after_an_idle_gap_is_an_idle_close_as_well() {
    let mut c = after_one_response();
    let at = T0 + 6 * MS + 4000 * MS;
    let e = c.recv(at, 0, 0);
    assert_eq!(e.request, Some(request(at, T0 + MS, T0 + 5 * MS, T0 + 6 * MS, 0, 100, 80, 1, RequestEnd::PeerClose)));
    assert_eq!(e.close, Some(closed(at, CloseClass::Idle, CloseHow::Eof, 0, 4000 * MS, 1, 80, AF_INET)));

    // A reset after the gap says so.
    let mut c = after_one_response();
    assert_eq!(c.recv(at, -ECONNRESET, 0).close.unwrap().how, how::RESET);
    // Exactly the gap counts as idle.
    let mut c = after_one_response();
    assert!(c.recv(T0 + 6 * MS + IDLE_GAP_NS, 0, 0).close.is_some());
}

#[test]
fn a_connection_closed_by_the_peer_before_any_request_is_an_idle_close() {
    let mut c = tcp();
    let at = T0 + 60_000 * MS;
    let e = c.recv(at, 0, 0);
    assert_eq!(e, Emit { request: None, close: Some(closed(at, CloseClass::Idle, CloseHow::Eof, 0, 60_000 * MS, 0, 0, AF_INET)) });
}

#[test]
fn the_proxy_closing_with_a_request_outstanding_is_a_proxy_abort() {
    let mut c = after_one_response();
    let reuse = T0 + 506 * MS;
    c.send(reuse, 90);
    let at = reuse + 2000 * MS;
    let mut asked = false;
    let e = c.local_close(at, || {
        asked = true;
        true
    });
    assert!(!asked, "the socket is read only for a connection that never carried a request");
    assert_eq!(e, Emit { request: None, close: Some(closed(at, CloseClass::ProxyAbort, CloseHow::Local, 2000 * MS, 500 * MS, 2, 0, AF_INET)) });
    assert_eq!(e.close.unwrap().class, close::PROXY_ABORT);
    assert_eq!(c.state, ConnState::Closed);
}

#[test]
fn the_proxy_closing_while_the_response_arrives_ends_the_request() {
    let mut c = after_one_response();
    let at = T0 + 7 * MS;
    let e = c.local_close(at, || unreachable!());
    assert_eq!(e, Emit { request: Some(request(at, T0 + MS, T0 + 5 * MS, T0 + 6 * MS, 0, 100, 80, 1, RequestEnd::LocalClose)), close: None });
}

#[test]
fn a_tcp_connection_closed_unused_once_established_was_given_up() {
    let at = T0 + 3 * MS;
    let mut c = tcp();
    let e = c.local_close(at, || true);
    assert_eq!(e, Emit { request: None, close: Some(closed(at, CloseClass::Unused, CloseHow::Local, 0, 3 * MS, 0, 0, AF_INET)) });
    // Still in SYN_SENT: tcp_set_state reports it as abandoned, nothing here.
    let mut c = tcp();
    assert_eq!(c.local_close(at, || false), none());
    // A unix connection has no handshake: never asked, nothing emitted.
    let mut c = unix();
    assert_eq!(c.local_close(at, || unreachable!()), none());
    // Idle after a complete exchange and an idle peer close: nothing more at close().
    let mut c = after_one_response();
    c.recv(T0 + 7 * MS, 0, 0);
    assert_eq!(c.local_close(at + 10 * MS, || unreachable!()), none());
}

#[test]
fn peeks_change_nothing() {
    let mut c = tcp();
    c.send(T0 + MS, 100);
    let before = c;
    assert_eq!(c.recv(T0 + 2 * MS, 10, MSG_PEEK), none());
    assert_eq!(c, before);
    let mut c = after_one_response();
    let before = c;
    assert_eq!(c.recv(T0 + 9 * MS, 10, MSG_PEEK | 0x40), none());
    assert_eq!(c, before);
}

#[test]
fn sends_and_receives_that_moved_nothing_change_nothing() {
    let mut c = after_one_response();
    let before = c;
    for ret in [-EAGAIN, -4 /* EINTR */, -ENOBUFS] {
        assert_eq!(c.send(T0 + 9 * MS, ret), none());
        assert_eq!(c.recv(T0 + 9 * MS, ret, 0), none());
    }
    assert_eq!(c, before);
    // Unsolicited bytes on a connection that has no request are not a response.
    let mut c = tcp();
    assert_eq!(c.recv(T0 + MS, 10, 0), none());
    assert_eq!((c.state, c.bytes_recv), (ConnState::Idle, 0));
}
const ENOBUFS: i32 = 105;

#[test]
fn nothing_happens_after_closed() {
    let mut c = after_one_response();
    c.recv(T0 + 7 * MS, 0, 0);
    assert_eq!(c.state, ConnState::Closed);
    let before = c;
    assert_eq!(c.send(T0 + 8 * MS, 100), none());
    assert_eq!(c.send(T0 + 8 * MS, -EPIPE), none());
    assert_eq!(c.recv(T0 + 9 * MS, 10, 0), none());
    assert_eq!(c.recv(T0 + 9 * MS, 0, 0), none());
    assert_eq!(c.recv(T0 + 9 * MS, -ECONNRESET, 0), none());
    assert_eq!(c, before);
    assert_eq!(c.local_close(T0 + 10 * MS, || unreachable!()), none());
    // After the proxy's own close too.
    let mut c = tcp();
    c.local_close(T0 + MS, || false);
    assert_eq!(c.send(T0 + 2 * MS, 100), none());
}

#[test]
fn sequence_numbers_count_requests_and_idle_time_is_measured_from_the_last_byte() {
    let mut c = tcp();
    let mut t = T0;
    for seq in 1..=4u32 {
        t += 100 * MS;
        let e = c.send(t, 10);
        if seq > 1 {
            let r = e.request.expect("previous request");
            assert_eq!((r.seq, r.end), (seq - 1, RequestEnd::NextRequest as u32));
            assert_eq!(c.idle_before_ns, 100 * MS - 2 * MS);
        }
        assert_eq!(c.seq, seq);
        c.recv(t + MS, 5, 0);
        c.recv(t + 2 * MS, 5, 0);
    }
}

#[test]
fn a_reset_before_the_first_request_is_reset_unused_and_only_then() {
    let at = T0 + 2 * MS;
    let reset = |c: &mut Conn, now: u64| {
        let mut e = Emit::default();
        c.on_reset(SK, now, &mut e);
        e
    };
    // tcp_abort_on_overflow: the listener resets the connection right after the handshake.
    let mut c = tcp();
    assert_eq!(
        reset(&mut c, at),
        Emit { request: None, close: Some(closed(at, CloseClass::ResetUnused, CloseHow::Reset, 0, 2 * MS, 0, 0, AF_INET)) }
    );
    assert_eq!(c.state, ConnState::Closed);
    assert_eq!(c.local_close(at + MS, || unreachable!()), none(), "nginx's close() after it adds nothing");
    // A connection in use: its send/recv report the reset, not this hook.
    let mut c = tcp();
    c.send(T0 + MS, 100);
    assert_eq!(reset(&mut c, at), none());
    let mut c = after_one_response();
    assert_eq!(reset(&mut c, T0 + 8 * MS), none());
    // A unix connection never gets a TCP reset.
    let mut c = unix();
    assert_eq!(reset(&mut c, at), none());
}
