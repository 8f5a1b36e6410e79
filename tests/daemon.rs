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
    // A failed bpftool must not read as "no program left".
    let out = Command::new(find_program("bpftool").unwrap()).args(["prog", "show", "--json"]).output().unwrap();
    assert!(out.status.success(), "bpftool prog show: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool prog show --json gives JSON");
    v.as_array()
        .expect("a JSON array of programs")
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
    let ready = ready_file_path();
    let mut cmd = Command::new(TRACER);
    cmd.args(["daemon", "--listen", &listen]).arg("--ready-file").arg(&ready).args(extra).stdout(Stdio::null()).stderr(Stdio::piped());
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
    wait_for("daemon attached (its ready file)", Duration::from_secs(30), || ready.exists()).unwrap_or_else(|e| {
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
    let (n502, n200) = (nginx.count_status(502), nginx.count_status(200));
    // The scenario first, from nginx's log: every request logged, and the queue overflowed.
    assert_eq!(n502 + n200, 100, "every request answered 200 or 502: {:?}", nginx.statuses());
    assert!(n502 > 0, "the scenario must overflow the queue: {:?}", nginx.statuses());
    let target = format!("unix:{}", sock.display());
    let lbl = format!("\"{target}\"");
    let counts = |m: &str| {
        (
            metric(m, "tracer_listen_overflows_total", &[&lbl, "unix_eagain"]),
            metric(m, "tracer_http_5xx_total", &[&lbl, "status=\"502\""]),
            metric(m, "tracer_upstream_ttfb_seconds_count", &[&lbl]),
        )
    };
    // The daemon folds events in as they come: wait (at least 1.5 s, at most 20) until two
    // scrapes 500 ms apart agree, then compare. Waiting for them to settle, not for them to
    // equal nginx's, so an overcount still fails.
    std::thread::sleep(Duration::from_millis(1500));
    let mut m = scrape(d.port, "/metrics");
    wait_for("the metrics to settle", Duration::from_secs(20), || {
        std::thread::sleep(Duration::from_millis(500));
        let next = scrape(d.port, "/metrics");
        let settled = counts(&next) == counts(&m);
        m = next;
        settled
    })
    .unwrap();
    let (overflow, http502, ttfb_count) = counts(&m);
    eprintln!("nginx 502 {n502} 200 {n200}; metrics overflow {overflow} 5xx {http502} ttfb count {ttfb_count}");
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
    assert!(mine.len() >= PROGRAMS.len(), "the second daemon's programs are loaded: {mine:?}");
    let url = nginx.url();
    let load = std::thread::spawn(move || ab(&url, 4000, 8).unwrap());
    // Kill it once the load is under way (some of the 4000 answered), and check that it still
    // was when the signal went out.
    wait_for("the load to start", Duration::from_secs(20), || nginx.statuses().values().sum::<u64>() > 200 + 50).unwrap();
    // SAFETY: a signal to the daemon's process group, which this test started.
    assert_eq!(unsafe { libc::kill(-(d.proc.pid() as i32), libc::SIGKILL) }, 0);
    let (at_kill, running) = (nginx.statuses().values().sum::<u64>(), !load.is_finished());
    let killed_at = std::time::Instant::now();
    assert!(d.proc.stop(libc::SIGKILL, Duration::from_secs(10)), "the daemon dies on SIGKILL");
    eprintln!("SIGKILL with {at_kill} of 4200 requests answered; the daemon was gone {:?} later", killed_at.elapsed());
    assert!(running && at_kill < 200 + 4000, "killed in the middle of the traffic ({at_kill} of 4200 answered)");
    load.join().unwrap();
    assert_eq!(nginx.statuses().keys().copied().collect::<Vec<_>>(), vec![200], "traffic unaffected: {:?}", nginx.statuses());
    assert_eq!(nginx.count_status(200), 4200);
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
        assert_eq!(out.status.code(), Some(1), "{what}: must fail with exit 1: {err}");
        assert!(err.contains(expect), "{what}: clear error, got: {err}");
        assert!(!err.contains("panicked"), "{what}: {err}");
        assert!(!err.contains("watching"), "{what}: nothing attached");
    }
    assert_eq!(our_programs(), before, "nothing left attached");
}

/// Ids of the BPF maps process `pid` holds (from its fds' fdinfo): the daemon's own maps, not
/// those of another tracer that may be running on the machine.
fn map_ids_of(pid: u32) -> BTreeSet<u64> {
    let dir = format!("/proc/{pid}/fdinfo");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|f| std::fs::read_to_string(f.ok()?.path()).ok())
        .filter_map(|info| info.lines().find_map(|l| l.strip_prefix("map_id:")?.trim().parse().ok()))
        .collect()
}

