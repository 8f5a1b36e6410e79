//! `cargo xtask fuzz [--seconds N] [TARGET]...`: build the cargo-fuzz targets of `fuzz/` once
//! (nightly, address sanitizer), then run each for N seconds on its seeds (`fuzz/seeds/TARGET`,
//! kept in the repo) plus what earlier runs found (`fuzz/corpus/TARGET`, not kept). A crash stops
//! the run with the target's name and the input libFuzzer saved under `fuzz/artifacts/`.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// Every fuzz target (a `[[bin]]` of fuzz/Cargo.toml), one per parser of outside input.
pub const TARGETS: &[&str] = &["nginx_config", "error_log", "record", "sockaddr", "event", "daemon_config", "appserver", "what_if", "cli", "report"];

/// `cargo +nightly fuzz …` from the repository root (the rustup proxy picks the toolchain; the
/// variables cargo set for this xtask would pin the stable one).
fn cargo_fuzz(root: &Path) -> Command {
    let mut c = Command::new("cargo");
    c.current_dir(root).args(["+nightly", "fuzz"]);
    for v in ["RUSTUP_TOOLCHAIN", "RUSTC", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER", "CARGO", "CARGO_TARGET_DIR"] {
        c.env_remove(v);
    }
    c
}

pub fn run(seconds: u32, only: &[String]) -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("xtask lives in the repository")?;
    for t in only {
        if !TARGETS.contains(&t.as_str()) {
            bail!("unknown fuzz target '{t}' (targets: {})", TARGETS.join(", "));
        }
    }
    let targets: Vec<&str> = if only.is_empty() { TARGETS.to_vec() } else { only.iter().map(String::as_str).collect() };
    let t0 = Instant::now();
    let status =
        cargo_fuzz(root).args(["build", "--release"]).status().context("cannot run `cargo +nightly fuzz` (cargo xtask setup installs it)")?;
    if !status.success() {
        bail!("building the fuzz targets failed ({status})");
    }
    eprintln!("fuzz: targets built in {:.0} s", t0.elapsed().as_secs_f64());
    let mut summary = Vec::new();
    for t in targets {
        let corpus = root.join("fuzz/corpus").join(t);
        std::fs::create_dir_all(&corpus).with_context(|| format!("cannot create {}", corpus.display()))?;
        let started = Instant::now();
        let out = cargo_fuzz(root)
            .args(["run", "--release", t])
            .arg(&corpus)
            .arg(root.join("fuzz/seeds").join(t))
            .args(["--", &format!("-max_total_time={seconds}"), "-max_len=65536", "-timeout=10", "-rss_limit_mb=2048", "-print_final_stats=1"])
            .output()
            .with_context(|| format!("cannot run fuzz target {t}"))?;
        let log = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            let tail: Vec<&str> = log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
            bail!("fuzz target {t} failed ({}):\n{}", out.status, tail.join("\n"));
        }
        let runs = log.lines().find_map(|l| l.strip_prefix("stat::number_of_executed_units:")).map(str::trim).unwrap_or("?").to_string();
        let line = format!("{t}: {runs} executions in {:.0} s, no crash", started.elapsed().as_secs_f64());
        eprintln!("fuzz: {line}");
        summary.push(line);
    }
    eprintln!("fuzz: done in {:.0} s\n  {}", t0.elapsed().as_secs_f64(), summary.join("\n  "));
    Ok(())
}
