//! The HTML report is one self-contained file: it opens with the network off (in a network
//! namespace with no interface up) in Chromium, whose DOM shows every 502 drawn and the plots,
//! and in Firefox ESR, which renders it. Root only (network namespaces).

use std::process::Command;

use tracer_e2e::*;

const TRACER: &str = env!("CARGO_BIN_EXE_tracer");

/// A network namespace with nothing in it (loopback down): deleted on drop.
struct NoNetwork(String);

impl NoNetwork {
    fn new() -> NoNetwork {
        let name = format!("tracer-nonet-{}", std::process::id());
        assert!(Command::new("ip").args(["netns", "add", &name]).status().unwrap().success(), "ip netns add");
        NoNetwork(name)
    }

    fn run(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, program]);
        c
    }
}

impl Drop for NoNetwork {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn the_report_page_opens_offline_in_chromium_and_firefox() {
    require_root();
    let scratch = Scratch::new("report-page");
    let html = scratch.path("r.html");
    let fixture = repo_root().join("tests/fixtures/listen_queue_full.rec");
    let out = Command::new(TRACER).arg("report").arg(&fixture).arg("--json").arg("--html").arg(&html).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let total = report["total_5xx"].as_u64().unwrap();
    assert!(total > 0, "the fixture has 502s to draw");
    let offline = NoNetwork::new();

    let chromium = find_program("chromium").expect("chromium (cargo xtask setup installs it)");
    let dom = offline
        .run(chromium.to_str().unwrap())
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update"])
        .arg(format!("--user-data-dir={}", scratch.path("chrome").display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", html.display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains(&format!("{total} marks drawn")), "Chromium ran the page's script with the network off");
    assert!(dom.matches("class=\"plot\"").count() >= 2, "and drew the plots");

    let firefox = find_program("firefox-esr").expect("firefox-esr (cargo xtask setup installs it)");
    let shot = scratch.path("firefox.png");
    let status = offline
        .run(firefox.to_str().unwrap())
        .env("HOME", scratch.path("ffhome"))
        .args(["--headless", "--no-remote", "--window-size=900,1600", "--screenshot"])
        .arg(&shot)
        .arg(format!("file://{}", html.display()))
        .output()
        .unwrap();
    assert!(status.status.success(), "firefox-esr: {}", String::from_utf8_lossy(&status.stderr));
    let png = std::fs::read(&shot).expect("Firefox wrote a screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000, "a rendered page, not a blank one ({} bytes)", png.len());
}
