//! The programs a benchmark drives — the tracer, the bpftrace peer, wrk, gunicorn — and what is
//! read back from the kernel (BPF program stats, map memory, RSS). Every child is a harness
//! `Proc`: its own process group, stopped on drop, so a failed or interrupted run leaves nothing.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use tracer_e2e::{find_program, repo_root, wait_for, Proc};

/// How "the tracer with every probe" runs: `watch` attaches every kernel program. When
/// `tracer daemon` exists, this is the one line to change (its readiness line is below).
pub const TRACER_MODE: &[&str] = &["watch", "--json"];
/// What the tracer prints on stderr once its programs are attached.
const TRACER_READY: &str = "watching";

/// The tracer as a child: JSON records go to a file (the summary at exit is what we read).
pub struct TracerRun {
    proc: Proc,
    out: PathBuf,
}

/// The tracer's final `stats` record.
#[derive(Clone, Debug, Default)]
pub struct TracerStats {
    pub events: u64,
    /// Sum of every `lost` counter.
    pub lost: u64,
    /// The non-zero `lost` counters, e.g. `ringbuf_full 120`.
    pub lost_detail: String,
    /// Upstream requests completed, summed over the final `target` records.
    pub requests: u64,
}

impl TracerRun {
    pub fn start(bin: &Path, args: &[&str], out: PathBuf) -> Result<TracerRun> {
        TracerRun::start_with_env(bin, args, out, &[])
    }

    /// Start it with extra environment, e.g. `TRACER_SKIP_PROGRAMS` (programs left out) or
    /// `TRACER_HOOKS_ONLY` (programs attached but returning at once).
    pub fn start_with_env(bin: &Path, args: &[&str], out: PathBuf, env: &[(&str, &str)]) -> Result<TracerRun> {
        let file = std::fs::File::create(&out).with_context(|| format!("create {}", out.display()))?;
        let mut cmd = Command::new(bin);
        cmd.args(TRACER_MODE).args(args).stdout(file).stderr(Stdio::piped());
        cmd.envs(env.iter().copied());
        let mut proc = Proc::spawn("tracer", &mut cmd)?;
        let err = proc.child.stderr.take().context("tracer stderr")?;
        wait_line(err, TRACER_READY, Duration::from_secs(30)).context("the tracer did not attach")?;
        Ok(TracerRun { proc, out })
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// SIGINT (the tracer prints its final summary), then read that summary.
    pub fn stop(mut self) -> Result<TracerStats> {
        if !self.proc.stop(libc::SIGINT, Duration::from_secs(20)) {
            bail!("the tracer did not exit within 20 s of SIGINT");
        }
        let status = self.proc.child.wait()?;
        if !status.success() {
            bail!("the tracer exited with {status}");
        }
        let text = std::fs::read_to_string(&self.out)?;
        let finals: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|r| r["final"] == true).collect();
        let stats = finals.iter().find(|r| r["type"] == "stats").context("no final stats record in the tracer's output")?;
        let counters: Vec<(String, u64)> = stats["lost"]
            .as_object()
            .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_u64()?))).filter(|c| c.1 > 0).collect())
            .unwrap_or_default();
        let lost = counters.iter().map(|c| c.1).sum();
        let lost_detail = counters.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ");
        let requests = finals.iter().filter(|r| r["type"] == "target").filter_map(|r| r["requests"]["completed"].as_u64()).sum();
        Ok(TracerStats { events: stats["events"].as_u64().unwrap_or(0), lost, lost_detail, requests })
    }
}

/// Forward a child's output to a thread; return once a line contains `marker` (the thread keeps
/// draining, so the child never blocks on a full pipe).
fn wait_line(r: impl std::io::Read + Send + 'static, marker: &'static str, timeout: Duration) -> Result<()> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        for line in BufReader::new(r).lines().map_while(|l| l.ok()) {
            if line.contains(marker) {
                let _ = tx.send(Ok(()));
            } else if seen.len() < 20 {
                seen.push(line);
            }
        }
        let _ = tx.send(Err(seen.join("\n")));
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(out)) => bail!("exited before it was ready:\n{out}"),
        Err(_) => bail!("not ready after {timeout:?}"),
    }
}

