//! Harness for the root-only end-to-end tests: RAII guards that start real nginx and gunicorn on
//! loopback in a scratch directory and always stop them, the tracer run as a child process, load
//! from `ab`, and nginx's own logs read back as ground truth. Each test owns its ports, socket
//! paths and a pid filter, so tests run in parallel without sharing counts.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The repository root (for tests/apps).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// These tests load eBPF programs and start servers: they need root. Failing (not skipping) keeps
/// a non-root run from looking green.
pub fn require_root() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "end-to-end tests must run as root (they load eBPF programs)");
}

/// A scratch directory, removed on drop. World-traversable: nginx workers run as `nobody`.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("tracer-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        set_mode(&dir, 0o755);
        Scratch { dir }
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("KEEP_SCRATCH").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A child process in its own process group, killed (whole group) on drop.
pub struct Proc {
    pub child: Child,
    pub name: &'static str,
}

impl Proc {
    pub fn spawn(name: &'static str, cmd: &mut Command) -> Result<Proc> {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        let child = cmd.spawn().with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Proc { child, name })
    }
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    /// Send `sig` to the group and wait up to `grace` for the leader to exit.
    pub fn stop(&mut self, sig: i32, grace: Duration) -> bool {
        let pgid = self.child.id() as i32;
        unsafe { libc::kill(-pgid, sig) };
        let end = Instant::now() + grace;
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if !self.stop(libc::SIGTERM, Duration::from_secs(5)) {
            self.stop(libc::SIGKILL, Duration::from_secs(5));
        }
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind 127.0.0.1:0").port()
}

pub fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    bail!("timed out after {timeout:?} waiting for {what}")
}