/// (entries, max_entries) of each of `pid`'s maps named `name` (bpftool truncates names to 15
/// bytes).
fn map_entries(pid: u32, name: &str) -> Vec<(u64, u64)> {
    let bpftool = find_program("bpftool").unwrap();
    map_ids_of(pid)
        .into_iter()
        .filter_map(|id| {
            let show = Command::new(&bpftool).args(["map", "show", "id", &id.to_string(), "--json"]).output().unwrap();
            assert!(show.status.success(), "bpftool map show id {id}: {}", String::from_utf8_lossy(&show.stderr));
            let m: serde_json::Value = serde_json::from_slice(&show.stdout).expect("bpftool map show --json gives JSON");
            let n = m["name"].as_str().unwrap_or_default();
            if n.is_empty() || !name.starts_with(n) {
                return None;
            }
            let dump = Command::new(&bpftool).args(["map", "dump", "id", &id.to_string(), "--json"]).output().unwrap();
            // A dump that failed must not read as an empty map.
            assert!(dump.status.success(), "bpftool map dump {name}: {}", String::from_utf8_lossy(&dump.stderr));
            let v: serde_json::Value = serde_json::from_slice(&dump.stdout).expect("bpftool map dump --json gives JSON");
            let entries = v.as_array().expect("a JSON array of entries").len();
            Some((entries as u64, m["max_entries"].as_u64().expect("max_entries")))
        })
        .collect()
}

/// VmRSS of a live process (a process that is gone must not read as 0 KiB).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"))
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:").and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok()))
        .unwrap_or_else(|| panic!("no VmRSS for pid {pid}"))
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
        assert!(out.status.success(), "churn.py failed: {}", out.status);
        done += String::from_utf8_lossy(&out.stdout).trim().parse::<u64>().expect("churn.py prints its count");
    }
    std::thread::sleep(Duration::from_secs(1));
    let rss_end = rss_kib(d.proc.pid());
    let m = scrape(d.port, "/metrics");
    let connects = metric(&m, "tracer_upstream_connects_total", &[]);
    // Events the kernel side could not hand over (a ring buffer full while the machine is busy)
    // are counted, never silent: a connect is either traced or in this count.
    let lost = metric(&m, "tracer_events_lost_total", &[]);
    eprintln!(
        "churn: {done} connections, {connects} connects traced, {lost} events lost; daemon RSS {rss_start} → {rss_end} KiB; events {}",
        metric(&m, "tracer_events_total", &[])
    );
    // The scenario first: the churn happened, and went through the daemon's programs (every
    // churn connect() is a python3 one; other python3 processes can only add to it).
    assert!(done >= 200_000, "churned {done} connections");
    assert!(connects + lost >= done, "the daemon traced the churn: {connects} connects + {lost} lost for {done} connections");
    assert!(connects >= done / 2, "most of the churn was traced: {connects} of {done}");
    // Every per-connection map is sized by --map-entries (the kernel then holds an LRU map to
    // it), and after 200,000 connections only what is live now is left in them: state that
    // leaked at even 1 in 3,000 connections would leave more than 64 entries (up to the cap).
    // churn.py exits only once it has accepted every connection: a connection its listener
    // still held unaccepted at exit is destroyed without accept(), and its ACCEPT_QUEUE entry
    // stays until the LRU evicts it (22 of them in one run before churn.py waited).
    let mut worst = 0;
    for name in ["CONNECTING", "CONNS", "SK_BY_FD", "ACCEPT_QUEUE"] {
        let maps = map_entries(d.proc.pid(), name);
        assert_eq!(maps.len(), 1, "the daemon has one map {name}: {maps:?}");
        let cap = if name == "SK_BY_FD" { tracer_common::SK_BY_FD_FACTOR * CAP } else { CAP } as u64;
        let (n, max) = maps[0];
        eprintln!("map {name}: {n} entries left (max {max})");
        assert_eq!(max, cap, "{name}: max_entries from --map-entries");
        assert!(n <= 64, "{name}: {n} entries left after the churn ended");
        worst = worst.max(n);
    }
    eprintln!("fullest map after the churn: {worst}/{CAP}");
    assert!(rss_end <= RSS_CAP_KIB, "daemon RSS {rss_end} KiB over {RSS_CAP_KIB}");
}
