//! Checks the host can run us, loads the kernel programs with the filter, attaches each
//! tracepoint and records what attached and what did not (a missing tracepoint disables one
//! feature, not the tool).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use aya::{maps::HashMap as BpfHashMap, programs::Program, Ebpf, EbpfLoader};
use serde::Serialize;
use tracer_common::filter::{FilterConfig, BY_CGROUP, BY_COMM, BY_PID};
use tracer_common::kernel_layout::KernelLayout;

/// A kernel program and the tracepoint it goes on.
pub struct ProbeSpec {
    pub program: &'static str,
    pub category: &'static str,
    pub name: &'static str,
    /// What the user loses if this one does not attach.
    pub feature: &'static str,
    /// Without it the command cannot do its job at all.
    pub required: bool,
}

pub const CONNECT_PROBES: &[ProbeSpec] = &[
    ProbeSpec { program: "connect_enter", category: "syscalls", name: "sys_enter_connect", feature: "connect() tracing", required: true },
    ProbeSpec { program: "connect_exit", category: "syscalls", name: "sys_exit_connect", feature: "connect() tracing", required: true },
    ProbeSpec {
        program: "listen_enter",
        category: "syscalls",
        name: "sys_enter_listen",
        feature: "the backlog passed to listen() (derived from sock_diag instead)",
        required: false,
    },
];

/// TCP connect outcome/latency, SYN retransmits, listener drops and accept-queue wait.
/// A program listed twice is attached to two tracepoints.
pub const TCP_PROBES: &[ProbeSpec] = &[
    // tcp_set_state, sock_send and sock_recv are raw tracepoints (arguments as passed, no record).
    ProbeSpec {
        program: "tcp_set_state",
        category: "sock",
        name: "inet_sock_set_state",
        feature: "TCP connect latency/outcome and accept-queue wait",
        required: false,
    },
    ProbeSpec { program: "tcp_retransmit", category: "tcp", name: "tcp_retransmit_skb", feature: "SYN retransmit counts", required: false },
    ProbeSpec { program: "tcp_receive_reset", category: "tcp", name: "tcp_receive_reset", feature: "refused (RST) TCP connects", required: false },
    ProbeSpec { program: "kfree_skb", category: "skb", name: "kfree_skb", feature: "final-ACK drops at full accept queues", required: false },
    ProbeSpec { program: "accept_exit", category: "syscalls", name: "sys_exit_accept4", feature: "accept-queue wait (accept4)", required: false },
    ProbeSpec { program: "accept_exit", category: "syscalls", name: "sys_exit_accept", feature: "accept-queue wait (accept)", required: false },
];

/// Upstream request state (send/recv/close of connect()ed sockets) and the process events that
/// explain a cut request.
pub const REQUEST_PROBES: &[ProbeSpec] = &[
    ProbeSpec { program: "sock_send", category: "sock", name: "sock_send_length", feature: "upstream request tracking", required: false },
    ProbeSpec { program: "sock_recv", category: "sock", name: "sock_recv_length", feature: "upstream request tracking", required: false },
    // nginx writes every plaintext HTTP/1.x response header with writev() (its write() calls are
    // log lines): hooking write()/send() too would only add a program run to every other write.
    ProbeSpec {
        program: "status_line",
        category: "syscalls",
        name: "sys_enter_writev",
        feature: "5xx status lines seen in the kernel (the error log is used instead)",
        required: false,
    },
    ProbeSpec {
        program: "close_enter",
        category: "syscalls",
        name: "sys_enter_close",
        feature: "proxy-side closes of upstream connections",
        required: false,
    },
    ProbeSpec { program: "tcp_destroy", category: "tcp", name: "tcp_destroy_sock", feature: "cleanup of vanished TCP connections", required: false },
    ProbeSpec { program: "signal_generate", category: "signal", name: "signal_generate", feature: "who killed a worker (signals)", required: false },
    ProbeSpec { program: "process_exit", category: "sched", name: "sched_process_exit", feature: "worker exits", required: false },
    ProbeSpec {
        program: "process_fork",
        category: "sched",
        name: "sched_process_fork",
        feature: "workers forked by app-server masters",
        required: false,
    },
];