/// A command found on PATH, in the usual sbin directories (which a plain PATH may lack), or in
/// python3's scripts directory (where `pip install` puts gunicorn and uwsgi).
pub fn find_program(name: &str) -> Result<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let scripts = Command::new("python3")
        .args(["-c", "import sysconfig; print(sysconfig.get_path('scripts'))"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    for dir in path.split(':').chain(["/usr/sbin", "/usr/bin", "/usr/local/bin", "/sbin", scripts.as_str()]) {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("{name} not found on PATH: run `cargo xtask setup` first")
}

pub struct GunicornOpts {
    /// `unix:/path` or `127.0.0.1:port`.
    pub bind: String,
    pub backlog: u32,
    pub workers: u32,
    pub app_sleep: f64,
    /// File mode mask for the unix socket gunicorn creates (0 = world-connectable).
    pub umask: u32,
    /// Random extra sleep of up to this many seconds per request.
    pub app_sleep_spread: f64,
    /// Hold every request (after its sleep) until this file exists.
    pub gate: Option<PathBuf>,
    /// Once this directory exists, each request leaves a file in it as it starts
    /// (`Gunicorn::started_requests`).
    pub started_dir: Option<PathBuf>,
}

impl Default for GunicornOpts {
    fn default() -> Self {
        GunicornOpts { bind: String::new(), backlog: 16, workers: 1, app_sleep: 0.5, umask: 0, app_sleep_spread: 0.0, gate: None, started_dir: None }
    }
}

/// gunicorn serving tests/apps/slow_app.py.
pub struct Gunicorn {
    pub proc: Proc,
}

impl Gunicorn {
    pub fn start(o: &GunicornOpts) -> Result<Gunicorn> {
        let exe = find_program("gunicorn")?;
        let mut cmd = Command::new(exe);
        cmd.args(["--bind", &o.bind, "--backlog", &o.backlog.to_string(), "--workers", &o.workers.to_string()])
            .args(["--worker-class", "sync", "--timeout", "60", "--no-control-socket", "--umask"])
            .arg(format!("0o{:o}", o.umask))
            .arg("--chdir")
            .arg(repo_root().join("tests/apps"))
            .arg("slow_app:app")
            .env("APP_SLEEP", o.app_sleep.to_string())
            .env("APP_SLEEP_SPREAD", o.app_sleep_spread.to_string())
            .envs(o.gate.iter().map(|g| ("APP_GATE", g.as_os_str())))
            .envs(o.started_dir.iter().map(|d| ("APP_STARTED_DIR", d.as_os_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let proc = Proc::spawn("gunicorn", &mut cmd)?;
        let g = Gunicorn { proc };
        let bind = o.bind.clone();
        wait_for(&format!("gunicorn on {bind}"), Duration::from_secs(20), || match bind.strip_prefix("unix:") {
            Some(p) => std::os::unix::net::UnixStream::connect(p).is_ok(),
            None => TcpStream::connect(&bind).is_ok(),
        })?;
        // The probe connection above costs the app one request: let it finish.
        if let Some(g) = &o.gate {
            std::fs::write(g, b"")?;
            std::thread::sleep(Duration::from_secs_f64(o.app_sleep + 0.2));
            std::fs::remove_file(g)?;
        } else {
            std::thread::sleep(Duration::from_secs_f64(o.app_sleep + 0.2));
        }
        Ok(g)
    }

    /// The gunicorn master process id (the exec'd pid; pyenv shims exec in place).
    pub fn master_pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn worker_pids(&self) -> Vec<u32> {
        children_of(self.master_pid())
    }

    /// How many requests the app has started since `dir` (its `started_dir`) was created.
    pub fn started_requests(dir: &Path) -> usize {
        std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
    }
}

/// Child process ids of `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// uwsgi (master + workers) speaking HTTP on a unix socket, serving tests/apps/slow_app.py.
pub struct Uwsgi {
    pub proc: Proc,
}

impl Uwsgi {
    /// `extra`: more uwsgi flags (e.g. `--harakiri 2`, `--max-requests 5`).
    pub fn start(sock: &Path, processes: u32, app_sleep: f64, extra: &[&str]) -> Result<Uwsgi> {
        Uwsgi::start_on("--http-socket", sock, processes, app_sleep, extra)
    }

    /// The same, speaking HTTP/1.1 with keep-alive to nginx (`--http11-socket`).
    pub fn start_http11(sock: &Path, processes: u32, app_sleep: f64, extra: &[&str]) -> Result<Uwsgi> {
        Uwsgi::start_on("--http11-socket", sock, processes, app_sleep, extra)
    }

    fn start_on(socket_flag: &str, sock: &Path, processes: u32, app_sleep: f64, extra: &[&str]) -> Result<Uwsgi> {
        let mut cmd = Command::new(find_program("uwsgi")?);
        cmd.arg("--master")
            .args(["--processes", &processes.to_string(), socket_flag])
            .arg(sock)
            .args(["--chmod-socket=666", "--wsgi-file"])
            .arg(repo_root().join("tests/apps/slow_app.py"))
            .args(["--callable", "app", "--die-on-term", "--disable-logging"])
            .args(extra)
            .env("APP_SLEEP", app_sleep.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let proc = Proc::spawn("uwsgi", &mut cmd)?;
        let u = Uwsgi { proc };
        wait_for("uwsgi socket", Duration::from_secs(20), || sock.exists() && children_of(u.proc.pid()).len() == processes as usize)?;
        Ok(u)
    }
}

/// nginx keeping HTTP/1.1 keep-alive connections to the unix upstream `sock` (upstream `rec`,
/// no retries: a cut request is the client's 502).
pub fn nginx_keepalive_to(scratch: &Scratch, sock: &Path) -> Result<Nginx> {
    let http_extra = format!("upstream rec {{ server unix:{}; keepalive 8; }}", sock.display());
    let location_extra = "proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_next_upstream off;";
    Nginx::start(scratch, &NginxOpts { upstream: "rec", location_extra, http_extra: &http_extra, ..Default::default() })
}

/// tests/apps/keepalive_server.py on a free port, closing connections idle for `idle_s`, and
/// nginx keeping keep-alive connections to it (upstream `ka`, no retries: a request lost to the
/// keep-alive race is the client's 502). Returns the server, its port and nginx.
pub fn keepalive_upstream(scratch: &Scratch, idle_s: f64) -> Result<(Proc, u16, Nginx)> {
    let port = free_port();
    let mut cmd = Command::new("python3");
    cmd.arg(repo_root().join("tests/apps/keepalive_server.py")).arg(port.to_string()).arg(idle_s.to_string());
    let server = Proc::spawn("keepalive_server", &mut cmd)?;
    wait_for("keep-alive upstream", Duration::from_secs(10), || TcpStream::connect(("127.0.0.1", port)).is_ok())?;
    let http_extra = format!("upstream ka {{ server 127.0.0.1:{port}; keepalive 4; }}");
    let location_extra = "proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_next_upstream off;";
    let nginx = Nginx::start(scratch, &NginxOpts { upstream: "ka", location_extra, http_extra: &http_extra, ..Default::default() })?;
    Ok((server, port, nginx))
}

/// nginx in front of one upstream, logging to the scratch directory.
pub struct Nginx {
    pub proc: Proc,
    pub port: u16,
    pub access_log: PathBuf,
    pub error_log: PathBuf,
}

pub struct NginxOpts<'a> {
    /// What follows `proxy_pass http://`: `unix:/path:` or `127.0.0.1:8000`.
    pub upstream: &'a str,
    /// Extra directives inside `location / {}`.
    pub location_extra: &'a str,
    pub workers: u32,
    /// Extra directives at `http {}` level (e.g. an `upstream {}` block).
    pub http_extra: &'a str,
    /// Extra directives inside `server {}` (e.g. more `location` blocks).
    pub server_extra: &'a str,
    /// `access_log off` instead of the log file.
    pub no_access_log: bool,
    /// Parameters of the `listen` line after the address (e.g. `ssl http2`; the certificate then
    /// goes in `server_extra`).
    pub listen_params: &'a str,
}

impl Default for NginxOpts<'_> {
    fn default() -> Self {
        NginxOpts { upstream: "", location_extra: "", workers: 1, http_extra: "", server_extra: "", no_access_log: false, listen_params: "" }
    }
}

impl Nginx {
    pub fn start(scratch: &Scratch, o: &NginxOpts) -> Result<Nginx> {
        let port = free_port();
        let d = scratch.dir.display();
        let conf = format!(
            r#"daemon off;
master_process on;
worker_processes {workers};
pid {d}/nginx.pid;
error_log {d}/error.log error;
events {{ worker_connections 4096; }}
http {{
    log_format tracer '$status $request_time "$upstream_addr" "$upstream_status" "$request" $upstream_header_time $pid $upstream_connect_time $upstream_http_x_remote_port';
    {access_log};
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    {http_extra}
    server {{
        listen 127.0.0.1:{port} backlog=4096 {listen_params};
        {server_extra}
        location / {{
            proxy_pass http://{upstream};
            {extra}
        }}
    }}
}}
"#,
            workers = o.workers,
            upstream = o.upstream,
            extra = o.location_extra,
            http_extra = o.http_extra,
            server_extra = o.server_extra,
            listen_params = o.listen_params,
            access_log = if o.no_access_log { "access_log off".to_string() } else { format!("access_log {d}/access.log tracer") },
        );
        let conf_path = scratch.path("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let mut cmd = Command::new(find_program("nginx")?);
        cmd.arg("-c").arg(&conf_path).arg("-p").arg(&scratch.dir).arg("-e").arg(scratch.path("error.log"));
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let proc = Proc::spawn("nginx", &mut cmd)?;
        let n = Nginx { proc, port, access_log: scratch.path("access.log"), error_log: scratch.path("error.log") };
        wait_for(&format!("nginx on port {port}"), Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok() && n.worker_pids().len() == o.workers as usize
        })?;
        Ok(n)
    }

    pub fn master_pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn worker_pids(&self) -> Vec<u32> {
        children_of(self.master_pid())
    }

    /// (status, request path) of every access-log line.
    pub fn requests(&self) -> Vec<(u16, String)> {
        std::fs::read_to_string(&self.access_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let status = l.split(' ').next()?.parse().ok()?;
                let path = l.split('"').nth(5)?.split(' ').nth(1)?.to_string();
                Some((status, path))
            })
            .collect()
    }

    /// Status code → count, from the access log (ground truth for what clients got).
    pub fn statuses(&self) -> BTreeMap<u16, u64> {
        let mut m = BTreeMap::new();
        for line in std::fs::read_to_string(&self.access_log).unwrap_or_default().lines() {
            if let Some(s) = line.split(' ').next().and_then(|s| s.parse().ok()) {
                *m.entry(s).or_default() += 1;
            }
        }
        m
    }

    pub fn count_status(&self, status: u16) -> u64 {
        self.statuses().get(&status).copied().unwrap_or(0)
    }

    /// Error-log lines containing `needle`.
    pub fn error_lines(&self, needle: &str) -> u64 {
        std::fs::read_to_string(&self.error_log).unwrap_or_default().lines().filter(|l| l.contains(needle)).count() as u64
    }

    /// $upstream_header_time (seconds) of every request that got a response header.
    pub fn header_times(&self) -> Vec<f64> {
        std::fs::read_to_string(&self.access_log).unwrap_or_default().lines().filter_map(|line| line.rsplit(' ').nth(3)?.parse().ok()).collect()
    }

    /// (nginx worker pid, $upstream_connect_time in seconds, upstream local port) of every
    /// request whose upstream connection was established and answered.
    pub fn connect_times(&self) -> Vec<(u32, f64, u16)> {
        std::fs::read_to_string(&self.access_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.rsplitn(4, ' ').collect();
                // rsplitn: [port, connect_time, pid, rest]
                Some((f.get(2)?.parse().ok()?, f.get(1)?.parse().ok()?, f.first()?.parse().ok()?))
            })
            .collect()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }
}

/// `ab -n N -c C url`: a bounded burst (N requests, at most 60 s).
pub fn ab(url: &str, n: u32, c: u32) -> Result<String> {
    let out =
        Command::new(find_program("ab")?).args(["-q", "-s", "60", "-n", &n.to_string(), "-c", &c.to_string(), url]).output().context("running ab")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("ab failed: {}\n{}", String::from_utf8_lossy(&out.stderr), text);
    }
    Ok(text)
}

/// `n` GET requests on `n` connections opened at the same instant (a barrier), unlike `ab`, which
/// holds back the rest of its concurrency until its first response arrives. Returns status → count.
pub fn burst(port: u16, n: usize) -> BTreeMap<u16, u64> {
    burst_path(port, "/", n)
}

/// `burst` to one path.
pub fn burst_path(port: u16, path: &str, n: usize) -> BTreeMap<u16, u64> {
    let request = format!("GET {path} HTTP/1.0\r\nHost: t\r\n\r\n");
    use std::io::Write;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let b = barrier.clone();
            let request = request.clone();
            std::thread::spawn(move || {
                b.wait();
                let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
                s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
                s.write_all(request.as_bytes()).ok()?;
                let text = read_all(s);
                text.split(' ').nth(1)?.parse::<u16>().ok()
            })
        })
        .collect();
    let mut m = BTreeMap::new();
    for t in threads {
        *m.entry(t.join().unwrap_or(None).unwrap_or(0)).or_default() += 1;
    }
    m
}

