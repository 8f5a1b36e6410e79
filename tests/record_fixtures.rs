//! Records the replay fixtures in tests/fixtures/: one small recording per verdict kind, each of a
//! real scenario (real nginx, real gunicorn / uwsgi / python upstreams, real kernel) driven by a
//! small, bounded load while `tracer record` runs. Root only, and #[ignore]d: fixtures are
//! recorded on purpose, not on every test run.
//!
//! ```sh
//! sudo TRACER_WRITE_FIXTURES=1 cargo test --release --test record_fixtures -- --ignored --test-threads 1
//! ```
//!
//! Each test asserts that the scenario failed as designed (nginx's access log has ≥ 1 502/504),
//! that the live report explains every one of them with the expected verdict kind and nothing
//! else, and that `tracer report` of the recording gives the same verdicts. Only then, with
//! `TRACER_WRITE_FIXTURES=1`, is the recording copied to `tests/fixtures/<kind>.rec`. The
//! expected reports beside them (`<kind>.expected.json`) are written by `tests/fixtures.rs`
//! (`TRACER_UPDATE_FIXTURES=1`), which replays every fixture on any host without root.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tracer_e2e::*;

const TRACER: &str = env!("CARGO_BIN_EXE_tracer");

/// What one recording run gave.
struct Recorded {
    statuses: BTreeMap<u16, u64>,
    live: Value,
}

fn fivexx(m: &BTreeMap<u16, u64>) -> u64 {
    m.get(&502).copied().unwrap_or(0) + m.get(&504).copied().unwrap_or(0)
}

/// Run `tracer record` on `nginx` while `drive` runs; check the scenario and the verdicts; copy
/// the recording to tests/fixtures/<kind>.rec when TRACER_WRITE_FIXTURES=1.
fn record(kind: &str, scratch: &Scratch, nginx: &Nginx, drive: impl FnOnce()) -> Recorded {
    let rec = scratch.path(&format!("{kind}.rec"));
    let pid = nginx.master_pid().to_string();
    let error_log = nginx.error_log.display().to_string();
    let started = Instant::now();
    let tracer = Tracer::start(TRACER, &["record", "-o", rec.to_str().unwrap(), "--json", "--pid", &pid, "--error-log", &error_log])
        .expect("tracer record attaches");
    drive();
    // Let the last events (closes, status lines) reach the tracer before it stops.
    std::thread::sleep(Duration::from_millis(300));
    let records = tracer.stop().expect("tracer record stops cleanly");
    let live = records.last().cloned().expect("the report");
    let statuses = nginx.statuses();
    let n = fivexx(&statuses);
    let size = std::fs::metadata(&rec).map(|m| m.len()).unwrap_or(0);
    let counted: u64 = live["verdicts"].as_array().map_or(0, |v| v.iter().map(|v| v["count"].as_u64().unwrap_or(0)).sum());
    eprintln!(
        "FIXTURE {kind}: nginx statuses {statuses:?} (5xx {n}); report total_5xx {} explained {} unexplained {}; verdict count {counted}; \
         {size} bytes; {:.1} s",
        live["total_5xx"],
        live["explained"],
        live["unexplained"].as_array().map_or(0, |u| u.len()),
        started.elapsed().as_secs_f64()
    );
    for v in live["verdicts"].as_array().into_iter().flatten() {
        eprintln!("  verdict {} on {} × {}: {}\n    fix: {}", v["kind"], v["target"], v["count"], v["proof"], v["fix"]);
    }
    assert!(n >= 1, "{kind}: the scenario must make nginx answer at least one 502/504: {statuses:?}");
    assert_eq!(live["total_5xx"], n, "{kind}: every 502/504 in nginx's access log seen in the kernel");
    assert_eq!(live["explained"], n, "{kind}: every one explained: {}", live["unexplained"]);
    assert_eq!(live["unexplained"].as_array().map(|u| u.len()), Some(0), "{kind}: {}", live["unexplained"]);
    assert_eq!(counted, n, "{kind}: verdict counts == nginx 5xx");
    for v in live["verdicts"].as_array().unwrap() {
        assert_eq!(v["kind"], kind, "{kind}: the verdict is the scenario's cause: {v}");
    }

    // The recording replays to the same verdicts.
    let out = Command::new(TRACER).arg("report").arg(&rec).arg("--json").output().expect("tracer report runs");
    assert!(out.status.success(), "{kind}: tracer report: {}", String::from_utf8_lossy(&out.stderr));
    let replayed: Value = serde_json::from_slice(&out.stdout).expect("report JSON");
    for key in ["total_5xx", "explained", "verdicts", "unexplained"] {
        assert_eq!(replayed[key], live[key], "{kind}: `tracer report` reproduces the live {key}");
    }

    if std::env::var("TRACER_WRITE_FIXTURES").as_deref() == Ok("1") {
        let dest = repo_root().join("tests/fixtures").join(format!("{kind}.rec"));
        std::fs::copy(&rec, &dest).expect("copy the fixture");
        eprintln!("FIXTURE {kind}: written to {}", dest.display());
    }
    Recorded { statuses, live }
}