/// The peer: bpftrace counting the same calls per socket for comm nginx, with the same hooks
/// (connect enter/exit, send/recv per socket, close). `BEGIN` fires once every probe is attached.
const PEER_SCRIPT: &str = r#"
BEGIN { printf("ready\n"); }
tracepoint:syscalls:sys_enter_connect /comm == "nginx"/ { @connect_start[tid] = nsecs; }
tracepoint:syscalls:sys_exit_connect /comm == "nginx"/ { @connects[args->ret] = count(); delete(@connect_start[tid]); }
tracepoint:sock:sock_send_length /comm == "nginx"/ { @send[args->sk] = count(); }
tracepoint:sock:sock_recv_length /comm == "nginx"/ { @recv[args->sk] = count(); }
tracepoint:syscalls:sys_enter_close /comm == "nginx"/ { @closes = count(); }
END { clear(@send); clear(@recv); clear(@connect_start); }
"#;

pub fn peer_script() -> &'static str {
    PEER_SCRIPT.trim()
}

pub struct Bpftrace(Proc);

impl Bpftrace {
    pub fn start(script: &Path) -> Result<Bpftrace> {
        let mut cmd = Command::new(find_program("bpftrace")?);
        // A socket per request with keep-alive off: room for every one in a run.
        cmd.args(["-B", "line"]).arg(script).env("BPFTRACE_MAP_KEYS_MAX", "262144");
        cmd.stdout(Stdio::piped()).stderr(Stdio::null());
        let mut proc = Proc::spawn("bpftrace", &mut cmd)?;
        let out = proc.child.stdout.take().context("bpftrace stdout")?;
        wait_line(out, "ready", Duration::from_secs(60)).context("bpftrace did not attach")?;
        Ok(Bpftrace(proc))
    }

    pub fn pid(&self) -> u32 {
        self.0.pid()
    }

    pub fn stop(mut self) {
        self.0.stop(libc::SIGINT, Duration::from_secs(20));
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Wrk {
    pub rps: f64,
    pub p99_ms: f64,
    pub requests: u64,
    /// Non-2xx/3xx responses plus socket errors.
    pub errors: u64,
}

/// `wrk -t threads -c conns -d secs --latency url` (bounded by `-d` and `--timeout`).
pub fn wrk(url: &str, secs: f64, threads: u32, conns: u32) -> Result<Wrk> {
    let out = Command::new(find_program("wrk")?)
        .args(["-t", &threads.to_string(), "-c", &conns.to_string(), "--timeout", "5s", "--latency"])
        .arg(format!("-d{}s", secs.max(1.0).round() as u64))
        .arg(url)
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk failed ({}): {}{}", out.status, text, String::from_utf8_lossy(&out.stderr));
    }
    parse_wrk(&text).with_context(|| format!("unexpected wrk output:\n{text}"))
}

fn parse_wrk(text: &str) -> Option<Wrk> {
    let mut w = Wrk::default();
    for line in text.lines().map(str::trim) {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["Requests/sec:", v] => w.rps = v.parse().ok()?,
            ["99%", v] => w.p99_ms = ms(v)?,
            [n, "requests", "in", ..] => w.requests = n.parse().ok()?,
            ["Non-2xx", "or", "3xx", "responses:", n] => w.errors += n.parse::<u64>().ok()?,
            ["Socket", "errors:", rest @ ..] => w.errors += rest.iter().filter_map(|s| s.trim_end_matches(',').parse::<u64>().ok()).sum::<u64>(),
            _ => {}
        }
    }
    (w.rps > 0.0).then_some(w)
}

/// wrk's `12.34us` / `5.67ms` / `1.20s` / `2.00m` in milliseconds.
fn ms(v: &str) -> Option<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}