/// A POST to `path` through nginx on its own connection (no client keep-alive); the status.
pub fn post(port: u16, path: &str) -> u16 {
    use std::io::Write;
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to nginx");
    s.set_nodelay(true).expect("nodelay");
    write!(s, "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi").expect("send");
    read_all(s).split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// A fresh path for a tracer's `--ready-file` (unique per process and call).
pub fn ready_file_path() -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("tracer-ready-{}-{n}", std::process::id()))
}

/// `tracer watch --json` as a child process.
pub struct Tracer {
    proc: Proc,
    stdout: mpsc::Receiver<String>,
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Tracer {
    /// Start `tracer watch --json ARGS` and wait until its programs are attached.
    pub fn watch(bin: &str, args: &[&str]) -> Result<Tracer> {
        let mut all = vec!["watch", "--json"];
        all.extend_from_slice(args);
        Tracer::start(bin, &all)
    }

    /// Start `tracer ARGS` (a tracing subcommand) and wait until its programs are attached: the
    /// tracer creates its `--ready-file` then.
    pub fn start(bin: &str, args: &[&str]) -> Result<Tracer> {
        let ready = ready_file_path();
        let mut cmd = Command::new(bin);
        cmd.args(args).arg("--ready-file").arg(&ready).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut proc = Proc::spawn("tracer", &mut cmd)?;
        let (tx, rx) = mpsc::channel();
        let out = proc.child.stdout.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
                let _ = tx.send(line);
            }
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let err = proc.child.stderr.take().expect("piped");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(err);
            let mut line = String::new();
            while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        let attached =
            wait_for("the tracer's ready file", Duration::from_secs(30), || ready.exists() || proc.child.try_wait().is_ok_and(|s| s.is_some()));
        if attached.is_err() || !ready.exists() {
            bail!("tracer did not attach: {}", stderr.lock().unwrap());
        }
        Ok(Tracer { proc, stdout: rx, stderr })
    }

