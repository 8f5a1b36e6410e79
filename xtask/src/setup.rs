//! Idempotent set-up of a fresh machine (Debian 12, root): every step checks first, so a second
//! run costs a few hundred milliseconds.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// Debian packages the build, the demo, the tests and the benchmarks use.
const APT: &[&str] = &[
    "llvm-22-dev",
    "nginx-light",
    "apache2-utils",
    "wrk",
    "bpftool",
    "bpftrace",
    "iproute2",
    "procps",
    "chromium",
    "firefox-esr",
    "php-fpm",
    "nghttp2-client",
];
/// PyPI app servers, pinned to versions checked here.
const PIP: &[(&str, &str)] = &[("gunicorn", "27.0.1"), ("uwsgi", "2.0.31")];
const BPF_LINKER: &str = "0.13.0";
/// `cargo xtask fuzz`: the newest release that builds with the installed nightly.
const CARGO_FUZZ: &str = "0.13.2";

fn ok(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn step(what: &str, cmd: &mut Command) -> Result<()> {
    eprintln!("setup: {what}");
    let status = cmd.status().with_context(|| format!("{what}: cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{what} failed ({status}): {cmd:?}");
    }
    Ok(())
}

fn apt_missing() -> Vec<&'static str> {
    APT.iter()
        .copied()
        .filter(|p| {
            let out = Command::new("dpkg-query").args(["-W", "-f", "${Status}", p]).output();
            !out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect()
}

pub fn run() -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("setup installs packages and the tests load eBPF programs: run as root");
    }
    let missing = apt_missing();
    if !missing.is_empty() {
        step("apt-get update", Command::new("apt-get").args(["update", "-qq"]))?;
        step(
            &format!("apt-get install {}", missing.join(" ")),
            Command::new("apt-get").args(["install", "-y", "-qq", "--no-install-recommends"]).args(&missing).env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    let has_src = Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("rust-src"));
    if !has_src {
        step(
            "rust-src for the nightly toolchain (build-std for the BPF target)",
            Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]),
        )?;
    }
    let linker_ok = Command::new("bpf-linker").arg("--version").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER));
    if !linker_ok {
        step(
            &format!("cargo install bpf-linker {BPF_LINKER} against LLVM 22 (about 75 s)"),
            Command::new(env!("CARGO"))
                .args(["install", "bpf-linker", "--version", BPF_LINKER, "--locked", "--no-default-features", "--features", "llvm-22"])
                .env("LLVM_PREFIX", "/usr/lib/llvm-22"),
        )?;
    }
    let fuzz_ok = Command::new("cargo-fuzz").arg("--version").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ));
    if !fuzz_ok {
        step(
            &format!("cargo install cargo-fuzz {CARGO_FUZZ}"),
            Command::new(env!("CARGO")).args(["install", "cargo-fuzz", "--version", CARGO_FUZZ, "--locked"]),
        )?;
    }
    for (pkg, version) in PIP {
        let have = Command::new("python3")
            .args(["-m", "pip", "show", pkg])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("Version: {version}")));
        if !have {
            step(
                &format!("pip install {pkg}=={version}"),
                Command::new("python3").args(["-m", "pip", "install", "-q", "--root-user-action=ignore", &format!("{pkg}=={version}")]),
            )?;
        }
    }
    if !Path::new("/sys/kernel/tracing/events").is_dir() && !ok(Command::new("mount").args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"])) {
        eprintln!("setup: warning: could not mount tracefs at /sys/kernel/tracing (the tracer will try again)");
    }
    Ok(())
}