fn unix_upstream(sock: &Path) -> String {
    format!("unix:{}:", sock.display())
}

fn nginx_to(scratch: &Scratch, upstream: &str, location_extra: &str) -> Nginx {
    Nginx::start(scratch, &NginxOpts { upstream, location_extra, ..Default::default() }).expect("nginx starts")
}

/// `n` GETs one after the other, each on its own connection.
fn gets(port: u16, path: &str, n: usize) {
    for _ in 0..n {
        burst_path(port, path, 1);
    }
}

#[test]
#[ignore = "root only: records tests/fixtures/listen_queue_full.rec"]
fn listen_queue_full() {
    require_root();
    let _serial = exclusive();
    let scratch = Scratch::new("fx-listen_queue_full");
    let sock = scratch.path("app.sock");
    // backlog 4: a full queue holds 5; one sync worker busy 0.5 s per request.
    let _g =
        Gunicorn::start(&GunicornOpts { bind: format!("unix:{}", sock.display()), backlog: 4, workers: 1, app_sleep: 0.5, ..Default::default() })
            .expect("gunicorn starts");
    let nginx = nginx_to(&scratch, &unix_upstream(&sock), "");
    record("listen_queue_full", &scratch, &nginx, || {
        burst_path(nginx.port, "/", 16);
    });
}

#[test]
#[ignore = "root only: records tests/fixtures/socket_missing.rec"]
fn socket_missing() {
    require_root();
    let _serial = exclusive();
    let scratch = Scratch::new("fx-socket_missing");
    let nginx = nginx_to(&scratch, &unix_upstream(&scratch.path("absent.sock")), "");
    record("socket_missing", &scratch, &nginx, || gets(nginx.port, "/", 5));
}

#[test]
#[ignore = "root only: records tests/fixtures/permission_denied.rec"]
fn permission_denied() {
    require_root();
    let _serial = exclusive();
    let scratch = Scratch::new("fx-permission_denied");
    let sock = scratch.path("app.sock");
    let _g =
        Gunicorn::start(&GunicornOpts { bind: format!("unix:{}", sock.display()), app_sleep: 0.0, ..Default::default() }).expect("gunicorn starts");
    // Mode 000: nginx's workers run as nobody (root master, no `user` line) and may not connect.
    set_mode(&sock, 0o000);
    let nginx = nginx_to(&scratch, &unix_upstream(&sock), "");
    let workers = nginx.worker_pids();
    let uid = std::fs::read_to_string(format!("/proc/{}/status", workers[0])).unwrap();
    assert!(!uid.lines().any(|l| l.starts_with("Uid:\t0\t")), "nginx workers must not run as root:\n{uid}");
    record("permission_denied", &scratch, &nginx, || gets(nginx.port, "/", 5));
}

