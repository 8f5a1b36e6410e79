//! `tracer report --what-if`: a burst recorded against gunicorn `--backlog 16` is replayed through
//! the queue model at backlogs 8 and 32; the same burst is then run for real at 8 and 32, and
//! each prediction must be within ±10 % of nginx's 502s there. Real nginx and gunicorn. Root only.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;
use tracer_e2e::*;

const TRACER: &str = env!("CARGO_BIN_EXE_tracer");
const BURST: usize = 60;

/// gunicorn (1 worker, 0.3 s) on `sock` with `backlog`, a burst through nginx (recorded to `rec`
/// when given); nginx's 502s of this burst.
fn burst_at(nginx: &Nginx, sock: &std::path::Path, backlog: u32, rec: Option<&std::path::Path>) -> u64 {
    let _gunicorn =
        Gunicorn::start(&GunicornOpts { bind: format!("unix:{}", sock.display()), backlog, app_sleep: 0.3, ..Default::default() }).unwrap();
    let before = nginx.count_status(502);
    let pid = nginx.master_pid().to_string();
    let tracer = rec.map(|r| Tracer::start(TRACER, &["record", "-o", r.to_str().unwrap(), "--json", "--pid", &pid]).unwrap());
    let got: BTreeMap<u16, u64> = burst(nginx.port, BURST);
    if let Some(t) = tracer {
        t.stop().unwrap();
    }
    let n = nginx.count_status(502) - before;
    eprintln!("backlog {backlog}: clients {got:?}, nginx 502s {n}");
    n
}

#[test]
fn predictions_at_other_backlogs_match_real_runs() {
    require_root();
    let _serial = exclusive();
    let scratch = Scratch::new("what-if");
    let sock = scratch.path("app.sock");
    let nginx = Nginx::start(&scratch, &NginxOpts { upstream: &format!("unix:{}:", sock.display()), ..Default::default() }).unwrap();
    let rec = scratch.path("b16.rec");
    let recorded = burst_at(&nginx, &sock, 16, Some(&rec));
    assert!(recorded > 0, "backlog 16 must overflow under a burst of {BURST}");
    let out = Command::new(TRACER).arg("report").arg(&rec).args(["--json", "--what-if", "backlog=8", "--what-if", "backlog=32"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let w = &r["what_if"][0];
    eprintln!("what-if: {w}");
    assert_eq!(w["recorded_refused"], recorded, "the recording's EAGAIN == nginx's 502s");
    // The model serves one connection at once; the real worker may accept its first only once
    // the burst has filled the queue (one more refusal): within 10 % either way.
    let model = w["model_refused"].as_u64().unwrap();
    assert!((model as f64 - recorded as f64).abs() <= 0.1 * recorded as f64, "the model reproduces the recorded run: {model} vs {recorded}");
    let predicted = |backlog: u64| {
        w["predictions"].as_array().unwrap().iter().find(|p| p["backlog"] == backlog).and_then(|p| p["refused"].as_u64()).expect("a prediction")
    };
    for backlog in [8u32, 32] {
        let real = burst_at(&nginx, &sock, backlog, None);
        let p = predicted(backlog as u64);
        eprintln!("backlog {backlog}: predicted {p}, real {real}");
        assert!(real > 0, "backlog {backlog} must still overflow for the check to mean something");
        assert!((p as f64 - real as f64).abs() <= 0.1 * real as f64, "backlog {backlog}: predicted {p}, real {real} (more than 10 % apart)");
    }
    let smallest = w["smallest_backlog"].as_u64().expect("a backlog that absorbs the burst");
    assert!(
        smallest as usize >= BURST - 2 && smallest as usize <= BURST,
        "{smallest}: a burst of {BURST} on one worker needs backlog {} ",
        BURST - 2
    );
}