/// gunicorn serving tests/apps/slow_app.py with no sleep. `keepalive`: gthread workers that keep
/// upstream connections open (sync workers close after every response).
pub fn gunicorn(bind: &str, workers: u32, keepalive: bool) -> Result<Proc> {
    let mut cmd = Command::new(find_program("gunicorn")?);
    cmd.args(["--bind", bind, "--backlog", "2048", "--workers", &workers.to_string(), "--timeout", "60"]);
    if keepalive {
        cmd.args(["--worker-class", "gthread", "--threads", "4", "--keep-alive", "5"]);
    } else {
        cmd.args(["--worker-class", "sync"]);
    }
    cmd.args(["--no-control-socket", "--umask", "0", "--chdir"])
        .arg(repo_root().join("tests/apps"))
        .arg("slow_app:app")
        .env("APP_SLEEP", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let proc = Proc::spawn("gunicorn", &mut cmd)?;
    let b = bind.to_string();
    wait_for(&format!("gunicorn on {bind}"), Duration::from_secs(20), || match b.strip_prefix("unix:") {
        Some(p) => std::os::unix::net::UnixStream::connect(p).is_ok(),
        None => std::net::TcpStream::connect(&b).is_ok(),
    })?;
    wait_for("gunicorn workers", Duration::from_secs(20), || tracer_e2e::children_of(proc.pid()).len() == workers as usize)?;
    Ok(proc)
}

/// BPF program and map ids a process holds open (from /proc/PID/fdinfo): exactly the tracer's
/// objects, whatever else is loaded on the machine.
pub fn bpf_ids(pid: u32) -> (BTreeSet<u64>, BTreeSet<u64>) {
    let (mut progs, mut maps) = (BTreeSet::new(), BTreeSet::new());
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return (progs, maps) };
    for e in dir.flatten() {
        let link = std::fs::read_link(e.path()).unwrap_or_default();
        let (set, key) = match link.to_string_lossy().as_ref() {
            "anon_inode:bpf-prog" => (&mut progs, "prog_id:"),
            "anon_inode:bpf-map" => (&mut maps, "map_id:"),
            _ => continue,
        };
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", e.file_name().to_string_lossy())).unwrap_or_default();
        if let Some(id) = info.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.trim().parse().ok()) {
            set.insert(id);
        }
    }
    (progs, maps)
}