#[test]
#[ignore = "root only: records tests/fixtures/nothing_listening.rec"]
fn nothing_listening() {
    require_root();
    let _serial = exclusive();
    let scratch = Scratch::new("fx-nothing_listening");
    // Both ways nothing listens: a TCP port (a non-blocking connect refused by a RST in
    // SYN_SENT) and a unix socket file whose listener is gone (connect() ECONNREFUSED).
    let tcp = format!("127.0.0.1:{}", free_port());
    let stale = scratch.path("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind a unix socket"));
    set_mode(&stale, 0o777);
    let server_extra = format!("location /unix {{ proxy_pass http://unix:{}:; }}", stale.display());
    let nginx = Nginx::start(&scratch, &NginxOpts { upstream: &tcp, server_extra: &server_extra, ..Default::default() }).expect("nginx starts");
    let r = record("nothing_listening", &scratch, &nginx, || {
        gets(nginx.port, "/", 3);
        gets(nginx.port, "/unix", 3);
    });
    let targets: Vec<&str> = r.live["verdicts"].as_array().unwrap().iter().map(|v| v["target"].as_str().unwrap()).collect();
    assert_eq!(targets.len(), 2, "one verdict per target: {targets:?}");
    assert_eq!(fivexx(&r.statuses), 6);
}

#[test]
#[ignore = "root only: records tests/fixtures/connect_error.rec"]
fn connect_error() {
    require_root();
    let _serial = exclusive();
    let scratch = Scratch::new("fx-connect_error");
    // Two connect() errors that are none of the named kinds: a socket path whose parent is a
    // regular file (ENOTDIR), and a path bound by a datagram socket (EPROTOTYPE for nginx's
    // stream connect).
    let file = scratch.path("not-a-dir");
    std::fs::write(&file, b"").unwrap();
    let dgram_path = scratch.path("dgram.sock");
    let _dgram = std::os::unix::net::UnixDatagram::bind(&dgram_path).expect("bind a datagram socket");
    set_mode(&dgram_path, 0o777);
    let server_extra = format!("location /dgram {{ proxy_pass http://unix:{}:; }}", dgram_path.display());
    let upstream = unix_upstream(&file.join("app.sock"));
    let nginx = Nginx::start(&scratch, &NginxOpts { upstream: &upstream, server_extra: &server_extra, ..Default::default() }).expect("nginx starts");
    let r = record("connect_error", &scratch, &nginx, || {
        gets(nginx.port, "/", 3);
        gets(nginx.port, "/dgram", 3);
    });
    let proofs: Vec<&str> = r.live["verdicts"].as_array().unwrap().iter().map(|v| v["proof"].as_str().unwrap()).collect();
    assert_eq!(proofs.len(), 2, "one verdict per target: {proofs:?}");
    assert_eq!(fivexx(&r.statuses), 6);
}

#[test]
#[ignore = "root only: records tests/fixtures/tcp_accept_queue_full.rec"]
fn tcp_accept_queue_full() {
    require_root();
    let _serial = exclusive(); // node-wide TCP counters
    let scratch = Scratch::new("fx-tcp_accept_queue_full");
    let bind = format!("127.0.0.1:{}", free_port());
    let _g =
        Gunicorn::start(&GunicornOpts { bind: bind.clone(), backlog: 4, workers: 1, app_sleep: 0.5, ..Default::default() }).expect("gunicorn starts");
    // Below the first SYN retransmit (1 s): every dropped SYN becomes a 504.
    let nginx = nginx_to(&scratch, &bind, "proxy_connect_timeout 1s;");
    tcpext_quiet();
    record("tcp_accept_queue_full", &scratch, &nginx, || {
        burst_path(nginx.port, "/", 20);
    });
}

