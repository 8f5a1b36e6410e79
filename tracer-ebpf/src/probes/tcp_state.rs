//! TCP state changes, from `sock:inet_sock_set_state` as a raw tracepoint.
//!
//! Why: it is where a connect's fate shows without kprobes. CLOSE→SYN_SENT runs inside the
//! caller's connect(), so the process filter applies there and the caller is remembered per
//! socket (and the socket handed to `connect` so its exit need not walk the fd table); leaving
//! SYN_SENT emits one event with the latency and the outcome (established, refused after a RST,
//! abandoned). A child socket going SYN_RECV→ESTABLISHED is queued for accept(): `accept` reads
//! when, for the accept-queue wait. As a raw tracepoint it gets (sk, oldstate, newstate) as
//! passed: the classic tracepoint would fill a record with both address pairs on every TCP state
//! change of the machine, where only three transitions matter here.
//!
//! When absent: no TCP connect latency/outcome (connect() results, which nginx's non-blocking
//! connects make EINPROGRESS, are still reported) and no accept-queue wait; connect exit finds
//! the socket through the fd table instead.
//!
//! Owns `CONNECTING` (connects in SYN_SENT) and `ACCEPT_QUEUE`; `syn_sent` annotates the former
//! through [`note_syn_retransmit`] / [`note_reset`], `accept` takes from the latter with
//! [`take_queued`].

use aya_ebpf::{
    macros::{map, raw_tracepoint},
    maps::LruHashMap,
    programs::RawTracePointContext,
};
use tracer_common::{
    linux::{TCP_CLOSE, TCP_ESTABLISHED, TCP_SYN_RECV, TCP_SYN_SENT},
    offsets::inet_sock_set_state_args as args,
    tcp::ConnectOutcome,
    Counter, EventHeader, Kind, TcpAddrs, TcpConnectEvent, CONN_MAP_ENTRIES,
};

use crate::layout::sock_addrs;
use crate::maps::{count, header, now_ns, pid_tgid, preamble, submit_flags, traced, EVENTS, LRU_PER_CPU};

/// A connect in SYN_SENT.
#[repr(C)]
pub struct Connecting {
    hdr: EventHeader,
    start_ns: u64,
    syn_retransmits: u32,
    rst: u32,
}

#[map]
static CONNECTING: LruHashMap<u64, Connecting> = LruHashMap::with_max_entries(CONN_MAP_ENTRIES, LRU_PER_CPU);

/// An established connection waiting in its listener's accept queue.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Queued {
    pub since_ns: u64,
    pub addrs: TcpAddrs,
}

/// Queued (established, not yet accepted) connections by their struct sock.
#[map]
static ACCEPT_QUEUE: LruHashMap<u64, Queued> = LruHashMap::with_max_entries(CONN_MAP_ENTRIES, LRU_PER_CPU);

/// A SYN of `sk` was retransmitted (in SYN_SENT): its previous SYN got no answer.
#[inline(always)]
pub fn note_syn_retransmit(sk: u64) {
    if let Some(c) = CONNECTING.get_ptr_mut(&sk) {
        unsafe { (*c).syn_retransmits += 1 };
    }
}

/// `sk` received a RST: if it is still connecting, the connect was refused.
#[inline(always)]
pub fn note_reset(sk: u64) {
    if let Some(c) = CONNECTING.get_ptr_mut(&sk) {
        unsafe { (*c).rst = 1 };
    }
}

/// `sk` was accept()ed: when it was queued and its addresses, if it was seen being queued.
#[inline(always)]
pub fn take_queued(sk: u64) -> Option<Queued> {
    let q = unsafe { *ACCEPT_QUEUE.get_ptr(&sk)? };
    let _ = ACCEPT_QUEUE.remove(&sk);
    Some(q)
}

#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn tcp_set_state(ctx: RawTracePointContext) -> u32 {
    preamble!();
    let sk = ctx.arg::<u64>(args::SK as usize);
    let (old, new) = (ctx.arg::<u64>(args::OLDSTATE as usize) as i32, ctx.arg::<u64>(args::NEWSTATE as usize) as i32);
    match (old, new) {
        (TCP_CLOSE, TCP_SYN_SENT) => {
            // Inside connect(): the caller is the current task.
            let id = pid_tgid();
            if !traced(id) {
                return 0;
            }
            super::connect::note_tcp_socket(id, sk);
            let c = Connecting { hdr: header(Kind::TcpConnect, id), start_ns: now_ns(), syn_retransmits: 0, rst: 0 };
            if CONNECTING.insert(&sk, &c, 0).is_err() {
                count(Counter::ConnMapFull);
            }
        }
        (TCP_SYN_SENT, _) => {
            let Some(c) = CONNECTING.get_ptr(&sk) else { return 0 };
            let a = sock_addrs(sk);
            let now = now_ns();
            match EVENTS.reserve::<TcpConnectEvent>(0) {
                Some(mut entry) => {
                    let e = entry.as_mut_ptr();
                    unsafe {
                        (*e).hdr = (*c).hdr;
                        (*e).hdr.ts_ns = now;
                        (*e).addrs = a;
                        (*e).skaddr = sk;
                        (*e).start_ns = (*c).start_ns;
                        (*e).latency_ns = now.saturating_sub((*c).start_ns);
                        (*e).outcome = if new == TCP_ESTABLISHED {
                            ConnectOutcome::Established
                        } else if (*c).rst != 0 {
                            ConnectOutcome::Refused
                        } else {
                            ConnectOutcome::Abandoned
                        } as u32;
                        (*e).syn_retransmits = (*c).syn_retransmits;
                    }
                    entry.submit(submit_flags());
                }
                None => count(Counter::RingbufFull),
            }
            let _ = CONNECTING.remove(&sk);
        }
        (TCP_SYN_RECV, TCP_ESTABLISHED) => {
            // A child socket completed the handshake and is now in its listener's accept queue.
            let q = Queued { since_ns: now_ns(), addrs: sock_addrs(sk) };
            if ACCEPT_QUEUE.insert(&sk, &q, 0).is_err() {
                count(Counter::ConnMapFull);
            }
        }
        _ => {}
    }
    0
}
