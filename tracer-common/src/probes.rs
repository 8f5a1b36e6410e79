//! The attach table: every kernel program, the hook it goes on and what is lost without it. The
//! loader attaches from it (`tracer/src/kernel/load.rs`) and the README's "Kernel hooks" table is
//! rendered from it (a unit test keeps the two equal).
//!
//! `since` is the oldest mainline kernel whose hook has the record layout (classic tracepoints)
//! or arguments (raw tracepoints) the program reads. Where it was checked against the kernel's
//! history, the entry says how; the others are marked unverified. Independently of the hooks,
//! the object needs ring buffers (5.8) and raw tracepoint programs need 4.17; on this project's
//! machines (6.18) every hook is present. The loader also compares each field a classic program
//! reads with this kernel's format file, so an older record layout leaves that program
//! unattached (and says why) instead of reading the wrong bytes.

use crate::offsets::{self, Field};

/// How a program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookKind {
    /// A classic (perf-event) tracepoint: the program reads the record the kernel fills.
    Tracepoint,
    /// A raw tracepoint: the program gets the tracepoint's arguments as passed, no record is
    /// filled (cheaper on hooks that fire on every send, receive and TCP state change).
    RawTracepoint,
    /// A uprobe on a function of a user-space library: `category` names the library as the
    /// loader looks for it in the traced processes' `/proc/PID/maps` (`libssl`), `name` is the
    /// symbol. The loader attaches it to every such library it finds at start.
    Uprobe,
}

impl HookKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            HookKind::Tracepoint => "tracepoint",
            HookKind::RawTracepoint => "raw tracepoint",
            HookKind::Uprobe => "uprobe",
        }
    }
}

/// The commands' three groups of programs (`tracer/src/kernel/load.rs` keeps a const per group).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    /// connect() results and listen() backlogs.
    Connect,
    /// TCP connect outcome/latency, SYN retransmits, listener drops, accept-queue wait.
    Tcp,
    /// Upstream request state and the process events that explain a cut request.
    Requests,
}

/// A kernel program and the hook it goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeSpec {
    /// The program's name in the object (its function in tracer-ebpf/src/probes/).
    pub program: &'static str,
    /// Tracepoint category (e.g. `syscalls`, `sock`); for a uprobe, the library.
    pub category: &'static str,
    /// Tracepoint name; for a uprobe, the symbol.
    pub name: &'static str,
    pub kind: HookKind,
    /// Without it the command cannot do its job at all: attaching fails.
    pub required: bool,
    /// Oldest kernel with the hook as the program reads it.
    pub since: &'static str,
    /// Whether `since` was checked against the kernel's history (see the entry's comment).
    pub since_verified: bool,
    /// What the user loses if this one does not attach.
    pub feature: &'static str,
    /// The record fields a classic tracepoint program reads (checked against the kernel's format
    /// file before attaching); empty for raw tracepoints.
    pub fields: &'static [Field],
    pub group: Group,
}

impl ProbeSpec {
    /// `category:name`.
    pub fn tracepoint(&self) -> (&'static str, &'static str) {
        (self.category, self.name)
    }
}

use offsets::{
    kfree_skb, sched_process_exit, sched_process_fork, signal_generate, sys_enter_close, sys_enter_connect, sys_enter_listen, sys_enter_writev,
    sys_exit, tcp_destroy_sock, tcp_receive_reset, tcp_retransmit_skb,
};
use Group::{Connect, Requests, Tcp};
use HookKind::{RawTracepoint, Tracepoint, Uprobe};

// Syscall tracepoints (CONFIG_FTRACE_SYSCALLS) date from 2.6.33: from memory, unverified.
const SYSCALLS_SINCE: &str = "2.6.33";
// uprobes came in 3.5; aya attaches them through the perf `uprobe` PMU (4.17) when present, else
// through tracefs `uprobe_events`: from memory, unverified.
const UPROBE_SINCE: &str = "4.17";
const TLS_STATUS: &str = "5xx sent over TLS (HTTP/1.x and HTTP/2): the error log is used instead";