/// The numeric value of an enum symbol in a tracepoint's print format, e.g.
/// `{ 40, "TCP_LISTEN_OVERFLOW" }` in skb/kfree_skb: enum values differ between kernels.
pub fn tracepoint_symbol(category: &str, name: &str, symbol: &str) -> Option<u32> {
    let format = [TRACEFS, "/sys/kernel/debug/tracing"]
        .iter()
        .find_map(|root| std::fs::read_to_string(format!("{root}/events/{category}/{name}/format")).ok())?;
    parse_symbol(&format, symbol)
}

fn parse_symbol(format: &str, symbol: &str) -> Option<u32> {
    let needle = format!("\"{symbol}\" }}");
    let end = format.find(&needle)?;
    let start = format[..end].rfind('{')?;
    format[start + 1..end].trim().trim_end_matches(',').trim().parse().ok()
}

#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct ProbeStatus {
    pub program: String,
    pub tracepoint: String,
    pub attached: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Which processes to trace (checked first in every program, in the kernel).
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Tgids (callers expand a process to its children).
    pub pids: Vec<u32>,
    pub comm: Option<String>,
    pub cgroup_id: Option<u64>,
}

impl Filter {
    fn config(&self) -> anyhow::Result<FilterConfig> {
        let mut c = FilterConfig::ALL;
        if !self.pids.is_empty() {
            c.flags |= BY_PID;
        }
        if let Some(comm) = &self.comm {
            // The kernel keeps the first 15 bytes of a name; match what it keeps.
            let b = comm.as_bytes();
            if b.is_empty() {
                bail!("--comm: empty process name");
            }
            let n = b.len().min(15);
            c.comm[..n].copy_from_slice(&b[..n]);
            c.flags |= BY_COMM;
        }
        if let Some(id) = self.cgroup_id {
            c.cgroup_id = id;
            c.flags |= BY_CGROUP;
        }
        Ok(c)
    }
}

pub struct Loaded {
    pub ebpf: Ebpf,
    /// Kernel-side log records (aya-log); `flush` it now and then.
    pub logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    pub probes: Vec<ProbeStatus>,
    pub attach_time: Duration,
}

/// CAP_BPF (39) + CAP_PERFMON (38), or CAP_SYS_ADMIN (21), in the effective set.
fn has_bpf_caps() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return false };
    let Some(eff) = status.lines().find_map(|l| l.strip_prefix("CapEff:")) else { return false };
    let Ok(eff) = u64::from_str_radix(eff.trim(), 16) else { return false };
    let bit = |n: u32| eff & (1u64 << n) != 0;
    bit(21) || (bit(39) && bit(38))
}

const TRACEFS: &str = "/sys/kernel/tracing";

/// Refuse early, with one line the user can act on, when the host cannot load us.
pub fn preflight() -> anyhow::Result<()> {
    if !has_bpf_caps() {
        bail!("needs root (CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN) to load eBPF programs: run it with sudo");
    }
    let has_events = |p: &str| Path::new(p).join("events").is_dir();
    if !has_events(TRACEFS) && !has_events("/sys/kernel/debug/tracing") {
        let c = std::ffi::CString::new(TRACEFS).expect("no NUL");
        let fs = std::ffi::CString::new("tracefs").expect("no NUL");
        // SAFETY: valid NUL-terminated strings, no data argument.
        let rc = unsafe { libc::mount(fs.as_ptr(), c.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) };
        if rc != 0 || !has_events(TRACEFS) {
            bail!("tracefs is not mounted and mounting it failed ({}): run `mount -t tracefs tracefs {TRACEFS}`", std::io::Error::last_os_error());
        }
        log::info!("mounted tracefs at {TRACEFS}");
    }
    Ok(())
}

