//! `tracer daemon`: /metrics equal nginx's own counts, a clean detach on SIGTERM (no program of
//! ours left), traffic untouched by the tracer dying, bad input refused before attaching, and
//! bounded memory under connection churn.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use tracer_e2e::*;

const TRACER: &str = env!("CARGO_BIN_EXE_tracer");
/// Names of our kernel programs (bpftool shows the first 15 bytes).
const PROGRAMS: &[&str] = &["connect_enter", "connect_exit", "listen_enter", "tcp_set_state", "sock_send", "sock_recv", "status_line", "close_enter"];

/// Ids of loaded BPF programs with one of our names.
fn our_programs() -> BTreeSet<u64> {
    let out = Command::new(find_program("bpftool").unwrap()).args(["prog", "show", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Array(vec![]));
    v.as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"].as_str().is_some_and(|n| PROGRAMS.iter().any(|o| o.starts_with(n) && n.len() >= 8)))
        .filter_map(|p| p["id"].as_u64())
        .collect()
}

fn scrape(port: u16, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Sum of a metric's samples whose label text contains every `want`.
fn metric(text: &str, name: &str, want: &[&str]) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']) && want.iter().all(|w| l.contains(w)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

struct Daemon {
    proc: Proc,
    port: u16,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

fn daemon(extra: &[&str]) -> Daemon {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = Command::new(TRACER);
    cmd.args(["daemon", "--listen", &listen]).args(extra).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut proc = Proc::spawn("tracer daemon", &mut cmd).unwrap();
    let err = proc.child.stderr.take().unwrap();
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = stderr.clone();
    std::thread::spawn(move || {
        let _ = std::io::BufRead::lines(std::io::BufReader::new(err)).map_while(|l| l.ok()).try_for_each(|l| {
            sink.lock().unwrap().push_str(&(l + "\n"));
            Some(())
        });
    });
    wait_for("daemon attached", Duration::from_secs(30), || stderr.lock().unwrap().contains("watching")).unwrap_or_else(|e| {
        panic!("{e}: {}", stderr.lock().unwrap());
    });
    Daemon { proc, port, stderr }
}

#[test]
fn metrics_equal_nginx_counts() {
    require_root();
    let _serial = exclusive();
    let scratch = Scratch::new("daemon-metrics");
    let sock = scratch.path("app.sock");
    let _g = Gunicorn::start(&GunicornOpts { bind: format!("unix:{}", sock.display()), backlog: 16, ..Default::default() }).unwrap();
    let upstream = format!("unix:{}:", sock.display());
    let nginx = Nginx::start(&scratch, &NginxOpts { upstream: &upstream, ..Default::default() }).unwrap();
    let d = daemon(&[]);
    assert_eq!(scrape(d.port, "/healthz").lines().last(), Some("ok"));
    ab(&nginx.url(), 100, 100).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let m = scrape(d.port, "/metrics");
    let target = format!("unix:{}", sock.display());
    let lbl = format!("\"{target}\"");
    let (n502, n200) = (nginx.count_status(502), nginx.count_status(200));
    let overflow = metric(&m, "tracer_listen_overflows_total", &[&lbl, "unix_eagain"]);
    let http502 = metric(&m, "tracer_http_5xx_total", &[&lbl, "status=\"502\""]);
    let ttfb_count = metric(&m, "tracer_upstream_ttfb_seconds_count", &[&lbl]);
    eprintln!("nginx 502 {n502} 200 {n200}; metrics overflow {overflow} 5xx {http502} ttfb count {ttfb_count}");
    assert!(n502 > 0);
    assert_eq!(overflow, n502, "overflow counter == nginx 502s");
    assert_eq!(http502, n502, "5xx counter == nginx 502s");
    assert_eq!(ttfb_count, n200, "latency histogram count == upstream requests answered");
    assert!(m.contains("tracer_probe_attached{program=\"connect_enter\""), "probe status exported");
    assert!(m.contains("tracer_events_lost_total{reason=\"ringbuf_full\"} 0"), "loss exported");
}

#[test]
fn sigterm_detaches_and_traffic_is_untouched_even_by_a_crash() {
    require_root();
    let _serial = exclusive();
    let scratch = Scratch::new("daemon-life");
    let sock = scratch.path("app.sock");
    let _g =
        Gunicorn::start(&GunicornOpts { bind: format!("unix:{}", sock.display()), workers: 2, app_sleep: 0.0, backlog: 512, ..Default::default() })
            .unwrap();
    let upstream = format!("unix:{}:", sock.display());
    let nginx = Nginx::start(&scratch, &NginxOpts { upstream: &upstream, ..Default::default() }).unwrap();
    let before = our_programs();
    let mut d = daemon(&[]);
    let mine: BTreeSet<u64> = our_programs().difference(&before).copied().collect();
    assert!(mine.len() >= PROGRAMS.len(), "the daemon's programs are loaded: {mine:?}");
    ab(&nginx.url(), 200, 8).unwrap();
    assert!(d.proc.stop(libc::SIGTERM, Duration::from_secs(10)), "exits on SIGTERM");
    let left: Vec<u64> = our_programs().intersection(&mine).copied().collect();
    assert!(left.is_empty(), "no program of ours left after SIGTERM: {left:?}");
    assert!(d.stderr.lock().unwrap().contains("detached"));
    // A crash (SIGKILL) in the middle of traffic: every request still succeeds, nothing stays.
    let mut d = daemon(&[]);
    let mine: BTreeSet<u64> = our_programs().difference(&before).copied().collect();
    let url = nginx.url();
    let load = std::thread::spawn(move || ab(&url, 400, 8).unwrap());
    std::thread::sleep(Duration::from_millis(200));
    d.proc.stop(libc::SIGKILL, Duration::from_secs(10));
    load.join().unwrap();
    assert_eq!(nginx.statuses().keys().copied().collect::<Vec<_>>(), vec![200], "traffic unaffected: {:?}", nginx.statuses());
    assert_eq!(nginx.count_status(200), 600);
    wait_for("kernel to release a killed tracer's programs", Duration::from_secs(10), || our_programs().intersection(&mine).count() == 0).unwrap();
}

#[test]
fn bad_input_is_refused_before_attaching() {
    require_root();
    let _serial = exclusive();
    let dir = Scratch::new("daemon-bad");
    let before = our_programs();
    let bad_conf = dir.path("bad.toml");
    std::fs::write(&bad_conf, "listen = [not toml\n").unwrap();
    let unknown_key = dir.path("unknown.toml");
    std::fs::write(&unknown_key, "no-such-setting = 1\n").unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        ("malformed config", vec!["--config".into(), bad_conf.display().to_string()], "not valid"),
        ("unknown config key", vec!["--config".into(), unknown_key.display().to_string()], "not valid"),
        ("port in use", vec!["--listen".into(), busy_addr], "cannot listen"),
        ("unwritable events path", vec!["--events".into(), "/proc/no-such-dir/events.jsonl".into()], "cannot open the events file"),
    ];
    for (what, args, expect) in cases {
        let out = Command::new(TRACER).arg("daemon").args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{what}: must fail");
        assert!(err.contains(expect), "{what}: clear error, got: {err}");
        assert!(!err.contains("panicked"), "{what}: {err}");
        assert!(!err.contains("watching"), "{what}: nothing attached");
    }
    assert_eq!(our_programs(), before, "nothing left attached");
}

/// Entries of a loaded map, by name (bpftool truncates names to 15 bytes).
fn map_entries(name: &str) -> Vec<(u64, u64)> {
    let bpftool = find_program("bpftool").unwrap();
    let out = Command::new(&bpftool).args(["map", "show", "--json"]).output().unwrap();
    let maps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    maps.as_array()
        .unwrap()
        .iter()
        .filter(|m| m["name"].as_str().is_some_and(|n| name.starts_with(n) && !n.is_empty()))
        .map(|m| {
            let id = m["id"].as_u64().unwrap();
            let dump = Command::new(&bpftool).args(["map", "dump", "id", &id.to_string(), "--json"]).output().unwrap();
            let n = serde_json::from_slice::<serde_json::Value>(&dump.stdout).ok().and_then(|v| v.as_array().map(|a| a.len())).unwrap_or(0);
            (n as u64, m["max_entries"].as_u64().unwrap_or(0))
        })
        .collect()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:").and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok()))
        .unwrap_or(0)
}

#[test]
fn churn_keeps_maps_and_memory_under_their_caps() {
    require_root();
    let _serial = exclusive();
    const CAP: u32 = 4096;
    const RSS_CAP_KIB: u64 = 256 * 1024;
    let d = daemon(&["--comm", "python3", "--map-entries", &CAP.to_string()]);
    let rss_start = rss_kib(d.proc.pid());
    let per_process = 100_000;
    let churners: Vec<_> = (0..2)
        .map(|_| {
            Command::new("python3").arg(repo_root().join("tests/apps/churn.py")).arg(per_process.to_string()).stdout(Stdio::piped()).spawn().unwrap()
        })
        .collect();
    let mut done = 0u64;
    for c in churners {
        let out = c.wait_with_output().unwrap();
        done += String::from_utf8_lossy(&out.stdout).trim().parse::<u64>().unwrap_or(0);
    }
    std::thread::sleep(Duration::from_secs(1));
    let rss_end = rss_kib(d.proc.pid());
    let mut worst = 0;
    for name in ["CONNECTING", "CONNS", "SK_BY_FD", "ACCEPT_QUEUE"] {
        let maps = map_entries(name);
        assert!(!maps.is_empty(), "the daemon has no map {name}");
        let cap = if name == "SK_BY_FD" { tracer_common::SK_BY_FD_FACTOR * CAP } else { CAP } as u64;
        for (n, max) in maps {
            eprintln!("map {name}: {n} entries (max {max})");
            assert!(n <= cap && max == cap, "{name}: {n} entries, max_entries {max}, cap {cap}");
            worst = worst.max(n);
        }
    }
    let m = scrape(d.port, "/metrics");
    eprintln!(
        "churn: {done} connections; daemon RSS {rss_start} → {rss_end} KiB; fullest map {worst}/{CAP}; events {}",
        metric(&m, "tracer_events_total", &[])
    );
    assert!(done >= 200_000, "churned {done} connections");
    assert!(rss_end <= RSS_CAP_KIB, "daemon RSS {rss_end} KiB over {RSS_CAP_KIB}");
}