/// Every program, grouped by [`Group`] (contiguous: [`group`] slices the table). A program
/// listed twice is attached to two tracepoints.
pub const ALL: &[ProbeSpec] = &[
    ProbeSpec {
        program: "connect_enter",
        category: "syscalls",
        name: "sys_enter_connect",
        kind: Tracepoint,
        required: true,
        since: SYSCALLS_SINCE,
        since_verified: false,
        feature: "connect() tracing",
        fields: &[sys_enter_connect::FD, sys_enter_connect::USERVADDR, sys_enter_connect::ADDRLEN],
        group: Connect,
    },
    ProbeSpec {
        program: "connect_exit",
        category: "syscalls",
        name: "sys_exit_connect",
        kind: Tracepoint,
        required: true,
        since: SYSCALLS_SINCE,
        since_verified: false,
        feature: "connect() tracing",
        fields: &[sys_exit::RET],
        group: Connect,
    },
    ProbeSpec {
        program: "listen_enter",
        category: "syscalls",
        name: "sys_enter_listen",
        kind: Tracepoint,
        required: false,
        since: SYSCALLS_SINCE,
        since_verified: false,
        feature: "the backlog passed to listen() (derived from sock_diag instead)",
        fields: &[sys_enter_listen::FD, sys_enter_listen::BACKLOG],
        group: Connect,
    },
    // inet_sock_set_state replaced tcp_set_state in commit 563e0bb0dc74 (Dec 2017, 4.16 merge
    // window): the commit was found, the release it landed in was not checked.
    ProbeSpec {
        program: "tcp_set_state",
        category: "sock",
        name: "inet_sock_set_state",
        kind: RawTracepoint,
        required: false,
        since: "4.16",
        since_verified: false,
        feature: "TCP connect latency/outcome and accept-queue wait",
        fields: &[],
        group: Tcp,
    },
    // The tracepoint came with commit e086101b150a (Oct 2017, so 4.15); its `state` field, which
    // the program reads, is believed to be from 4.16: unverified.
    ProbeSpec {
        program: "tcp_retransmit",
        category: "tcp",
        name: "tcp_retransmit_skb",
        kind: Tracepoint,
        required: false,
        since: "4.16",
        since_verified: false,
        feature: "SYN retransmit counts",
        fields: &[tcp_retransmit_skb::SKADDR, tcp_retransmit_skb::STATE],
        group: Tcp,
    },
    // Same series as tcp_retransmit_skb (4.15): unverified.
    ProbeSpec {
        program: "tcp_receive_reset",
        category: "tcp",
        name: "tcp_receive_reset",
        kind: Tracepoint,
        required: false,
        since: "4.15",
        since_verified: false,
        feature: "refused (RST) TCP connects; connections reset right after the handshake (tcp_abort_on_overflow)",
        fields: &[tcp_receive_reset::SKADDR],
        group: Tcp,
    },
    // `reason` came in 5.17, `rx_sk` (the listener) with commit c53795d48ee8 ("net: add rx_sk
    // to trace_kfree_skb"), applied to net-next in June 2024 after 6.10-rc: 6.11.
    ProbeSpec {
        program: "kfree_skb",
        category: "skb",
        name: "kfree_skb",
        kind: Tracepoint,
        required: false,
        since: "6.11",
        since_verified: true,
        feature: "final-ACK drops at full accept queues",
        fields: &[kfree_skb::RX_SK, kfree_skb::REASON],
        group: Tcp,
    },
    ProbeSpec {
        program: "accept_exit",
        category: "syscalls",
        name: "sys_exit_accept4",
        kind: Tracepoint,
        required: false,
        since: SYSCALLS_SINCE,
        since_verified: false,
        feature: "accept-queue wait (accept4)",
        fields: &[sys_exit::RET],
        group: Tcp,
    },
    ProbeSpec {
        program: "accept_exit",
        category: "syscalls",
        name: "sys_exit_accept",
        kind: Tracepoint,
        required: false,
        since: SYSCALLS_SINCE,
        since_verified: false,
        feature: "accept-queue wait (accept)",
        fields: &[sys_exit::RET],
        group: Tcp,
    },
    // "sock: add tracepoint for send recv length" (v6, January 2023, reviewed for the 6.3 merge
    // window); absent on 6.1 (ENOENT, kernel-notes.md).
    ProbeSpec {
        program: "sock_send",
        category: "sock",
        name: "sock_send_length",
        kind: RawTracepoint,
        required: false,
        since: "6.3",
        since_verified: true,
        feature: "upstream request tracking",
        fields: &[],
        group: Requests,
    },
    ProbeSpec {
        program: "sock_recv",
        category: "sock",
        name: "sock_recv_length",
        kind: RawTracepoint,
        required: false,
        since: "6.3",
        since_verified: true,
        feature: "upstream request tracking",
        fields: &[],
        group: Requests,
    },
    // nginx writes every plaintext HTTP/1.x response header with writev() (its write() calls are
    // log lines): hooking write()/send() too would only add a program run to every other write.
    ProbeSpec {
        program: "status_line",
        category: "syscalls",
        name: "sys_enter_writev",
        kind: Tracepoint,
        required: false,
        since: SYSCALLS_SINCE,
        since_verified: false,
        feature: "5xx status lines seen in the kernel (the error log is used instead)",
        fields: &[sys_enter_writev::FD, sys_enter_writev::VEC],
        group: Requests,
    },
    // TLS (and so HTTP/2, which browsers only speak over TLS) hides the status in writev(): read
    // the plaintext nginx hands to OpenSSL. SSL_write and SSL_write_ex both call the library's
    // internal write (neither calls the other), so one response is seen once. SSL_sendfile
    // (kTLS) sends file bodies, never a header: not hooked.
    ProbeSpec {
        program: "tls_status",
        category: "libssl",
        name: "SSL_write",
        kind: Uprobe,
        required: false,
        since: UPROBE_SINCE,
        since_verified: false,
        feature: TLS_STATUS,
        fields: &[],
        group: Requests,
    },
    ProbeSpec {
        program: "tls_status",
        category: "libssl",
        name: "SSL_write_ex",
        kind: Uprobe,
        required: false,
        since: UPROBE_SINCE,
        since_verified: false,
        feature: TLS_STATUS,
        fields: &[],
        group: Requests,
    },
    ProbeSpec {
        program: "close_enter",
        category: "syscalls",
        name: "sys_enter_close",
        kind: Tracepoint,
        required: false,
        since: SYSCALLS_SINCE,
        since_verified: false,
        feature: "proxy-side closes of upstream connections",
        fields: &[sys_enter_close::FD],
        group: Requests,
    },
    // Same series as tcp_retransmit_skb (4.15): unverified.
    ProbeSpec {
        program: "tcp_destroy",
        category: "tcp",
        name: "tcp_destroy_sock",
        kind: Tracepoint,
        required: false,
        since: "4.15",
        since_verified: false,
        feature: "cleanup of vanished TCP connections",
        fields: &[tcp_destroy_sock::SKADDR],
        group: Requests,
    },
    // The `group` and `result` fields date from the 3.x series: unverified.
    ProbeSpec {
        program: "signal_generate",
        category: "signal",
        name: "signal_generate",
        kind: Tracepoint,
        required: false,
        since: "3.3",
        since_verified: false,
        feature: "who killed a worker (signals)",
        fields: &[signal_generate::SIG, signal_generate::CODE, signal_generate::COMM, signal_generate::PID, signal_generate::RESULT],
        group: Requests,
    },
    // `group_dead` came with "sched/tracepoints: Move and extend the sched_process_exit()
    // tracepoint" (3e816361e94a), merged into tip sched/core on 2025-04-04, after 6.15's merge
    // window: 6.16. Refused on 6.1 (kernel-notes.md).
    ProbeSpec {
        program: "process_exit",
        category: "sched",
        name: "sched_process_exit",
        kind: Tracepoint,
        required: false,
        since: "6.16",
        since_verified: true,
        feature: "worker exits",
        fields: &[sched_process_exit::GROUP_DEAD],
        group: Requests,
    },
    // The comms became `__data_loc` strings (moving child_pid to offset 20) with "tracing/sched:
    // Use __string() instead of fixed lengths for task->comm", in tracing's for-next in May 2025
    // (so 6.16); the release was not checked: unverified.
    ProbeSpec {
        program: "process_fork",
        category: "sched",
        name: "sched_process_fork",
        kind: Tracepoint,
        required: false,
        since: "6.16",
        since_verified: false,
        feature: "workers forked by app-server masters",
        fields: &[sched_process_fork::CHILD_PID],
        group: Requests,
    },
];