    /// SIGINT, wait for the final summary, return every JSON record it printed.
    pub fn stop(mut self) -> Result<Vec<serde_json::Value>> {
        if !self.proc.stop(libc::SIGINT, Duration::from_secs(20)) {
            bail!("tracer did not exit on SIGINT");
        }
        let status = self.proc.child.wait()?;
        let mut records = Vec::new();
        while let Ok(line) = self.stdout.recv_timeout(Duration::from_secs(2)) {
            records.push(serde_json::from_str(&line).with_context(|| format!("not JSON: {line}"))?);
        }
        if !status.success() {
            bail!("tracer exited with {status}: {}", self.stderr.lock().unwrap());
        }
        Ok(records)
    }
}

/// The final `target` record for `target` (e.g. `unix:/tmp/x.sock`).
pub fn final_target<'a>(records: &'a [serde_json::Value], target: &str) -> Option<&'a serde_json::Value> {
    records.iter().find(|r| r["type"] == "target" && r["final"] == true && r["target"] == target)
}

/// Count of `errno_name` failures in a target record (0 when absent).
pub fn errno_count(target: Option<&serde_json::Value>, errno_name: &str) -> u64 {
    target.and_then(|t| t["errors"][errno_name]["count"].as_u64()).unwrap_or(0)
}