/// A network namespace joined to the host by a veth pair (host 10.250.0.1, namespace
/// 10.250.0.2), deleted on drop.
struct Netns {
    name: String,
    host_if: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Netns {
    fn create() -> Netns {
        let id = std::process::id() % 100_000;
        let (name, host_if, ns_if) = (format!("trfx{id}"), format!("trfxh{id}"), format!("trfxn{id}"));
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        let addrs = String::from_utf8_lossy(&Command::new("ip").args(["-o", "addr"]).output().expect("ip addr").stdout).into_owned();
        assert!(!addrs.contains("10.250.0."), "10.250.0.0/24 is already in use on this host:\n{addrs}");
        let ns = Netns { name: name.clone(), host_if: host_if.clone() };
        ip(&["netns", "add", &name]);
        ip(&["link", "add", &host_if, "type", "veth", "peer", "name", &ns_if]);
        ip(&["link", "set", &ns_if, "netns", &name]);
        ip(&["addr", "add", "10.250.0.1/24", "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&["netns", "exec", &name, "ip", "addr", "add", "10.250.0.2/24", "dev", &ns_if]);
        ip(&["netns", "exec", &name, "ip", "link", "set", &ns_if, "up"]);
        ip(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.host_if]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

#[test]
#[ignore = "root only: records tests/fixtures/connect_timeout.rec"]
fn connect_timeout() {
    require_root();
    let _serial = exclusive();
    let netns = Netns::create();
    let scratch = Scratch::new("fx-connect_timeout");
    // In the namespace: a listener with backlog 1 that never accepts. From the host it is a
    // remote listener (not found by sock_diag here), so a connect that gets no answer is a plain
    // connect timeout, not this host's accept queue.
    let port = free_port();
    let ready = scratch.path("listening");
    let script = "import socket, sys, time\n\
                  s = socket.socket(); s.bind(('10.250.0.2', int(sys.argv[1]))); s.listen(1)\n\
                  open(sys.argv[2], 'w').close()\n\
                  time.sleep(120)\n";
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &netns.name, "python3", "-c", script, &port.to_string()]).arg(&ready);
    let listener = Proc::spawn("netns listener", &mut cmd).expect("listener starts");
    wait_for("the namespace's listener", Duration::from_secs(10), || ready.exists()).unwrap();
    // Fill its accept queue (backlog 1 holds 2) one completed handshake at a time, before the
    // tracer starts: no half-open connection is left to drop a final ACK later.
    let addr: SocketAddr = format!("10.250.0.2:{port}").parse().unwrap();
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("fill the accept queue"));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_err(), "the accept queue is full: a third SYN is dropped");
    std::thread::sleep(Duration::from_millis(200));
    let nginx = nginx_to(&scratch, &addr.to_string(), "proxy_connect_timeout 1s;");
    record("connect_timeout", &scratch, &nginx, || {
        burst_path(nginx.port, "/", 3);
    });
    drop(nginx);
    drop(held);
    drop(listener);
}

#[test]
#[ignore = "root only: records tests/fixtures/worker_killed.rec"]
fn worker_killed() {
    require_root();
    let _serial = exclusive();
    let scratch = Scratch::new("fx-worker_killed");
    let sock = scratch.path("uwsgi.sock");
    // uwsgi's own timeout: --harakiri 2 kills (SIGKILL from the uwsgi master) a worker still in
    // a request after 2 s; the app takes 6 s.
    let _u = Uwsgi::start(&sock, 2, 6.0, &["--harakiri", "2"]).expect("uwsgi starts");
    let nginx = nginx_to(&scratch, &unix_upstream(&sock), "");
    record("worker_killed", &scratch, &nginx, || {
        burst_path(nginx.port, "/", 2);
    });
}

/// Two POSTs pipelined on one connection to nginx; the statuses of the responses.
fn post_pair(port: u16) -> Vec<u16> {
    use std::io::Write;
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to nginx");
    s.set_nodelay(true).expect("nodelay");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("read timeout");
    let one = "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi";
    let two = "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi";
    s.write_all(format!("{one}{two}").as_bytes()).expect("send");
    read_all(s).split("HTTP/1.1 ").skip(1).filter_map(|r| r.get(..3)?.parse().ok()).collect()
}

#[test]
#[ignore = "root only: records tests/fixtures/worker_recycled.rec"]
fn worker_recycled() {
    require_root();
    let _serial = exclusive();
    let scratch = Scratch::new("fx-worker_recycled");
    let sock = scratch.path("uwsgi.sock");
    // HTTP/1.1 keep-alive upstream whose workers exit (no signal) after each request once they
    // have lived 1 s: each exit cuts the keep-alive connection nginx may be reusing.
    let _uwsgi = Uwsgi::start_http11(&sock, 2, 0.005, &["--max-requests", "1", "--min-worker-lifetime", "1"]).unwrap();
    let nginx = nginx_keepalive_to(&scratch, &sock).unwrap();
    let port = nginx.port;
    record("worker_recycled", &scratch, &nginx, || {
        // Pairs of POSTs pipelined on one client connection: nginx sends the second over the
        // upstream connection the first just went over (its keep-alive cache is LIFO), in the
        // same instant it has relayed the first response. A worker past its 1 s lifetime exits
        // after answering the first, with the second on its connection. Bounded: at most 20
        // pairs, 300 ms apart; stop after the second 502.
        let mut n502 = 0;
        for _ in 0..20 {
            let statuses = post_pair(port);
            eprintln!("recycling: pipelined pair → {statuses:?}");
            n502 += statuses.iter().filter(|s| **s == 502).count();
            if n502 >= 2 {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
}

#[test]
#[ignore = "root only: records tests/fixtures/keepalive_timeout_mismatch.rec"]
fn keepalive_timeout_mismatch() {
    require_root();
    let _serial = exclusive(); // the race window is ~0.1 ms: keep the machine quiet
    const IDLE: f64 = 1.0;
    let scratch = Scratch::new("fx-keepalive_timeout_mismatch");
    let (_server, server_port, nginx) = keepalive_upstream(&scratch, IDLE).unwrap();
    record("keepalive_timeout_mismatch", &scratch, &nginx, || {
        // At most 20 POSTs after the first; stop after the second 502 (see aim_keepalive_races).
        let statuses = aim_keepalive_races(nginx.port, "/", server_port, IDLE, 20, 2);
        assert!(statuses.get(&502).is_some_and(|n| *n > 0), "the race must be hit: {statuses:?}");
    });
}

#[test]
#[ignore = "root only: records tests/fixtures/upstream_closed.rec"]
fn upstream_closed() {
    require_root();
    let _serial = exclusive();
    let scratch = Scratch::new("fx-upstream_closed");
    let port = free_port();
    let mut cmd = Command::new("python3");
    cmd.arg(repo_root().join("tests/apps/close_server.py")).arg("127.0.0.1").arg(port.to_string());
    let _server = Proc::spawn("close_server", &mut cmd).unwrap();
    wait_for("closing upstream", Duration::from_secs(10), || TcpStream::connect(("127.0.0.1", port)).is_ok()).unwrap();
    let nginx = nginx_to(&scratch, &format!("127.0.0.1:{port}"), "");
    record("upstream_closed", &scratch, &nginx, || gets(nginx.port, "/", 5));
}

#[test]
#[ignore = "root only: records tests/fixtures/proxy_timeout.rec"]
fn proxy_timeout() {
    require_root();
    let _serial = exclusive();
    let scratch = Scratch::new("fx-proxy_timeout");
    let sock = scratch.path("app.sock");
    let _g =
        Gunicorn::start(&GunicornOpts { bind: format!("unix:{}", sock.display()), workers: 2, app_sleep: 3.0, backlog: 64, ..Default::default() })
            .expect("gunicorn starts");
    let nginx = nginx_to(&scratch, &unix_upstream(&sock), "proxy_read_timeout 1s;");
    record("proxy_timeout", &scratch, &nginx, || {
        burst_path(nginx.port, "/", 2);
    });
}