/// The programs of one group: a contiguous part of [`ALL`].
pub const fn group(g: Group) -> &'static [ProbeSpec] {
    let mut start = 0;
    while start < ALL.len() && ALL[start].group as u8 != g as u8 {
        start += 1;
    }
    let mut end = start;
    while end < ALL.len() && ALL[end].group as u8 == g as u8 {
        end += 1;
    }
    ALL.split_at(end).0.split_at(start).1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_contiguous_and_cover_the_table() {
        let groups = [Group::Connect, Group::Tcp, Group::Requests];
        assert_eq!(groups.iter().map(|g| group(*g).len()).sum::<usize>(), ALL.len());
        for g in groups {
            assert!(!group(g).is_empty());
            assert!(group(g).iter().all(|p| p.group == g));
        }
    }

    #[test]
    fn raw_tracepoints_read_no_record_and_classic_ones_say_what_they_read() {
        for p in ALL {
            assert_eq!(p.kind != HookKind::Tracepoint, p.fields.is_empty(), "{}", p.program);
            assert!(!p.since.is_empty() && !p.feature.is_empty());
        }
        // Every hook once.
        for (i, p) in ALL.iter().enumerate() {
            assert!(ALL[i + 1..].iter().all(|q| q.tracepoint() != p.tracepoint()), "{}:{} twice", p.category, p.name);
        }
    }
}
