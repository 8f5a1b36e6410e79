//! Upstream requests: workers killed mid-request, proxy timeouts and per-request latency, each
//! compared with nginx's own access and error logs. Real nginx, gunicorn, uwsgi. Root only.

use std::time::{Duration, Instant};

use tracer_e2e::*;

const TRACER: &str = env!("CARGO_BIN_EXE_tracer");

fn unix_nginx(scratch: &Scratch, sock: &std::path::Path, extra: &str) -> Nginx {
    let upstream = format!("unix:{}:", sock.display());
    Nginx::start(scratch, &NginxOpts { upstream: &upstream, location_extra: extra, ..Default::default() }).expect("nginx starts")
}

fn trace(nginx: &Nginx) -> Tracer {
    Tracer::watch(TRACER, &["--pid", &nginx.master_pid().to_string(), "--interval", "1s"]).expect("tracer attaches")
}

fn closes<'a>(records: &'a [serde_json::Value], class: &str) -> Vec<&'a serde_json::Value> {
    records.iter().filter(|r| r["type"] == "upstream_close" && r["class"] == class).collect()
}

/// Run `ab` in the background while `during` runs.
fn ab_while(url: &str, n: u32, c: u32, during: impl FnOnce()) {
    let url = url.to_string();
    let load = std::thread::spawn(move || ab(&url, n, c).expect("ab runs"));
    during();
    load.join().unwrap();
}

#[test]
fn sigkilled_gunicorn_workers_are_premature_closes_with_the_killer() {
    require_root();
    let scratch = Scratch::new("kill");
    let sock = scratch.path("app.sock");
    let started = scratch.path("started");
    let opts = GunicornOpts {
        bind: format!("unix:{}", sock.display()),
        workers: 2,
        app_sleep: 5.0,
        backlog: 64,
        started_dir: Some(started.clone()),
        ..Default::default()
    };
    let g = Gunicorn::start(&opts).expect("gunicorn starts");
    std::fs::create_dir(&started).unwrap(); // after gunicorn's own probe request
    let nginx = unix_nginx(&scratch, &sock, "");
    let tracer = trace(&nginx);
    let workers = g.worker_pids();
    assert_eq!(workers.len(), 2);
    const APP_SLEEP_MS: f64 = 5000.0;
    ab_while(&nginx.url(), 2, 2, || {
        // Kill once both requests are in the app (or, if one worker took both, once one is) and
        // the last of them has been there for 1 s: ab may start late on a loaded machine.
        let deadline = Instant::now() + Duration::from_secs(3);
        while Gunicorn::started_requests(&started) < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(Gunicorn::started_requests(&started) >= 1, "no request reached the app in 3 s");
        std::thread::sleep(Duration::from_secs(1));
        for w in &workers {
            unsafe { libc::kill(*w as i32, libc::SIGKILL) };
        }
    });
    let records = tracer.stop().unwrap();
    let n502 = nginx.count_status(502);
    let lines = nginx.error_lines("upstream prematurely closed connection");
    let cut = closes(&records, "premature");
    eprintln!("502s {n502}, error-log lines {lines}, tracer {cut:?}");
    // gunicorn's sync workers race to accept: both requests may sit with one worker (one being
    // served, one queued and later served by a respawned worker): at least one 502.
    assert!(n502 >= 1, "a killed in-flight request must give a 502");
    assert_eq!(lines, n502, "nginx: one `prematurely closed` line per 502");
    assert_eq!(cut.len() as u64, n502, "premature closes == nginx 502s");
    for c in cut {
        assert_eq!(c["target"], format!("unix:{}", sock.display()));
        let w = &c["worker"];
        assert!(workers.contains(&(w["pid"].as_u64().unwrap() as u32)), "a killed worker: {c}");
        assert_eq!(w["signal_name"], "SIGKILL", "{c}");
        assert_eq!(w["sender_pid"], std::process::id(), "sent by this test: {c}");
        assert_eq!(w["cause"], "killed", "{c}");
        // The request reached the app (so nginx had sent it) at least 1 s before the kill, and
        // was younger than the app's 5 s (an older one would have been answered): one-sided
        // below by what the test did, bounded above by the app.
        let age = c["request_age_ms"].as_f64().unwrap();
        assert!((1000.0..APP_SLEEP_MS).contains(&age), "cut 1 s or more after it reached the app, before the app answered: {age} ms: {c}");
    }
}

