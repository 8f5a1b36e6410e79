//! TCP upstreams: accept-queue overflow attributed to the listener, equal to the node's own
//! counters (nstat) taken around the run; per-request connect latency equal to nginx's
//! $upstream_connect_time; connect timeouts (504) blamed on the full queue; IPv6; ECONNREFUSED;
//! accept-queue wait. Real kernel, nginx, gunicorn, ab. Root only.

use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use tracer_e2e::*;

const TRACER: &str = env!("CARGO_BIN_EXE_tracer");

struct Run {
    records: Vec<serde_json::Value>,
    /// The verdict report of a `tracer diagnose` run alongside `watch`, when asked for.
    report: Option<serde_json::Value>,
    nginx: Nginx,
    gunicorn: Gunicorn,
    gunicorn_bind: String,
    overflows: u64,
    drops: u64,
    syn_retrans: u64,
    _scratch: Scratch,
}

/// gunicorn (`--backlog 8`, 1 sync worker) on `bind`, nginx in front, a traced burst of `n`.
/// With `diagnose`, a second tracer gives the verdict report of the same burst.
fn overflow_run(name: &str, host: &str, n: u32, app_sleep: f64, location_extra: &str, diagnose: bool) -> Run {
    let scratch = Scratch::new(name);
    let port = free_port();
    let bind = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    let gunicorn = Gunicorn::start(&GunicornOpts { bind: bind.clone(), backlog: 8, app_sleep, ..Default::default() }).expect("gunicorn starts");
    let nginx = Nginx::start(&scratch, &NginxOpts { upstream: &bind, location_extra, ..Default::default() }).expect("nginx starts");
    let pid = nginx.master_pid().to_string();
    let tracer = Tracer::watch(TRACER, &["--pid", &pid, "--connections", "--interval", "1s"]).expect("tracer attaches");
    let diagnosis = diagnose.then(|| Tracer::start(TRACER, &["diagnose", "--json", "--pid", &pid]).expect("diagnose attaches"));
    tcpext_quiet();
    let before = tcpext();
    ab(&nginx.url(), n, n).expect("ab runs");
    let after = tcpext();
    let records = tracer.stop().expect("tracer stops");
    let report = diagnosis.map(|d| d.stop().expect("diagnose stops").pop().expect("the report"));
    Run {
        records,
        report,
        overflows: tcpext_delta(&before, &after, "ListenOverflows"),
        drops: tcpext_delta(&before, &after, "ListenDrops"),
        syn_retrans: tcpext_delta(&before, &after, "TCPSynRetrans"),
        nginx,
        gunicorn,
        gunicorn_bind: bind,
        _scratch: scratch,
    }
}

