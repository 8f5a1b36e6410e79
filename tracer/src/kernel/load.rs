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

use tracer_common::probes::{self, Group};
pub use tracer_common::probes::{HookKind, ProbeSpec};

/// Every kernel program and its hook: the attach table (`tracer_common::probes`).
pub const ALL_PROBES: &[ProbeSpec] = probes::ALL;

/// connect() results and listen() backlogs (a part of [`ALL_PROBES`]).
pub const CONNECT_PROBES: &[ProbeSpec] = probes::group(Group::Connect);

/// TCP connect outcome/latency, SYN retransmits, listener drops and accept-queue wait.
/// A program listed twice is attached to two tracepoints.
pub const TCP_PROBES: &[ProbeSpec] = probes::group(Group::Tcp);

/// Upstream request state (send/recv/close of connect()ed sockets) and the process events that
/// explain a cut request.
pub const REQUEST_PROBES: &[ProbeSpec] = probes::group(Group::Requests);

/// The attach table as the README shows it (between `<!-- probes:begin -->` and
/// `<!-- probes:end -->`, kept equal by a unit test).
pub fn probes_markdown() -> String {
    let mut out = String::from("| program | hook | kind | required | oldest kernel | without it |\n|---|---|---|---|---|---|\n");
    for p in ALL_PROBES {
        let since = if p.since_verified { p.since.to_string() } else { format!("{} (unverified)", p.since) };
        let required = if p.required { "yes" } else { "no" };
        out += &format!("| `{}` | `{}:{}` | {} | {required} | {since} | {} |\n", p.program, p.category, p.name, p.kind.as_str(), p.feature);
    }
    out
}

/// The fields a classic tracepoint program reads, compared with this kernel's format file: an
/// older layout (e.g. 6.1's sched_process_fork, whose child_pid is at 44) would have the program
/// read the wrong bytes without the verifier noticing. Err says what differs. A format file that
/// cannot be read is not an error here (attaching says what is missing).
fn check_fields(p: &ProbeSpec) -> anyhow::Result<()> {
    if p.fields.is_empty() {
        return Ok(());
    }
    let Some(format) = tracepoint_format(p.category, p.name) else { return Ok(()) };
    check_fields_in(&format, p)
}

fn check_fields_in(format: &str, p: &ProbeSpec) -> anyhow::Result<()> {
    for f in p.fields {
        match format_field(format, f.name) {
            Some((offset, size)) if offset == f.offset && size >= f.size => {}
            Some((offset, size)) => bail!(
                "this kernel's {}:{} record has {} at offset {offset} (size {size}); the program reads offset {} (size {})",
                p.category,
                p.name,
                f.name,
                f.offset,
                f.size
            ),
            None => bail!("this kernel's {}:{} record has no field {}", p.category, p.name, f.name),
        }
    }
    Ok(())
}

/// Offset and size of a field in a tracepoint format file (`field:int fd;\toffset:16;\tsize:8;…`).
fn format_field(format: &str, name: &str) -> Option<(usize, usize)> {
    format.lines().find_map(|line| {
        let mut parts = line.trim().split(';');
        let decl = parts.next()?.strip_prefix("field:")?;
        let field = decl.rsplit(char::is_whitespace).next()?;
        if field.split('[').next()? != name {
            return None;
        }
        let num = |key: &str| parts.clone().find_map(|p| p.trim().strip_prefix(key)?.parse().ok());
        Some((num("offset:")?, num("size:")?))
    })
}

fn tracepoint_format(category: &str, name: &str) -> Option<String> {
    [TRACEFS, "/sys/kernel/debug/tracing"].iter().find_map(|root| std::fs::read_to_string(format!("{root}/events/{category}/{name}/format")).ok())
}

