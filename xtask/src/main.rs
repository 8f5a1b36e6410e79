//! Project tasks: `cargo xtask setup | demo | test | bench | fuzz`.
//! `setup` installs what a fresh machine lacks (idempotent); `demo` and `test` run it first, so
//! the README's two commands work from nothing.

mod bench;
mod demo;
mod fuzz;
mod setup;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "upstream-tracer project tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing: nginx, ab, wrk, bpftool, llvm + bpf-linker, rust-src, gunicorn, uwsgi.
    Setup,
    /// Live diagnosis of a real nginx → gunicorn (unix socket, backlog 16) overflowing its queue.
    Demo {
        /// Concurrent requests in the burst.
        #[arg(long, default_value_t = 100)]
        requests: u32,
    },
    /// Set up, then measure tracing overhead, event throughput, kernel time and memory
    /// (writes BENCHMARKS.md; `--smoke`: a few seconds of each, to check the bench works).
    Bench {
        #[arg(long)]
        smoke: bool,
        /// Run only these phases (comma-separated; the report then goes to
        /// target/BENCHMARKS-partial.md, BENCHMARKS.md stays as it is).
        #[arg(long, value_delimiter = ',', value_enum)]
        only: Vec<bench::Phase>,
    },
    /// Set up, then build the cargo-fuzz targets (fuzz/) and run each for a few seconds on its
    /// seeds (fuzz/seeds/TARGET); a crash fails with the input that caused it.
    Fuzz {
        /// How long each target runs.
        #[arg(long, default_value_t = 5)]
        seconds: u32,
        /// Only these targets (default: all).
        targets: Vec<String>,
    },
    /// Set up, then run every test (unit and root-only end-to-end) of the default members
    /// (the eBPF crate is built for the BPF target by tracer/build.rs, not tested on the host).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Setup => setup::run(),
        Cmd::Demo { requests } => {
            setup::run()?;
            demo::run(requests)
        }
        Cmd::Bench { smoke, only } => {
            setup::run()?;
            bench::run(smoke, &only)
        }
        Cmd::Fuzz { seconds, targets } => {
            setup::run()?;
            fuzz::run(seconds, &targets)
        }
        Cmd::Test { args } => {
            setup::run()?;
            let status = std::process::Command::new(env!("CARGO")).arg("test").args(&args).status()?;
            if !status.success() {
                anyhow::bail!("tests failed ({status})");
            }
            Ok(())
        }
    }
}
