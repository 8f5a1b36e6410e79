//! Front ends the single-upstream tests do not cover: a TCP listener in a network namespace whose
//! `net.ipv4.tcp_abort_on_overflow = 1` resets the connections its full accept queue cannot take,
//! and an nginx upstream group whose servers nginx marks down (`no live upstreams`). Real kernel,
//! nginx and gunicorn; nginx's own logs are the ground truth. Root only.

use std::os::fd::AsRawFd;
use std::process::Command;

use serde_json::Value;
use tracer_e2e::*;

const TRACER: &str = env!("CARGO_BIN_EXE_tracer");

/// A network namespace of this test, entered by the calling thread (threads and processes it
/// starts from then on live in it: nginx, gunicorn, the tracer, the load). On drop the thread
/// goes back to the namespace it came from and the namespace is deleted.
struct NetNs {
    name: String,
    home: std::fs::File,
}

impl NetNs {
    fn enter(tag: &str, sysctls: &[(&str, &str)]) -> NetNs {
        let name = format!("tracer-e2e-{tag}-{}", std::process::id());
        let ip = |args: &[&str]| {
            let st = Command::new("ip").args(args).status().expect("run ip");
            assert!(st.success(), "ip {args:?} failed");
        };
        let _ = Command::new("ip").args(["netns", "del", &name]).stderr(std::process::Stdio::null()).status();
        ip(&["netns", "add", &name]);
        let home = std::fs::File::open("/proc/thread-self/ns/net").expect("open our netns");
        let ns = NetNs { name, home };
        ip(&["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"]);
        for (k, v) in sysctls {
            ip(&["netns", "exec", &ns.name, "sysctl", "-q", "-w", &format!("{k}={v}")]);
        }
        let f = std::fs::File::open(format!("/run/netns/{}", ns.name)).expect("open the new netns");
        // SAFETY: setns on fds we own; it moves only this thread.
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns into {}", ns.name);
        ns
    }