#[test]
fn uwsgi_harakiri_is_a_premature_close_killed_by_the_uwsgi_master() {
    require_root();
    let scratch = Scratch::new("harakiri");
    let sock = scratch.path("uwsgi.sock");
    let u = Uwsgi::start(&sock, 1, 4.0, &["--harakiri", "2"]).expect("uwsgi starts");
    let nginx = unix_nginx(&scratch, &sock, "");
    let tracer = trace(&nginx);
    ab(&nginx.url(), 1, 1).unwrap();
    let records = tracer.stop().unwrap();
    let n502 = nginx.count_status(502);
    let cut = closes(&records, "premature");
    eprintln!("502s {n502}, tracer {cut:?}");
    assert_eq!(n502, 1, "the harakiri must cut the request: {:?}", nginx.statuses());
    assert_eq!(nginx.error_lines("upstream prematurely closed connection"), 1);
    assert_eq!(cut.len() as u64, n502, "premature closes == nginx 502s");
    let w = &cut[0]["worker"];
    assert_eq!(w["signal_name"], "SIGKILL", "{w}");
    assert_eq!(w["sender_pid"], u.proc.pid(), "killed by the uwsgi master (harakiri): {w}");
    assert_eq!(w["cause"], "killed_by_master", "{w}");
    let age = cut[0]["request_age_ms"].as_f64().unwrap();
    // uwsgi keeps the harakiri deadline in whole seconds (uwsgi_now() + 2) and its master
    // compares it with its own whole-second clock once a second (deadline < now), so the kill
    // comes between 1 s (both truncations against us) and 3 s after the request (measured:
    // 1.6 s); the app answers at 4 s, so a cut request is younger than that.
    assert!((1000.0..4000.0).contains(&age), "killed by harakiri, before the 4 s app returns: {age} ms");
}

