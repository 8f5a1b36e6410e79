//! `tracer compare`: two real recordings, before and after raising a unix listener's backlog; the
//! listen-queue overflow is reported gone, with the before count equal to nginx's 502s of the
//! first run and none after. Real nginx and gunicorn. Root only.

use std::process::Command;

use serde_json::Value;
use tracer_e2e::*;

const TRACER: &str = env!("CARGO_BIN_EXE_tracer");

/// gunicorn on `sock` with `backlog`, then a traced burst recorded to `rec`.
fn record_burst(nginx: &Nginx, sock: &std::path::Path, backlog: u32, rec: &std::path::Path) -> std::collections::BTreeMap<u16, u64> {
    let _gunicorn =
        Gunicorn::start(&GunicornOpts { bind: format!("unix:{}", sock.display()), backlog, app_sleep: 0.3, ..Default::default() }).unwrap();
    let pid = nginx.master_pid().to_string();
    let tracer = Tracer::start(TRACER, &["record", "-o", rec.to_str().unwrap(), "--json", "--pid", &pid]).unwrap();
    let got = burst(nginx.port, 24);
    tracer.stop().unwrap();
    got
}

#[test]
fn a_raised_backlog_shows_the_overflow_gone() {
    require_root();
    let _serial = exclusive();
    let scratch = Scratch::new("compare");
    let sock = scratch.path("app.sock");
    let nginx = Nginx::start(&scratch, &NginxOpts { upstream: &format!("unix:{}:", sock.display()), ..Default::default() }).unwrap();
    let (before, after) = (scratch.path("before.rec"), scratch.path("after.rec"));
    let got_before = record_burst(&nginx, &sock, 4, &before);
    let n502_before = nginx.count_status(502);
    let got_after = record_burst(&nginx, &sock, 64, &after);
    let n502_after = nginx.count_status(502) - n502_before;
    eprintln!("before: clients {got_before:?}, nginx 502s {n502_before}; after: clients {got_after:?}, nginx 502s {n502_after}");
    assert!(n502_before > 0, "backlog 4 must overflow");
    assert_eq!(n502_after, 0, "backlog 64 must hold the burst");

    let out = Command::new(TRACER).args(["compare", "--json"]).arg(&before).arg(&after).arg("--html").arg(scratch.path("c.html")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let c: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("{c}");
    assert_eq!(c["before"]["total_5xx"], n502_before);
    assert_eq!(c["after"]["total_5xx"], 0);
    let target = format!("unix:{}", sock.display());
    let rows: Vec<&Value> = c["causes"].as_array().unwrap().iter().collect();
    assert_eq!(rows.len(), 1, "one root cause: {rows:?}");
    let r = rows[0];
    assert_eq!((r["kind"].as_str(), r["target"].as_str()), (Some("listen_queue_full"), Some(target.as_str())));
    assert_eq!((r["before"].as_u64(), r["after"].as_u64()), (Some(n502_before), Some(0)));
    assert_eq!(r["outcome"], "gone", "the after run sent the same burst to it: {r}");
    let html = std::fs::read_to_string(scratch.path("c.html")).unwrap();
    assert!(html.contains("class=\"gone\">gone"), "the page says it");
}