fn bpftool_json(what: &str) -> Result<Vec<Value>> {
    let out = Command::new(find_program("bpftool")?).args([what, "show", "--json"]).output().context("bpftool")?;
    if !out.status.success() {
        bail!("bpftool {what} show: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// (name, run_cnt, run_time_ns) of these programs (`bpftool prog show`).
pub fn prog_stats(ids: &BTreeSet<u64>) -> Result<Vec<(String, u64, u64)>> {
    Ok(bpftool_json("prog")?
        .iter()
        .filter(|p| p["id"].as_u64().is_some_and(|id| ids.contains(&id)))
        .map(|p| {
            let n = |k: &str| p[k].as_u64().unwrap_or(0);
            (p["name"].as_str().unwrap_or("?").to_string(), n("run_cnt"), n("run_time_ns"))
        })
        .collect())
}

/// CPU seconds used so far by user processes outside this bench's process tree (exited children
/// count through their parent's cutime/cstime). A shared machine is the bench's worst enemy: a
/// compile or a test suite running alongside shows up here.
pub fn foreign_cpu_secs() -> f64 {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let me = std::process::id();
    // pid → (ppid, ticks, kernel thread)
    let mut procs = std::collections::HashMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let f: Vec<u64> = rest.split_whitespace().skip(1).take(14).map(|v| v.parse().unwrap_or(0)).collect();
        if f.len() == 14 {
            // After the state: ppid, pgrp, session, tty, tpgid, flags, 4 fault counts, utime, stime, cutime, cstime.
            procs.insert(pid, (f[0] as u32, f[10] + f[11] + f[12] + f[13], f[5] & PF_KTHREAD != 0));
        }
    }
    let ours = |mut pid: u32| {
        for _ in 0..64 {
            if pid == me {
                return true;
            }
            match procs.get(&pid) {
                Some(&(ppid, _, _)) if ppid > 1 => pid = ppid,
                _ => return false,
            }
        }
        false
    };
    ticks_to_secs(procs.iter().filter(|(pid, (_, _, kthread))| !kthread && !ours(**pid)).map(|(_, (_, t, _))| *t).sum())
}

/// Tracepoint programs loaded right now (outside a traced run these are someone else's, and
/// they would tax the "untraced" runs).
pub fn foreign_tracepoint_progs() -> Vec<String> {
    bpftool_json("prog")
        .unwrap_or_default()
        .iter()
        .filter(|p| p["type"] == "tracepoint")
        .map(|p| p["name"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// (name, bytes_memlock) of these maps (`bpftool map show`), largest first.
pub fn map_memory(ids: &BTreeSet<u64>) -> Result<Vec<(String, u64)>> {
    let mut v: Vec<(String, u64)> = bpftool_json("map")?
        .iter()
        .filter(|m| m["id"].as_u64().is_some_and(|id| ids.contains(&id)))
        .map(|m| (m["name"].as_str().unwrap_or("?").to_string(), m["bytes_memlock"].as_u64().unwrap_or(0)))
        .collect();
    v.sort_by_key(|m| std::cmp::Reverse(m.1));
    Ok(v)
}

/// `kernel.bpf_stats_enabled=1` while held (the kernel only times programs when asked); the
/// previous value comes back on drop, also on failure.
pub struct BpfStats(String);

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    pub fn enable() -> Result<BpfStats> {
        let prev = std::fs::read_to_string(BPF_STATS).context("read kernel.bpf_stats_enabled")?;
        std::fs::write(BPF_STATS, "1").context("sysctl -w kernel.bpf_stats_enabled=1")?;
        Ok(BpfStats(prev.trim().to_string()))
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(BPF_STATS, &self.0) {
            eprintln!("bench: warning: could not restore kernel.bpf_stats_enabled={}: {e}", self.0);
        }
    }
}

/// IRQ-work interrupts so far, all CPUs (/proc/interrupts `IWI`): how a BPF ring-buffer submit
/// wakes its reader, and in a VM each one is a self-IPI, i.e. a VM exit.
pub fn irq_work_interrupts() -> u64 {
    std::fs::read_to_string("/proc/interrupts")
        .unwrap_or_default()
        .lines()
        .find(|l| l.trim_start().starts_with("IWI:"))
        .map(|l| l.split_whitespace().skip(1).map_while(|v| v.parse::<u64>().ok()).sum())
        .unwrap_or(0)
}

/// Clock ticks (the unit of /proc/stat and /proc/PID/stat times) in seconds.
fn ticks_to_secs(ticks: u64) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / hz
}

/// Busy CPU time of the whole machine so far (all CPUs, /proc/stat: everything but idle and
/// iowait), in seconds.
pub fn machine_busy_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().find(|l| l.starts_with("cpu ")) else { return 0.0 };
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let f: Vec<u64> = cpu.split_whitespace().skip(1).take(8).filter_map(|v| v.parse().ok()).collect();
    let busy: u64 = f.iter().enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum();
    ticks_to_secs(busy)
}

/// CPU time (user + system, all threads) a process has used so far, in seconds.
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised comm: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|r| r.1).unwrap_or("");
    let f: Vec<u64> = rest.split_whitespace().skip(11).take(2).filter_map(|v| v.parse().ok()).collect();
    ticks_to_secs(f.iter().sum())
}

/// (VmRSS, VmHWM) of a process in KiB.
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0);
    (field("VmRSS:"), field("VmHWM:"))
}