#[test]
fn proxy_read_timeout_is_a_proxy_abort_aged_2s() {
    require_root();
    let scratch = Scratch::new("readtimeout");
    let sock = scratch.path("app.sock");
    let _g =
        Gunicorn::start(&GunicornOpts { bind: format!("unix:{}", sock.display()), workers: 3, app_sleep: 4.0, backlog: 64, ..Default::default() })
            .expect("gunicorn starts");
    let nginx = unix_nginx(&scratch, &sock, "proxy_read_timeout 2s;");
    let tracer = trace(&nginx);
    ab(&nginx.url(), 3, 3).unwrap();
    let records = tracer.stop().unwrap();
    let n504 = nginx.count_status(504);
    let aborts = closes(&records, "proxy_abort");
    eprintln!("504s {n504}, tracer {aborts:?}");
    assert_eq!(n504, 3, "the scenario must time out every request: {:?}", nginx.statuses());
    assert_eq!(nginx.error_lines("upstream timed out (110: Connection timed out) while reading response header"), n504);
    assert_eq!(aborts.len() as u64, n504, "proxy-side closes == nginx 504s");
    for a in aborts {
        let age = a["request_age_ms"].as_f64().unwrap();
        // nginx arms its 2 s read timer right after sending the request, from its cached clock
        // (the time its event-loop iteration began, truncated to ms), and fires it once its
        // clock has reached the deadline: the close is at least 2000 ms after the send, less the
        // time nginx spent in that iteration before the send and 1 ms of truncation (a few ms
        // with 3 requests; 10 allowed). Later is only wake-up and scheduling delay: generous
        // 500 ms, still far from the 4 s at which the app would have answered.
        assert!((1990.0..=2500.0).contains(&age), "aborted at proxy_read_timeout (2 s): {age} ms: {a}");
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    // Nearest rank, like HdrHistogram's value_at_quantile.
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[test]
fn time_to_first_byte_matches_upstream_header_time() {
    require_root();
    let _serial = exclusive(); // latency comparison: keep the machine quiet
    let scratch = Scratch::new("latency");
    let sock = scratch.path("app.sock");
    let _g = Gunicorn::start(&GunicornOpts {
        bind: format!("unix:{}", sock.display()),
        workers: 4,
        app_sleep: 0.001,
        app_sleep_spread: 0.03,
        backlog: 256,
        ..Default::default()
    })
    .expect("gunicorn starts");
    let nginx = unix_nginx(&scratch, &sock, "");
    let tracer = trace(&nginx);
    ab(&nginx.url(), 1000, 4).unwrap();
    let records = tracer.stop().unwrap();
    let mut nginx_ms: Vec<f64> = nginx.header_times().into_iter().map(|s| s * 1e3).collect();
    nginx_ms.sort_by(f64::total_cmp);
    let t = final_target(&records, &format!("unix:{}", sock.display())).expect("target");
    let r = &t["requests"];
    let (p50, p99) = (r["ttfb_p50_us"].as_f64().unwrap() / 1e3, r["ttfb_p99_us"].as_f64().unwrap() / 1e3);
    let (n50, n99) = (percentile(&nginx_ms, 0.5), percentile(&nginx_ms, 0.99));
    eprintln!("requests {} vs nginx {}; ttfb p50 {p50:.2} ms vs {n50:.2}, p99 {p99:.2} ms vs {n99:.2}", r["completed"], nginx_ms.len());
    assert_eq!(nginx.count_status(200), 1000, "every request answered: {:?}", nginx.statuses());
    assert_eq!(nginx_ms.len(), 1000, "every request has a header time");
    assert_eq!(r["completed"], 1000, "one latency sample per request");
    // Not one-sided, unlike the connect time: nginx's $upstream_header_time starts earlier
    // (its cached clock of the iteration that read the client's request, before connect() and
    // the send the tracer starts from) but also ends earlier (the clock of the iteration that
    // found the response readable, taken at epoll_wait's return, before the recv() the tracer
    // ends at). Each end moves by the time nginx's single worker spends in one iteration before
    // reaching this request (sub-ms with 4 clients), and nginx's whole-ms clock adds < 1 ms:
    // 1 ms of truncation + 1 ms of event-loop lag either way.
    const NGINX_TRUNCATION_MS: f64 = 1.0;
    const EVENT_LOOP_LAG_MS: f64 = 1.0;
    let tol = NGINX_TRUNCATION_MS + EVENT_LOOP_LAG_MS;
    assert!((p50 - n50).abs() <= tol, "p50 {p50} vs $upstream_header_time {n50}");
    assert!((p99 - n99).abs() <= tol, "p99 {p99} vs $upstream_header_time {n99}");
}

#[test]
fn keepalive_races_are_classified_with_the_idle_time() {
    require_root();
    let _serial = exclusive(); // the race window is ~0.1 ms: keep the machine quiet
    const IDLE: f64 = 1.0;
    let scratch = Scratch::new("kalive");
    let (_server, server_port, nginx) = keepalive_upstream(&scratch, IDLE).unwrap();
    let tracer = trace(&nginx);
    // Each POST reuses nginx's idle upstream connection, aimed at the instant the upstream
    // closes it (IDLE after the previous response), the aim learnt from each miss; at most 30
    // POSTs, stopping after 3 races.
    let statuses = aim_keepalive_races(nginx.port, "/", server_port, IDLE, 30, 3);
    std::thread::sleep(Duration::from_secs_f64(IDLE + 0.3)); // one last idle close
    let records = tracer.stop().unwrap();
    let races = closes(&records, "keepalive_race");
    let n502 = nginx.count_status(502);
    let t = records.iter().find(|r| r["type"] == "target" && r["final"] == true && r["requests"].is_object()).expect("target");
    eprintln!("client statuses {statuses:?}; nginx 502s {n502}; races {}: {races:?}; requests {}", races.len(), t["requests"]);
    assert!(n502 > 0, "the sweep must hit the race at least once");
    assert_eq!(statuses.get(&502).copied().unwrap_or(0), n502, "the clients got the 502s nginx logged: {statuses:?}");
    assert_eq!(races.len() as u64, n502, "every 502 is a keep-alive race");
    for r in &races {
        let idle = r["idle_before_ms"].as_f64().unwrap();
        // The upstream's idle timer (a socket timeout; poll never returns early) starts after
        // it wrote the response, and a race needs the request to arrive once that timer has
        // fired: so the idle time seen from nginx (its last recv → its send) is at least IDLE,
        // less how late nginx read the response after the upstream wrote it (sub-ms; 5 allowed).
        // Above IDLE is only delay (the client's sleep overshoot, nginx's and the upstream's
        // wake-ups): generous 50 ms; later than that nginx would have seen the upstream's FIN.
        assert!((IDLE * 1e3 - 5.0..=IDLE * 1e3 + 50.0).contains(&idle), "reused after {} ms idle: {r}", IDLE * 1e3);
        assert!(r["seq"].as_u64().unwrap() >= 2, "on a reused connection: {r}");
    }
    assert_eq!(t["requests"]["premature_closes"], 0, "races are not premature closes");
    assert!(t["requests"]["idle_closes"].as_u64().unwrap() > 0, "idle closes are seen and counted apart");
}

#[test]
fn uwsgi_max_requests_recycling_is_blamed_for_its_502s() {
    require_root();
    let _serial = exclusive();
    let scratch = Scratch::new("recycle");
    let sock = scratch.path("uwsgi.sock");
    // HTTP/1.1 keep-alive upstream whose workers exit after 5 requests each.
    let _uwsgi = Uwsgi::start_http11(&sock, 2, 0.005, &["--max-requests", "5", "--min-worker-lifetime", "1"]).unwrap();
    let nginx = nginx_keepalive_to(&scratch, &sock).unwrap();
    let tracer = trace(&nginx);
    // Bounded: 300 POSTs, 4 at a time, paced so workers live past --min-worker-lifetime.
    let port = nginx.port;
    let clients: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..75 {
                    post(port, "/");
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let records = tracer.stop().unwrap();
    let n502 = nginx.count_status(502);
    // Requests the upstream cut: premature closes, and races on a connection the recycled
    // worker had left idle.
    let cut: Vec<_> =
        records.iter().filter(|r| r["type"] == "upstream_close" && (r["class"] == "premature" || r["class"] == "keepalive_race")).collect();
    eprintln!("statuses {:?}; cut requests {}: {cut:?}", nginx.statuses(), cut.len());
    assert_eq!(nginx.statuses().values().sum::<u64>(), 300, "every POST logged");
    assert!(n502 > 0, "recycling must cut some requests: {:?}", nginx.statuses());
    assert_eq!(cut.len() as u64, n502, "every 502 is a cut request");
    for c in &cut {
        assert_eq!(c["worker"]["cause"], "exited", "blamed on a worker that exited without a fatal signal (recycling): {c}");
    }
}