/// The final `stats` record.
pub fn final_stats(records: &[serde_json::Value]) -> Option<&serde_json::Value> {
    records.iter().find(|r| r["type"] == "stats" && r["final"] == true)
}

/// Node-wide TcpExt counters (what `nstat` reads), e.g. `ListenOverflows`.
pub fn tcpext() -> BTreeMap<String, u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").expect("read /proc/net/netstat");
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next().expect("TcpExt names"), lines.next().expect("TcpExt values"));
    names.split_whitespace().zip(values.split_whitespace()).skip(1).map(|(n, v)| (n.to_string(), v.parse().unwrap_or(0))).collect()
}

/// Wait (at most 10 s) until the node-wide listen-overflow and SYN-retransmit counters have not
/// moved for a second: a previous test's leftover connections (SYNs and data still being
/// retransmitted) must not be counted as this test's.
pub fn tcpext_quiet() {
    let keys = ["ListenOverflows", "ListenDrops", "TCPSynRetrans"];
    let snap = || {
        let t = tcpext();
        keys.iter().map(|k| t.get(*k).copied().unwrap_or(0)).collect::<Vec<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = snap();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
        let now = snap();
        if now == last {
            return;
        }
        last = now;
    }
}

/// `after[name] - before[name]`.
pub fn tcpext_delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, name: &str) -> u64 {
    after[name] - before[name]
}