/// The numeric value of an enum symbol in a tracepoint's print format, e.g.
/// `{ 40, "TCP_LISTEN_OVERFLOW" }` in skb/kfree_skb: enum values differ between kernels.
pub fn tracepoint_symbol(category: &str, name: &str, symbol: &str) -> Option<u32> {
    parse_symbol(&tracepoint_format(category, name)?, symbol)
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
    // Programs loaded so far (a program listed twice is loaded once, attached twice).
    let mut loaded = std::collections::HashSet::new();
    // For measuring what each hook costs (the bench), or working around a misbehaving one:
    // programs named here are not attached, and the stats say so.
    let skip = std::env::var("TRACER_SKIP_PROGRAMS").unwrap_or_default();
    let skipped = |name: &str| skip.split(',').any(|s| s.trim() == name);
    let tls_targets = if probes.iter().any(|p| p.kind == HookKind::Uprobe) { crate::kernel::tls::find(filter) } else { Vec::new() };
    for p in probes {
        if p.kind == HookKind::Uprobe {
            statuses.extend(attach_uprobes(&mut ebpf, p, &tls_targets, &mut loaded, skipped(p.program)));
            continue;
        }
        let tracepoint = format!("{}:{}", p.category, p.name);
        let result = if skipped(p.program) {
            Err(anyhow::anyhow!("skipped (TRACER_SKIP_PROGRAMS)"))
        } else if p.program == "kfree_skb" && overflow_reason == 0 && no_socket_reason == 0 {
            Err(anyhow::anyhow!("this kernel's kfree_skb has no TCP_LISTEN_OVERFLOW / NO_SOCKET drop reasons"))
        } else {
            check_fields(p).and_then(|()| attach(&mut ebpf, p, &mut loaded))
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

/// Attach a uprobe program to the symbol `p.name` of every TLS library found (`kernel::tls`), in
/// every process (the program's filter keeps the traced ones: workers forked later are covered);
/// with none found, to the system's libssl. A library or symbol missing is a warning naming what
/// is lost, never a failure.
fn attach_uprobes(
    ebpf: &mut Ebpf,
    p: &ProbeSpec,
    targets: &[crate::kernel::tls::TlsTarget],
    loaded: &mut std::collections::HashSet<&'static str>,
    skipped: bool,
) -> Vec<ProbeStatus> {
    let status = |tracepoint: String, result: anyhow::Result<()>| {
        if let Err(e) = &result {
            log::warn!("uprobe {tracepoint} unavailable ({e:#}): running without {}", p.feature);
        }
        ProbeStatus { program: p.program.to_string(), tracepoint, attached: result.is_ok(), error: result.err().map(|e| format!("{e:#}")) }
    };
    if skipped {
        return vec![status(format!("{}:{}", p.category, p.name), Err(anyhow::anyhow!("skipped (TRACER_SKIP_PROGRAMS)")))];
    }
    // No traced process maps one at start (nginx not running yet, or filtered by a name nothing
    // has): the system's, found in ld.so.cache, which an nginx started later most likely maps.
    let system = [crate::kernel::tls::TlsTarget { path: p.category.into(), pid: 0 }];
    let targets = if targets.is_empty() { &system[..] } else { targets };
    let mut out = Vec::new();
    for t in targets {
        let where_ = if t.pid == 0 {
            " (no traced process mapped a TLS library at start: the system's from ld.so.cache)".to_string()
        } else if crate::kernel::tls::is_library(&t.path) {
            format!(", mapped by pid {}", t.pid)
        } else {
            format!(" (pid {} maps no libssl: its executable, a static build?)", t.pid)
        };
        let result = (|| -> anyhow::Result<()> {
            let prog = ebpf.program_mut(p.program).with_context(|| format!("program {} missing from the object", p.program))?;
            let Program::UProbe(prog) = prog else { bail!("program {} is not a uprobe program in the object", p.program) };
            if !loaded.contains(p.program) {
                prog.load().with_context(|| format!("verifier rejected {}", p.program))?;
                loaded.insert(p.program);
            }
            prog.attach(p.name, &t.path, aya::programs::uprobe::UProbeScope::AllProcesses)
                .with_context(|| format!("{} in {}{where_}", p.name, t.path.display()))?;
            Ok(())
        })();
        out.push(status(format!("{}:{}", t.path.display(), p.name), result));
    }
    out
}

/// Attach a tracepoint program to `category:name`, or a raw-tracepoint program to `name`, as the
/// table says (the object's section must agree). Loads the program on its first use.
fn attach(ebpf: &mut Ebpf, p: &ProbeSpec, loaded: &mut std::collections::HashSet<&'static str>) -> anyhow::Result<()> {
    let prog = ebpf.program_mut(p.program).with_context(|| format!("program {} missing from the object", p.program))?;
    let rejected = || format!("verifier rejected {}", p.program);
    match (prog, p.kind) {
        (Program::TracePoint(prog), HookKind::Tracepoint) => {
            if !loaded.contains(p.program) {
                prog.load().with_context(rejected)?;
                loaded.insert(p.program);
            }
            prog.attach(p.category, p.name)?;
        }
        (Program::RawTracePoint(prog), HookKind::RawTracepoint) => {
            if !loaded.contains(p.program) {
                prog.load().with_context(rejected)?;
                loaded.insert(p.program);
            }
            prog.attach(p.name)?;
        }
        _ => bail!("program {} is not a {} program in the object", p.program, p.kind.as_str()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// README.md's "Kernel hooks" table is the attach table: `TRACER_UPDATE_README=1 cargo test
    /// -p tracer --lib readme` rewrites it.
    #[test]
    fn readme_hook_table_is_the_attach_table() {
        const BEGIN: &str = "<!-- probes:begin -->\n";
        const END: &str = "<!-- probes:end -->";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
        let readme = std::fs::read_to_string(path).expect("README.md");
        let start = readme.find(BEGIN).expect("README.md has <!-- probes:begin -->") + BEGIN.len();
        let end = start + readme[start..].find(END).expect("README.md has <!-- probes:end -->");
        let table = probes_markdown();
        if readme[start..end] != table && std::env::var("TRACER_UPDATE_README").is_ok_and(|v| v == "1") {
            std::fs::write(path, format!("{}{table}{}", &readme[..start], &readme[end..])).expect("writing README.md");
            return;
        }
        assert_eq!(readme[start..end], table, "README.md's hook table differs from tracer_common::probes::ALL (TRACER_UPDATE_README=1 rewrites it)");
    }

    #[test]
    fn the_legacy_groups_are_the_whole_table() {
        let chained: Vec<_> = CONNECT_PROBES.iter().chain(TCP_PROBES).chain(REQUEST_PROBES).collect();
        assert_eq!(chained.len(), ALL_PROBES.len());
        assert!(chained.iter().zip(ALL_PROBES).all(|(a, b)| *a == b));
        assert_eq!(CONNECT_PROBES[0].program, "connect_enter");
    }

    const FORK_618: &str = "name: sched_process_fork\nID: 318\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;\n\tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;\n\tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;\n\tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;\n";
    const FORK_61: &str = "format:\n\tfield:char parent_comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\tfield:pid_t parent_pid;\toffset:24;\tsize:4;\tsigned:1;\n\tfield:char child_comm[16];\toffset:28;\tsize:16;\tsigned:0;\n\tfield:pid_t child_pid;\toffset:44;\tsize:4;\tsigned:1;\n";

    #[test]
    fn fields_are_checked_against_the_format_file() {
        assert_eq!(format_field(FORK_618, "child_pid"), Some((20, 4)));
        assert_eq!(format_field(FORK_618, "parent_comm"), Some((8, 4)));
        assert_eq!(format_field(FORK_61, "child_comm"), Some((28, 16)));
        assert_eq!(format_field(FORK_61, "child"), None);
        let fork = ALL_PROBES.iter().find(|p| p.program == "process_fork").unwrap();
        assert!(check_fields_in(FORK_618, fork).is_ok());
        let e = check_fields_in(FORK_61, fork).unwrap_err().to_string();
        assert!(e.contains("child_pid at offset 44"), "{e}");
        let exit = ALL_PROBES.iter().find(|p| p.program == "process_exit").unwrap();
        assert!(check_fields_in(FORK_61, exit).unwrap_err().to_string().contains("no field group_dead"));
    }

    /// Every field the programs read is where this kernel's format file says (when tracefs is
    /// readable: as root).
    #[test]
    fn offsets_match_this_kernels_tracepoints() {
        let mut checked = 0;
        for p in ALL_PROBES.iter().filter(|p| !p.fields.is_empty()) {
            let Some(format) = tracepoint_format(p.category, p.name) else { continue };
            check_fields_in(&format, p).unwrap();
            checked += 1;
        }
        if checked == 0 {
            eprintln!("tracefs not readable: offsets not checked against this kernel");
        }
    }

    #[test]
    fn enum_values_come_from_the_print_format() {
        let f = r#"print fmt: "reason: %s", __print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, { 40, "TCP_LISTEN_OVERFLOW" }, { 41, "X" })"#;
        assert_eq!(super::parse_symbol(f, "TCP_LISTEN_OVERFLOW"), Some(40));
        assert_eq!(super::parse_symbol(f, "NOT_SPECIFIED"), Some(2));
        assert_eq!(super::parse_symbol(f, "NOPE"), None);
    }
}
