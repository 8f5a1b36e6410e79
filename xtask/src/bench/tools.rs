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
}

impl TracerRun {
    pub fn start(bin: &Path, args: &[&str], out: PathBuf) -> Result<TracerRun> {
        let file = std::fs::File::create(&out).with_context(|| format!("create {}", out.display()))?;
        let mut cmd = Command::new(bin);
        cmd.args(TRACER_MODE).args(args).stdout(file).stderr(Stdio::piped());
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
        let stats = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|r| r["type"] == "stats" && r["final"] == true)
            .context("no final stats record in the tracer's output")?;
        let lost = stats["lost"].as_object().map(|m| m.values().filter_map(Value::as_u64).sum()).unwrap_or(0);
        Ok(TracerStats { events: stats["events"].as_u64().unwrap_or(0), lost })
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
            ["Socket", "errors:", rest @ ..] => {
                w.errors += rest.iter().filter_map(|s| s.trim_end_matches(',').parse::<u64>().ok()).sum::<u64>()
            }
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

/// (name, bytes_memlock) of these maps (`bpftool map show`), largest first.
pub fn map_memory(ids: &BTreeSet<u64>) -> Result<Vec<(String, u64)>> {
    let mut v: Vec<(String, u64)> = bpftool_json("map")?
        .iter()
        .filter(|m| m["id"].as_u64().is_some_and(|id| ids.contains(&id)))
        .map(|m| (m["name"].as_str().unwrap_or("?").to_string(), m["bytes_memlock"].as_u64().unwrap_or(0)))
        .collect();
    v.sort_by(|a, b| b.1.cmp(&a.1));
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

/// (VmRSS, VmHWM) of a process in KiB.
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