    /// A sysctl as this namespace sees it.
    fn sysctl(&self, name: &str) -> String {
        std::fs::read_to_string(format!("/proc/sys/{}", name.replace('.', "/"))).expect("read sysctl").trim().to_string()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // SAFETY: as in `enter`.
        unsafe { libc::setns(self.home.as_raw_fd(), libc::CLONE_NEWNET) };
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// The host's value of a sysctl, read by a thread that is surely in the host's namespace.
fn host_sysctl(name: &'static str) -> String {
    let path = format!("/proc/sys/{}", name.replace('.', "/"));
    std::fs::read_to_string(path).expect("read host sysctl").trim().to_string()
}

fn report_of(records: Vec<Value>) -> Value {
    records.into_iter().rev().find(|r| r["type"] == "report").expect("the report")
}

fn print_report(r: &Value) {
    eprintln!(
        "total_5xx {} explained {} unexplained {} absorbed {} error_log {}",
        r["total_5xx"],
        r["explained"],
        r["unexplained"].as_array().map_or(0, |a| a.len()),
        r["absorbed"],
        r["error_log"]
    );
    for v in r["verdicts"].as_array().unwrap() {
        eprintln!("verdict {} {} {}: {}\n  FIX: {}", v["kind"], v["target"], v["count"], v["proof"], v["fix"]);
    }
}

#[test]
fn abort_on_overflow_resets_are_the_listeners_full_accept_queue() {
    require_root();
    let host_before = host_sysctl("net.ipv4.tcp_abort_on_overflow");
    let _serial = exclusive();
    {
        // The sysctl is per network namespace: set it only in ours. SYN cookies off there too:
        // with them, once `backlog` handshakes are pending the kernel answers SYNs with cookies,
        // and a cookie's final ACK that finds the queue full is dropped silently (no reset, and
        // the request hangs), which tcp_abort_on_overflow does not change.
        let ns = NetNs::enter("abort", &[("net.ipv4.tcp_abort_on_overflow", "1"), ("net.ipv4.tcp_syncookies", "0")]);
        assert_eq!(ns.sysctl("net.ipv4.tcp_abort_on_overflow"), "1");
        let scratch = Scratch::new("abort-overflow");
        let bind = format!("127.0.0.1:{}", free_port());
        let gunicorn =
            Gunicorn::start(&GunicornOpts { bind: bind.clone(), backlog: 8, app_sleep: 0.5, ..Default::default() }).expect("gunicorn starts");
        let nginx = Nginx::start(&scratch, &NginxOpts { upstream: &bind, ..Default::default() }).expect("nginx starts");
        let pid = nginx.master_pid().to_string();
        let tracer = Tracer::start(TRACER, &["diagnose", "--json", "--pid", &pid]).expect("diagnose attaches");
        let got = burst(nginx.port, 60);
        let report = report_of(tracer.stop().expect("tracer stops"));
        print_report(&report);
        // The scenario first: clients got 502s, and nginx says the connects were reset.
        let e502 = nginx.count_status(502);
        let reset_lines = nginx.error_lines("connect() failed (104: Connection reset by peer) while connecting to upstream");
        eprintln!("clients {got:?}; access log {:?}; error-log connect resets {reset_lines}", nginx.statuses());
        assert!(e502 > 0, "the burst must overflow the accept queue into 502s");
        assert_eq!(got.get(&502).copied().unwrap_or(0), e502, "clients and the access log agree");
        assert!(reset_lines > 0, "nginx must log the resets");
        // Then the tracer: every 502 is the listener's full accept queue, with the sysctl named.
        assert_eq!(report["total_5xx"], e502);
        assert_eq!(report["explained"], e502, "unexplained: {}", report["unexplained"]);
        let verdicts = report["verdicts"].as_array().unwrap();
        assert_eq!(verdicts.len(), 1, "one verdict");
        let v = &verdicts[0];
        assert_eq!((v["kind"].as_str(), v["target"].as_str(), v["count"].as_u64()), (Some("tcp_accept_queue_full"), Some(bind.as_str()), Some(e502)));
        let proof = v["proof"].as_str().unwrap();
        assert!(proof.contains("net.ipv4.tcp_abort_on_overflow = 1 in its network namespace"), "{proof}");
        assert!(proof.contains(&format!("gunicorn pid {}", gunicorn.master_pid())) && proof.contains("queue max 8"), "{proof}");
        assert_eq!(report["error_log"]["connect_reset"], reset_lines, "the error log's resets are counted as such");
    }
    assert_eq!(host_sysctl("net.ipv4.tcp_abort_on_overflow"), host_before, "the host's sysctl is untouched");
}

/// One access-log line: (status, $upstream_addr, $upstream_status).
fn access_lines(nginx: &Nginx) -> Vec<(u16, String, String)> {
    std::fs::read_to_string(&nginx.access_log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('"').collect();
            Some((f.first()?.split(' ').next()?.parse().ok()?, f.get(1)?.to_string(), f.get(3)?.to_string()))
        })
        .collect()
}

#[test]
fn no_live_upstreams_502s_are_traced_to_the_failures_that_marked_the_group_down() {
    require_root();
    let _serial = exclusive();
    let scratch = Scratch::new("upstream-group");
    let sock = |n: &str| scratch.path(n).display().to_string();
    let (a, b) = (sock("a.sock"), sock("b.sock"));
    let ga = Gunicorn::start(&GunicornOpts { bind: format!("unix:{a}"), backlog: 4, app_sleep: 0.5, ..Default::default() }).expect("gunicorn a");
    // b holds more: a's first overflow is retried there into a 200 ("502, 200"), then b overflows too.
    let gb = Gunicorn::start(&GunicornOpts { bind: format!("unix:{b}"), backlog: 16, app_sleep: 0.5, ..Default::default() }).expect("gunicorn b");
    let http_extra = format!("upstream grp {{ server unix:{a} max_fails=1 fail_timeout=10s; server unix:{b} max_fails=1 fail_timeout=10s; }}");
    let nginx = Nginx::start(&scratch, &NginxOpts { upstream: "grp", http_extra: &http_extra, ..Default::default() }).expect("nginx starts");
    let pid = nginx.master_pid().to_string();
    let tracer = Tracer::start(TRACER, &["diagnose", "--json", "--pid", &pid]).expect("diagnose attaches");
    let got = burst(nginx.port, 60);
    let report = report_of(tracer.stop().expect("tracer stops"));
    print_report(&report);
    drop((ga, gb));

    // The scenario first: nginx marked both servers down and answered 502s without connecting.
    let lines = access_lines(&nginx);
    let no_live_lines = nginx.error_lines("no live upstreams while connecting to upstream");
    let e502 = nginx.count_status(502);
    let no_live_502 = lines.iter().filter(|(s, addr, _)| *s == 502 && addr == "grp").count() as u64;
    let connect_502 = lines.iter().filter(|(s, addr, _)| *s == 502 && addr != "grp").count() as u64;
    for l in lines.iter().filter(|(_, addr, _)| addr.contains(", ")) {
        eprintln!("retried: {l:?}");
    }
    // Failed attempts nginx retried by connecting to the other server: an $upstream_addr entry
    // followed by a real server (a failed connect whose retry found no server left is followed by
    // the group's name: that failure is the 502's own cause).
    let retried = lines
        .iter()
        .map(|(_, addr, _)| {
            let addrs: Vec<&str> = addr.split(", ").collect();
            addrs.windows(2).filter(|w| w[1] != "grp").count() as u64
        })
        .sum::<u64>();
    let retried_ok = lines.iter().filter(|(s, _, us)| *s == 200 && us.contains("502, 200")).count();
    eprintln!(
        "clients {got:?}; access {:?}; 502s: {no_live_502} no live upstreams + {connect_502} after connects; error log: {no_live_lines} no-live lines, {} EAGAIN lines; {retried} attempts retried ({retried_ok} into a 200)",
        nginx.statuses(),
        nginx.error_lines("(11: Resource temporarily unavailable)")
    );
    assert!(no_live_lines > 0 && no_live_502 > 0, "the burst must take the whole group out");
    assert!(retried_ok > 0, "some failure must be retried into a 200");
    // nginx logs the line for each 502 it answers without connecting, and also when a failed
    // connect found no server left to retry (that 502 is the failed connect's).
    assert!(no_live_lines >= no_live_502 && no_live_lines <= e502, "{no_live_lines} no-live lines for {no_live_502} 502s without a connect");
    assert_eq!(no_live_502 + connect_502, e502);

    // Then the tracer: every 502 explained, the group named, exact counts.
    assert_eq!(report["total_5xx"], e502);
    assert_eq!(report["explained"], e502, "unexplained: {}", report["unexplained"]);
    let verdicts = report["verdicts"].as_array().unwrap();
    let count = |kind: &str, target: &str| {
        verdicts.iter().filter(|v| v["kind"] == kind && v["target"] == target).map(|v| v["count"].as_u64().unwrap()).sum::<u64>()
    };
    assert_eq!(count("no_live_upstreams", "upstream grp"), no_live_502);
    let queue = count("listen_queue_full", &format!("unix:{a}")) + count("listen_queue_full", &format!("unix:{b}"));
    assert_eq!(queue, connect_502, "the 502s after a failed connect are the queues");
    let v = verdicts.iter().find(|v| v["kind"] == "no_live_upstreams").unwrap();
    let proof = v["proof"].as_str().unwrap();
    for s in [&a, &b] {
        assert!(proof.contains(&format!("unix:{s}: ")) && proof.contains("connect_eagain (listen_queue_full)"), "{proof}");
    }
    // Retried failures are absorbed, never client 502s.
    assert_eq!(report["absorbed"]["connect_eagain"].as_u64().unwrap_or(0), retried, "absorbed == attempts nginx retried");
    assert_eq!(report["error_log"]["no_live_upstreams"], no_live_lines);
}