/// The per-connection LRU maps `--map-entries` resizes.
pub const CONNECTION_MAPS: &[&str] = &["PENDING_CONNECT", "CONNECTING", "ACCEPT_QUEUE", "CONNS", "SK_BY_FD"];

/// Load the object, set the filter, attach `probes`.
pub fn load(filter: &Filter, probes: &[&ProbeSpec], ringbuf_bytes: u32, map_entries: Option<u32>) -> anyhow::Result<Loaded> {
    let start = Instant::now();
    let config = filter.config()?;
    let overflow_reason = tracepoint_symbol("skb", "kfree_skb", "TCP_LISTEN_OVERFLOW").unwrap_or(0);
    let no_socket_reason = tracepoint_symbol("skb", "kfree_skb", "NO_SOCKET").unwrap_or(0);
    let layout = kernel_layout();
    // A bench knob like TRACER_SKIP_PROGRAMS: attach everything, run nothing (see HOOKS_ONLY).
    let hooks_only = u8::from(std::env::var("TRACER_HOOKS_ONLY").is_ok_and(|v| v == "1"));
    if hooks_only != 0 {
        log::warn!("TRACER_HOOKS_ONLY=1: every kernel program returns at once; nothing will be traced");
    }
    let mut loader = EbpfLoader::new();
    if let Some(n) = map_entries {
        for m in CONNECTION_MAPS {
            let factor = if *m == "SK_BY_FD" { tracer_common::SK_BY_FD_FACTOR } else { 1 };
            loader.map_max_entries(m, n.saturating_mul(factor));
        }
    }
    let mut ebpf = loader
        .override_global("FILTER", &config, true)
        .override_global("LISTEN_OVERFLOW_REASON", &overflow_reason, true)
        .override_global("NO_SOCKET_REASON", &no_socket_reason, true)
        .override_global("WAKEUP_BYTES", &(ringbuf_bytes as u64 / 4), true)
        .override_global("LAYOUT", &layout, true)
        .override_global("HOOKS_ONLY", &hooks_only, true)
        .map_max_entries("EVENTS", ringbuf_bytes)
        .load(aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer")))
        .context("loading the eBPF object (is this kernel ≥ 5.8 with BTF and ring buffers?)")?;
    // Kept alive for the programs' lifetime: dropping it closes the log map they reference.
    let logger = aya_log::EbpfLogger::init(&mut ebpf).map_err(|e| log::debug!("aya-log not initialised: {e}")).ok();
    if !filter.pids.is_empty() {
        let mut m: BpfHashMap<_, u32, u8> = BpfHashMap::try_from(ebpf.map_mut("PID_FILTER").context("map PID_FILTER missing")?)?;
        for &pid in &filter.pids {
            m.insert(pid, 1, 0).with_context(|| format!("adding pid {pid} to the filter"))?;
        }
    }
    let mut statuses = Vec::new();
    let mut loaded = std::collections::HashSet::new();
    // For measuring what each hook costs (the bench), or working around a misbehaving one:
    // programs named here are not attached, and the stats say so.
    let skip = std::env::var("TRACER_SKIP_PROGRAMS").unwrap_or_default();
    let skipped = |name: &str| skip.split(',').any(|s| s.trim() == name);
    for p in probes {
        let tracepoint = format!("{}:{}", p.category, p.name);
        let result = if skipped(p.program) {
            Err(anyhow::anyhow!("skipped (TRACER_SKIP_PROGRAMS)"))
        } else if p.program == "kfree_skb" && overflow_reason == 0 && no_socket_reason == 0 {
            Err(anyhow::anyhow!("this kernel's kfree_skb has no TCP_LISTEN_OVERFLOW / NO_SOCKET drop reasons"))
        } else {
            attach(&mut ebpf, p, loaded.insert(p.program))
        };
        if let Err(e) = &result {
            if p.required && !skipped(p.program) {
                return Err(anyhow::anyhow!("{e:#}"))
                    .with_context(|| format!("cannot attach {tracepoint}: {} is unavailable (is CONFIG_FTRACE_SYSCALLS on?)", p.feature));
            }
            log::warn!("tracepoint {tracepoint} unavailable ({e:#}): running without {}", p.feature);
        }
        statuses.push(ProbeStatus {
            program: p.program.to_string(),
            tracepoint,
            attached: result.is_ok(),
            error: result.err().map(|e| format!("{e:#}")),
        });
    }
    // Parsing the kernel's BTF (aya's and ours, ~5 MiB each) left freed memory in the heap
    // (glibc raises its mmap threshold after the first big free, so the second copy came from
    // the heap): hand it back, or a long-running daemon keeps ~10 MiB it never uses.
    #[cfg(target_env = "gnu")]
    // SAFETY: no arguments to get wrong; only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
    Ok(Loaded { ebpf, logger, probes: statuses, attach_time: start.elapsed() })
}

/// Where this kernel keeps what the programs read from kernel memory (the fd table on the way
/// from an fd to its socket, IPv6 addresses and the source port of a socket), from its BTF.
/// Without BTF: no request tracking or accept-queue wait (counted as sock_lookup_failed), the
/// usual layout for IPv6 addresses, and the user is told.
pub fn kernel_layout() -> KernelLayout {
    let found = crate::kernel::btf::Btf::from_sys_fs().and_then(|b| {
        let m = |s: &str, f: &str| b.member_offset(s, f).map(u64::from);
        Ok(KernelLayout {
            task_files: m("task_struct", "files")?,
            files_fdt: m("files_struct", "fdt")?,
            fdtable_fd: m("fdtable", "fd")?,
            file_private_data: m("file", "private_data")?,
            socket_type: m("socket", "type")?,
            socket_sk: m("socket", "sk")?,
            skc_v6_daddr: m("sock_common", "skc_v6_daddr")?,
            skc_v6_rcv_saddr: m("sock_common", "skc_v6_rcv_saddr")?,
            inet_sport: m("inet_sock", "inet_sport")?,
        })
    });
    found.unwrap_or_else(|e| {
        log::warn!(
            "kernel BTF unusable ({e:#}): no upstream request tracking or accept-queue wait; IPv6 addresses and local ports of failed TCP connects may be wrong"
        );
        KernelLayout::UNKNOWN
    })
}

/// Attach a tracepoint program to `category:name`, or a raw-tracepoint program to `name` (the
/// object's section says which kind each program is).
fn attach(ebpf: &mut Ebpf, p: &ProbeSpec, first_use: bool) -> anyhow::Result<()> {
    let prog = ebpf.program_mut(p.program).with_context(|| format!("program {} missing from the object", p.program))?;
    let rejected = || format!("verifier rejected {}", p.program);
    match prog {
        Program::TracePoint(prog) => {
            if first_use {
                prog.load().with_context(rejected)?;
            }
            prog.attach(p.category, p.name)?;
        }
        Program::RawTracePoint(prog) => {
            if first_use {
                prog.load().with_context(rejected)?;
            }
            prog.attach(p.name)?;
        }
        _ => bail!("program {} is neither a tracepoint nor a raw tracepoint program", p.program),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn enum_values_come_from_the_print_format() {
        let f = r#"print fmt: "reason: %s", __print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, { 40, "TCP_LISTEN_OVERFLOW" }, { 41, "X" })"#;
        assert_eq!(super::parse_symbol(f, "TCP_LISTEN_OVERFLOW"), Some(40));
        assert_eq!(super::parse_symbol(f, "NOT_SPECIFIED"), Some(2));
        assert_eq!(super::parse_symbol(f, "NOPE"), None);
    }
}