fn u(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn overflow_is_attributed_to_the_listener_and_equals_nstat() {
    require_root();
    let _serial = exclusive(); // node-wide counters: no other overflow may run meanwhile
    let run = overflow_run("tcp-overflow", "127.0.0.1", 60, 0.1, "", true);
    // The scenario first: the kernel's own counters say the accept queue overflowed and client
    // SYNs were retransmitted, and nginx says nothing failed (SYN drops only delay connects).
    eprintln!(
        "nstat ListenOverflows +{} ListenDrops +{} TCPSynRetrans +{}; statuses {:?}",
        run.overflows,
        run.drops,
        run.syn_retrans,
        run.nginx.statuses()
    );
    assert!(run.overflows > 0, "the scenario must overflow the accept queue");
    assert!(run.syn_retrans > 0, "the scenario must drop SYNs (retransmitted by the client)");
    assert_eq!(run.nginx.count_status(200), 60, "nothing failed: SYN drops only delay connects");
    // Our gunicorn's listener, by its address: drops at any other listener on the host are
    // recorded too (they happen in softirq context, outside the process filter).
    let upstream = run.records.iter().find(|r| r["type"] == "tcp_listener" && r["final"] == true && r["listener"] == run.gunicorn_bind.as_str());
    let l = upstream.expect("gunicorn's listener");
    let bind = l["listener"].as_str().unwrap().to_string();
    let (syn, ack) = (u(&l["syn_drops"]), u(&l["ack_drops"]));
    eprintln!("listener {bind}: {syn} SYN + {ack} ACK drops");
    assert_eq!(syn + ack, run.overflows, "tracer drops == ListenOverflows delta");
    assert_eq!(syn + ack, run.drops, "tracer drops == ListenDrops delta");
    // TCPSynRetrans also counts the listener's SYN-ACK retransmits (tcp_rtx_synack), which
    // happen when a final ACK was dropped and the queue stays full for the SYN-ACK timer (1 s):
    // one CI run saw 58 = 50 client SYN retransmits + 8 of those. The exact check is the drops
    // sum above; the client side can be at most the counter.
    let syn_retrans = u(&l["connects"]["syn_retransmits"]);
    assert!(syn_retrans > 0 && syn_retrans <= run.syn_retrans, "tracer SYN retransmits {syn_retrans} ≤ TCPSynRetrans delta {}", run.syn_retrans);
    assert_eq!(syn_retrans, syn, "SYN drops seen from the client side are its SYN retransmits");
    let q = &l["queue"];
    assert_eq!(q["queue_max"], 8, "{q}");
    assert_eq!(q["listen_backlog"], 8, "{q}");
    assert_eq!(q["owner_pid"], run.gunicorn.master_pid(), "{q}");

    // Per request: the tracer's SYN_SENT→ESTABLISHED time vs nginx's $upstream_connect_time,
    // joined by nginx worker pid and the upstream connection's local port.
    //
    // nginx's figure encloses the tracer's interval, so the check is one-sided. nginx computes
    // it as ngx_current_msec − u->start_time, both from its cached clock: start_time is the
    // clock of the event-loop iteration that read the client's request, taken before connect()
    // (so before SYN_SENT), and the end is the clock of the iteration whose epoll_wait reported
    // the connection writable (so after ESTABLISHED). Both clocks are CLOCK_MONOTONIC truncated
    // to whole ms, so their difference can undershoot the real interval by < 1 ms: tracer ≤
    // nginx + 1 ms. How much later nginx can be is the event-loop delay of its single worker at
    // both ends (a fresh machine gave 1021.99 ms vs 1.027 s); it has nothing to do with the
    // connect time itself, so the ceiling is absolute: 100 ms, 20× the worst seen, yet far
    // below the 1 s of a SYN retransmit, the smallest error that would mean a wrong latency.
    const NGINX_TRUNCATION_MS: f64 = 1.0;
    const EVENT_LOOP_DELAY_MAX_MS: f64 = 100.0;
    let nginx_times = run.nginx.connect_times();
    assert_eq!(nginx_times.len(), 60, "every request has a connect time and port");
    let mut diffs = Vec::new();
    for (pid, secs, port) in &nginx_times {
        let recs: Vec<&serde_json::Value> = run
            .records
            .iter()
            .filter(|r| r["type"] == "tcp_connect" && r["pid"] == *pid && r["local"].as_str().unwrap().ends_with(&format!(":{port}")))
            .collect();
        assert_eq!(recs.len(), 1, "exactly one tcp_connect record for nginx pid {pid} port {port}: {recs:?}");
        let rec = recs[0];
        assert_eq!(rec["outcome"], "established", "{rec}");
        let tracer_ms = rec["latency_us"].as_f64().unwrap() / 1e3;
        let nginx_ms = secs * 1e3;
        // A connect whose SYN was retransmitted k times waited k initial RTOs of 1 s
        // (tcp_syn_linear_timeouts keeps the first retries 1 s apart); a jiffy less at most.
        let k = u(&rec["syn_retransmits"]) as f64;
        assert!(tracer_ms >= k * 1000.0 - 10.0, "port {port}: {k} SYN retransmits but only {tracer_ms} ms: {rec}");
        assert!(
            tracer_ms <= nginx_ms + NGINX_TRUNCATION_MS,
            "port {port}: tracer {tracer_ms} ms can be at most 1 ms (truncation) above nginx's {nginx_ms} ms"
        );
        assert!(
            nginx_ms - tracer_ms <= EVENT_LOOP_DELAY_MAX_MS,
            "port {port}: nginx {nginx_ms} ms is {} ms above the tracer's {tracer_ms} ms",
            nginx_ms - tracer_ms
        );
        diffs.push(nginx_ms - tracer_ms);
    }
    diffs.sort_by(f64::total_cmp);
    let q = |p: f64| diffs[((p * diffs.len() as f64).ceil() as usize).clamp(1, diffs.len()) - 1];
    eprintln!(
        "connect latency: 60/60 joined; nginx − tracer: min {:.3} p50 {:.3} p90 {:.3} max {:.3} ms",
        diffs[0],
        q(0.5),
        q(0.9),
        diffs[diffs.len() - 1]
    );
    eprintln!("nginx − tracer, sorted (ms): {:?}", diffs.iter().map(|d| (d * 1000.0).round() / 1000.0).collect::<Vec<_>>());

    // No 5xx, yet the report shows what nearly became 504s: the connects delayed by dropped SYNs
    // (nginx's own connect time ≥ 1 s), at this listener.
    let delayed = nginx_times.iter().filter(|(_, secs, _)| *secs >= 1.0).count() as u64;
    assert!(delayed > 0, "the scenario must delay connects by SYN retransmits");
    let report = run.report.as_ref().expect("the diagnose report");
    assert_eq!(report["total_5xx"], 0, "nothing failed");
    let misses = report["near_misses"].as_array().expect("near misses in the report");
    let m = misses.iter().find(|m| m["kind"] == "connect_delayed_by_syn_drops").expect("the delayed connects are a near miss");
    eprintln!("near miss: {m}");
    assert_eq!(m["count"], delayed, "every connect nginx waited ≥ 1 s for");
    assert_eq!(m["target"], run.gunicorn_bind.as_str(), "at the overflowing listener");
    assert!(m["proof"].as_str().unwrap().contains("queue max 8"), "{}", m["proof"]);
}

#[test]
fn connect_timeouts_are_blamed_on_the_full_queue() {
    require_root();
    let _serial = exclusive();
    let run = overflow_run("tcp-timeout", "127.0.0.1", 60, 0.5, "proxy_connect_timeout 1s;", true);
    let statuses = run.nginx.statuses();
    let failed = statuses.get(&504).copied().unwrap_or(0) + statuses.get(&502).copied().unwrap_or(0);
    let timeouts = run.nginx.error_lines("upstream timed out (110: Connection timed out) while connecting to upstream");
    eprintln!("statuses {statuses:?}, error-log connect timeouts {timeouts}, nstat ListenOverflows +{}", run.overflows);
    // The scenario first, from nginx's own logs and the kernel's counters: connects timed out
    // because the accept queue overflowed.
    assert!(failed > 0, "the scenario must time out some connects: {statuses:?}");
    assert!(timeouts > 0, "nginx must log its connect timeouts");
    assert!(run.overflows > 0, "the scenario must overflow the accept queue");
    assert_eq!(statuses.values().sum::<u64>(), 60, "every request logged: {statuses:?}");
    let l =
        run.records.iter().find(|r| r["type"] == "tcp_listener" && r["final"] == true && u(&r["connects"]["attempts"]) > 0).expect("listener record");
    eprintln!("listener {l}");
    assert_eq!(u(&l["connects"]["abandoned"]), failed, "connect timeouts == nginx 504/502s");
    assert_eq!(u(&l["connects"]["abandoned"]), timeouts, "== error-log timeout lines");
    assert!(u(&l["syn_drops"]) > 0, "blamed on this listener's full queue: {l}");
    assert_eq!(u(&l["syn_drops"]) + u(&l["ack_drops"]), run.overflows, "drops == ListenOverflows delta");
    // A SYN retransmitted after 1 s races nginx's 1 s connect timer: a connect the kernel
    // establishes as the timer fires is still a timeout to nginx (abandoned_late, seen in CI).
    eprintln!("of them abandoned as the handshake completed: {}", l["connects"]["abandoned_late"]);
    // And each 504 is tied to its connect and blamed on this listener's full queue.
    let report = run.report.as_ref().expect("diagnose ran alongside");
    eprintln!("verdicts {}", report["verdicts"]);
    assert_eq!(u(&report["total_5xx"]), failed, "{report}");
    assert_eq!(u(&report["explained"]), failed, "every 504 joined to a kernel cause: {}", report["unexplained"]);
    let v = &report["verdicts"][0];
    assert_eq!((v["kind"].as_str(), u(&v["count"])), (Some("tcp_accept_queue_full"), failed), "{v}");
}

#[test]
fn ipv6_listener_overflow() {
    require_root();
    let _serial = exclusive();
    let run = overflow_run("tcp-v6", "::1", 30, 0.1, "", false);
    let l = run
        .records
        .iter()
        .find(|r| r["type"] == "tcp_listener" && r["final"] == true && r["family"] == "ipv6" && u(&r["connects"]["attempts"]) > 0)
        .expect("ipv6 listener record");
    eprintln!("{l}; nstat ListenOverflows +{} ListenDrops +{}; statuses {:?}", run.overflows, run.drops, run.nginx.statuses());
    assert!(run.overflows > 0, "the scenario must overflow the accept queue");
    assert_eq!(run.nginx.count_status(200), 30, "nothing failed: SYN drops only delay connects");
    assert!(l["listener"].as_str().unwrap().starts_with("[::1]:"), "{l}");
    assert_eq!(u(&l["syn_drops"]) + u(&l["ack_drops"]), run.overflows, "tracer drops == ListenOverflows delta");
    assert_eq!(u(&l["syn_drops"]) + u(&l["ack_drops"]), run.drops, "tracer drops == ListenDrops delta");
    assert_eq!(l["queue"]["queue_max"], 8, "{l}");
}

#[test]
fn refused_tcp_connects_equal_nginx_502s() {
    require_root();
    let _serial = exclusive(); // not while an overflow test reads node-wide counters
    let scratch = Scratch::new("tcp-refused");
    let target = format!("127.0.0.1:{}", free_port()); // nothing listens there
    let nginx = Nginx::start(&scratch, &NginxOpts { upstream: &target, ..Default::default() }).unwrap();
    let pid = nginx.master_pid().to_string();
    let tracer = Tracer::watch(TRACER, &["--pid", &pid]).unwrap();
    ab(&nginx.url(), 20, 5).unwrap();
    let records = tracer.stop().unwrap();
    // The scenario first: every request refused, by nginx's access and error logs.
    assert_eq!(nginx.count_status(502), 20, "{:?}", nginx.statuses());
    assert_eq!(nginx.error_lines("(111: Connection refused)"), 20);
    let t = final_target(&records, &target).expect("target record");
    eprintln!("{t}");
    // A non-blocking TCP connect returns EINPROGRESS; the refusal arrives as a RST afterwards.
    assert_eq!(u(&t["tcp"]["refused"]), nginx.count_status(502), "tracer refused connects == nginx 502s: {t}");
}

#[test]
fn accept_queue_wait_is_what_the_app_induced() {
    require_root();
    // Queued connections are keyed by their peer address and port; another test's connections
    // made at the same time may reuse a client port towards another listener.
    let _serial = exclusive();
    const WAIT: Duration = Duration::from_millis(300);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let tracer = Tracer::watch(TRACER, &["--comm", "*"]).unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        // The app accepts each connection WAIT after it arrived (established, queued).
        for _ in 0..10 {
            rx.recv().unwrap();
            std::thread::sleep(WAIT);
            let (_c, _) = listener.accept().unwrap();
        }
    });
    let mut conns = Vec::new();
    for _ in 0..10 {
        conns.push(TcpStream::connect(addr).unwrap());
        tx.send(()).unwrap();
        std::thread::sleep(WAIT + Duration::from_millis(50));
    }
    server.join().unwrap();
    let records = tracer.stop().unwrap();
    let l = final_listener(&records, &addr.to_string()).expect("listener record");
    let ms = |k: &str| l[k].as_f64().unwrap_or_else(|| panic!("{k}: {l}")) / 1e3;
    let (p50, max) = (ms("accept_wait_p50_us"), ms("accept_wait_max_us"));
    eprintln!("accept wait p50 {p50:.1} ms max {max:.1} ms (induced {} ms), {}\n{:?}", WAIT.as_millis(), l, final_stats(&records));
    assert_eq!(u(&l["accepts"]), 10);
    // One-sided: each connection was in the accept queue before connect() returned here, and
    // the app slept WAIT after that before accept(): no wait can be shorter than WAIT (less
    // the few µs by which the server may process the final ACK after the client returns; the
    // histogram rounds up, never down). What comes on top is scheduling (waking the server
    // thread, sleep overshoot): generous 100 ms ceiling on the longest of the 10, still far
    // below the next connection's 350 ms, which a wrong start point would show.
    let wait_ms = WAIT.as_secs_f64() * 1e3;
    assert!(p50 >= wait_ms - 1.0, "p50 {p50} ms cannot be below the induced {wait_ms} ms");
    assert!(max <= wait_ms + 100.0, "max {max} ms: the app accepted each connection {wait_ms} ms after it arrived");
}

