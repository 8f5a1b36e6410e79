//! nginx terminating TLS (HTTP/1.1 and HTTP/2 on one listener) in front of gunicorn on a unix
//! socket with `--backlog 4`: a burst overflows the listen queue, nginx answers 502, and the
//! status is encrypted in its writev(). Every 502 must still be seen (the `tls_status` uprobe on
//! the libssl nginx maps) and explained as `listen_queue_full`, count equal to nginx's access log,
//! per protocol. Real kernel, nginx, gunicorn, curl and h2load on loopback. Root only.

use std::process::Command;

use serde_json::Value;
use tracer_e2e::*;

const TRACER: &str = env!("CARGO_BIN_EXE_tracer");

struct Setup {
    _scratch: Scratch,
    _gunicorn: Gunicorn,
    nginx: Nginx,
}

fn start(name: &str) -> Setup {
    let scratch = Scratch::new(name);
    let (cert, key) = (scratch.path("cert.pem"), scratch.path("key.pem"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    let sock = scratch.path("app.sock");
    let gunicorn =
        Gunicorn::start(&GunicornOpts { bind: format!("unix:{}", sock.display()), backlog: 4, ..Default::default() }).expect("gunicorn starts");
    let upstream = format!("unix:{}:", sock.display());
    let server_extra = format!("ssl_certificate {}; ssl_certificate_key {};", cert.display(), key.display());
    let nginx =
        Nginx::start(&scratch, &NginxOpts { upstream: &upstream, listen_params: "ssl http2", server_extra: &server_extra, ..Default::default() })
            .expect("nginx starts");
    Setup { _scratch: scratch, _gunicorn: gunicorn, nginx }
}

/// `n` HTTPS HTTP/1.1 requests at once (curl --parallel): the status of each.
fn https1_burst(port: u16, n: usize) -> Vec<u16> {
    let url = format!("https://127.0.0.1:{port}/");
    let out = Command::new("curl")
        .args(["--http1.1", "-k", "-s", "--parallel", "--parallel-immediate", "--parallel-max", &n.to_string(), "-w", "%{http_code}\\n"])
        .args(std::iter::repeat_n(["-o", "/dev/null", url.as_str()], n).flatten())
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// h2load over TLS (ALPN h2): `n` requests on `c` connections, `m` streams at once on each.
fn h2load(port: u16, n: u32, c: u32, m: u32) -> String {
    let out = Command::new(find_program("h2load").expect("h2load (nghttp2-client) installed"))
        .args(["-n", &n.to_string(), "-c", &c.to_string(), "-m", &m.to_string()])
        .arg(format!("https://127.0.0.1:{port}/"))
        .output()
        .expect("h2load runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "h2load: {text}{}", String::from_utf8_lossy(&out.stderr));
    text
}

/// One traced phase: `drive` sends the load; returns (access-log 502s of this phase, the report).
fn traced_phase(s: &Setup, drive: impl FnOnce()) -> (u64, Value) {
    let before = s.nginx.count_status(502);
    let lines_before = s.nginx.statuses().values().sum::<u64>();
    let pid = s.nginx.master_pid().to_string();
    let tracer = Tracer::start(TRACER, &["diagnose", "--json", "--pid", &pid]).expect("tracer attaches");
    drive();
    let report = tracer.stop().expect("tracer stops cleanly").pop().expect("the report");
    assert!(s.nginx.statuses().values().sum::<u64>() > lines_before, "the phase's requests are in the access log");
    (s.nginx.count_status(502) - before, report)
}

/// Every 502 of the phase seen from `source`, explained as `listen_queue_full`, nothing else.
fn check(what: &str, n502: u64, report: &Value, source: &str) {
    eprintln!("{what}: access-log 502s {n502}; report {}", serde_json::to_string(report).unwrap());
    assert!(n502 > 0, "{what}: the burst must overflow the backlog of 4");
    assert_eq!(report["total_5xx"].as_u64(), Some(n502), "{what}: tracer 502/504 == access-log 502s");
    assert_eq!(report["status_sources"][source].as_u64(), Some(n502), "{what}: every one read by {source}: {}", report["status_sources"]);
    assert_eq!(report["status_sources"].as_object().map(|o| o.len()), Some(1), "{what}: one source");
    assert_eq!(report["explained"].as_u64(), Some(n502), "{what}: all explained");
    assert_eq!(report["unexplained"].as_array().map(Vec::len), Some(0), "{what}: none unexplained");
    let verdicts = report["verdicts"].as_array().expect("verdicts");
    assert_eq!(verdicts.len(), 1, "{what}: one verdict");
    assert_eq!(verdicts[0]["kind"], "listen_queue_full", "{what}");
    assert_eq!(verdicts[0]["count"].as_u64(), Some(n502), "{what}");
    assert_eq!(report["absorbed"].as_object().map(|o| o.len()), Some(0), "{what}: nothing absorbed: {}", report["absorbed"]);
    assert!(report.get("status_sources_missing").is_none(), "{what}: every status probe attached: {report}");
    assert_eq!(report["lost"].as_u64(), Some(0), "{what}: nothing lost");
}

#[test]
fn tls_http1_and_http2_502s_are_read_before_encryption_and_explained() {
    require_root();
    let _serial = exclusive();
    let s = start("tls");
    let port = s.nginx.port;

    // (a) HTTPS, HTTP/1.1: 30 requests at once against 1 worker + a queue of 4 (+1).
    let mut clients = Vec::new();
    let (n502, report) = traced_phase(&s, || clients = https1_burst(port, 30));
    assert_eq!(clients.len(), 30, "every curl request answered: {clients:?}");
    assert_eq!(clients.iter().filter(|&&c| c == 502).count() as u64, n502, "curl saw the access log's 502s: {clients:?}");
    check("TLS HTTP/1.1", n502, &report, "tls_uprobe_http1");

    // (b) HTTP/2 over TLS: 40 requests, 4 connections, 10 streams at once on each.
    let mut summary = String::new();
    let (n502, report) = traced_phase(&s, || summary = h2load(port, 40, 4, 10));
    assert!(summary.contains("40 done") && summary.contains("0 errored"), "h2load: every request answered: {summary}");
    check("TLS HTTP/2", n502, &report, "tls_uprobe_http2");
}
