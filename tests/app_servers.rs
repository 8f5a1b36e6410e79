//! App servers' own timeouts, named with the setting that fired: php-fpm's
//! `request_terminate_timeout` (502s: the killer is the php-fpm master, not the child that
//! re-raises its SIGTERM; the fix names the pool, the file and the value) and gunicorn's worker
//! timeout (the worker answers 500: a near miss named with `--timeout`). Real nginx, php-fpm,
//! gunicorn; counts against nginx's access log. Root only.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tracer_e2e::*;

const TRACER: &str = env!("CARGO_BIN_EXE_tracer");

fn verdicts<'a>(report: &'a Value, kind: &str) -> Vec<&'a Value> {
    report["verdicts"].as_array().expect("verdicts").iter().filter(|v| v["kind"] == kind).collect()
}

#[test]
fn php_fpm_request_terminate_timeout_is_blamed_on_the_master_with_its_setting() {
    require_root();
    let _serial = exclusive();
    let scratch = Scratch::new("php-fpm");
    let d = scratch.dir.display().to_string();
    std::fs::create_dir_all(scratch.path("pool.d")).unwrap();
    std::fs::write(
        scratch.path("php-fpm.conf"),
        format!("[global]\npid = {d}/php-fpm.pid\nerror_log = {d}/php-fpm.log\ndaemonize = no\ninclude = {d}/pool.d/*.conf\n"),
    )
    .unwrap();
    let pool = scratch.path("pool.d/app.conf");
    std::fs::write(
        &pool,
        format!("[app]\nuser = nobody\ngroup = nogroup\nlisten = {d}/php.sock\nlisten.mode = 0666\npm = static\npm.max_children = 2\nrequest_terminate_timeout = 2s\n"),
    )
    .unwrap();
    std::fs::write(scratch.path("slow.php"), "<?php sleep(4); echo \"done\\n\";\n").unwrap();
    set_mode(&scratch.path("slow.php"), 0o644);
    let mut cmd = Command::new(find_program("php-fpm8.2").expect("php-fpm is installed by cargo xtask setup"));
    cmd.args(["-F", "-y"]).arg(scratch.path("php-fpm.conf")).stdout(Stdio::null()).stderr(Stdio::null());
    let fpm = Proc::spawn("php-fpm", &mut cmd).unwrap();
    let sock = scratch.path("php.sock");
    wait_for("php-fpm's socket", Duration::from_secs(20), || std::os::unix::net::UnixStream::connect(&sock).is_ok()).unwrap();
    let server_extra = format!(
        "location = /slow.php {{ include /etc/nginx/fastcgi_params; fastcgi_param SCRIPT_FILENAME {d}/slow.php; fastcgi_pass unix:{d}/php.sock; }}"
    );
    let nginx = Nginx::start(&scratch, &NginxOpts { upstream: "127.0.0.1:9", server_extra: &server_extra, ..Default::default() }).unwrap();
    let pid = nginx.master_pid().to_string();
    let tracer = Tracer::start(TRACER, &["diagnose", "--json", "--pid", &pid]).unwrap();
    let got = burst_path(nginx.port, "/slow.php", 4);
    let report = tracer.stop().unwrap().pop().expect("the report");
    let n502 = nginx.count_status(502);
    eprintln!("clients got {got:?}; access log 502s {n502}; verdicts {}", report["verdicts"]);
    assert!(n502 > 0, "the scenario must cut requests with request_terminate_timeout: {got:?}");
    assert_eq!(report["total_5xx"], n502, "every 502 seen");
    let killed = verdicts(&report, "worker_killed");
    assert_eq!(killed.len(), 1, "{}", report["verdicts"]);
    let v = killed[0];
    assert_eq!(v["count"], n502, "every 502 is a killed worker");
    let evidence = v["evidence"].to_string();
    let by_master = format!("killed by SIGTERM from php-fpm8.2 pid {} (killed_by_master)", fpm.pid());
    assert!(evidence.contains(&by_master), "the killer is the master, not the child re-raising its signal: {evidence}");
    let fix = v["fix"].as_str().unwrap();
    assert!(
        fix.contains(&format!("request_terminate_timeout = 2s (pool \"app\", {})", pool.display())),
        "the fix names the setting, its value, pool and file: {fix}"
    );
}

#[test]
fn a_gunicorn_worker_timeout_500_is_named_with_its_timeout() {
    require_root();
    let _serial = exclusive();
    let scratch = Scratch::new("gunicorn-timeout");
    let sock = scratch.path("app.sock");
    let mut cmd = Command::new(find_program("gunicorn").unwrap());
    cmd.args(["--bind", &format!("unix:{}", sock.display()), "--workers", "2", "--timeout", "1", "--worker-class", "sync", "--no-control-socket"])
        .arg("--chdir")
        .arg(repo_root().join("tests/apps"))
        .arg("slow_app:app")
        .env("APP_SLEEP", "4")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _gunicorn = Proc::spawn("gunicorn", &mut cmd).unwrap();
    wait_for("gunicorn's socket", Duration::from_secs(20), || sock.exists()).unwrap();
    let nginx = Nginx::start(&scratch, &NginxOpts { upstream: &format!("unix:{}:", sock.display()), ..Default::default() }).unwrap();
    let pid = nginx.master_pid().to_string();
    let tracer = Tracer::start(TRACER, &["diagnose", "--json", "--pid", &pid]).unwrap();
    let got = burst(nginx.port, 2);
    // gunicorn's master notices a stuck worker once a second: its 500 comes 1–3 s in.
    let report = tracer.stop().unwrap().pop().expect("the report");
    let n500 = nginx.count_status(500);
    eprintln!("clients got {got:?}; access log 500s {n500}; near misses {}", report["near_misses"]);
    assert!(n500 > 0, "the scenario must make gunicorn's worker timeout answer 500: {got:?}");
    assert_eq!(report["total_5xx"], 0, "a 500 is not a 502/504");
    let m = report["near_misses"].as_array().expect("near misses").iter().find(|m| m["kind"] == "app_server_timeout").expect("the timeout is named");
    assert_eq!(m["count"], n500, "each 500 tied to its worker's timeout kill");
    assert!(m["proof"].as_str().unwrap().contains("SIGABRT"), "{}", m["proof"]);
    assert!(m["fix"].as_str().unwrap().contains("--timeout 1 (command line)"), "{}", m["fix"]);
}