#[test]
fn a_connect_closed_unused_once_established_was_given_up() {
    require_root();
    let _serial = exclusive();
    // What nginx does when its connect timer fires as the handshake completes: the kernel
    // established the connection, the caller closes it without sending a byte. Done here by the
    // test process itself, so the kernel side is exercised every run (in the nginx scenario above
    // it depends on which 1 s timer fires first).
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let me = std::process::id().to_string();
    let tracer = Tracer::watch(TRACER, &["--pid", &me, "--comm", "*", "--connections"]).unwrap();
    let used = TcpStream::connect(addr).unwrap();
    std::io::Write::write_all(&mut &used, b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let unused: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
    drop(unused);
    drop(used);
    std::thread::sleep(Duration::from_millis(200));
    let records = tracer.stop().unwrap();
    // Never accepted nor sampled, so named by its port only (`*:PORT`).
    let port = format!(":{}", addr.port());
    let l = records
        .iter()
        .find(|r| r["type"] == "tcp_listener" && r["final"] == true && r["listener"].as_str().is_some_and(|n| n.ends_with(&port)))
        .unwrap_or_else(|| panic!("listener record in {records:?}"));
    eprintln!("{l}");
    let c = &l["connects"];
    assert_eq!((u(&c["attempts"]), u(&c["established"]), u(&c["abandoned"]), u(&c["abandoned_late"])), (4, 1, 3, 3), "{c}");
    assert_eq!(u(&l["syn_drops"]), 0, "no SYN was dropped");
    drop(listener);
}