/// The final `tcp_listener` record for `listener` (e.g. `127.0.0.1:18000`).
pub fn final_listener<'a>(records: &'a [serde_json::Value], listener: &str) -> Option<&'a serde_json::Value> {
    records.iter().find(|r| r["type"] == "tcp_listener" && r["final"] == true && r["listener"] == listener)
}

/// Read a whole pipe (for commands whose output we want on failure).
pub fn read_all(mut r: impl Read) -> String {
    let mut s = String::new();
    let _ = r.read_to_string(&mut s);
    s
}

/// Timing-sensitive scenarios (a burst against a 0.5 s app) hold this so that other tests' load
/// on the 2-core machine does not stretch their burst past one request time. A file lock, so it
/// holds across test binaries and runners that use one process per test.
pub struct Exclusive {
    _lock: std::fs::File,
}

pub fn exclusive() -> Exclusive {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("tracer-e2e.lock"))
        .expect("open the e2e lock file");
    // SAFETY: flock on an fd we own; released when the file is closed (on drop).
    assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) }, 0, "flock");
    Exclusive { _lock: f }
}

/// POSTs (never retried) to nginx's `path` on its idle keep-alive connection to the upstream on
/// 127.0.0.1:`server_port`, each aimed at the instant the upstream closes it: `idle_s` after the
/// previous response, plus an offset searched for by bisection. A POST that went over the same
/// upstream connection was early (the upstream read it before its idle timeout); one that needed
/// a new connection was late (nginx had already seen the close). In between is the race: a 502.
/// At most `max_posts` after the first; stops after `hits` 502s. Returns status → count.
pub fn aim_keepalive_races(port: u16, path: &str, server_port: u16, idle_s: f64, max_posts: usize, hits: u64) -> BTreeMap<u16, u64> {
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    *statuses.entry(post(port, path)).or_default() += 1;
    let mut last = std::time::Instant::now();
    let mut conn = upstream_conn_port(server_port);
    let (mut lo, mut hi) = (-2000.0f64, 1000.0f64); // µs around idle_s
    for _ in 0..max_posts {
        let offset_us = (lo + hi) / 2.0;
        sleep_until(last + Duration::from_secs_f64(idle_s + offset_us / 1e6));
        let status = post(port, path);
        last = std::time::Instant::now();
        *statuses.entry(status).or_default() += 1;
        let now = upstream_conn_port(server_port);
        eprintln!("keep-alive race: offset {offset_us:+.0} µs → {status}, upstream connection {conn:?} → {now:?}");
        if status == 502 {
            if statuses[&502] >= hits {
                break;
            }
        } else if conn.is_none() || now.is_none() {
            // No idle connection to reuse (the last POST broke it): nothing learnt.
        } else if now == conn {
            lo = offset_us; // reused: early
        } else {
            hi = offset_us; // a new connection: late
        }
        if hi - lo < 60.0 {
            (lo, hi) = (lo - 150.0, hi + 150.0); // jitter moved the window: look around again
        }
        conn = now;
    }
    statuses
}

/// The local port of nginx's ESTABLISHED connection to 127.0.0.1:`server_port` (/proc/net/tcp).
pub fn upstream_conn_port(server_port: u16) -> Option<u16> {
    let text = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let remote = format!("0100007F:{server_port:04X}");
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&remote.as_str()) && f.get(3) == Some(&"01")).then(|| u16::from_str_radix(f[1].split(':').nth(1)?, 16).ok()).flatten()
    })
}

/// Sleep until `at`, the last 2 ms spinning (thread::sleep alone overshoots by more than the
/// race window).
pub fn sleep_until(at: Instant) {
    if let Some(d) = at.checked_duration_since(Instant::now()).and_then(|d| d.checked_sub(Duration::from_millis(2))) {
        std::thread::sleep(d);
    }
    while Instant::now() < at {
        std::hint::spin_loop();
    }
}
