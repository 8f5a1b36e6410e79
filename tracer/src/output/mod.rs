//! Outputs behind one trait, generic over `io::Write` so tests render into a `Vec<u8>`.
//! `records` holds the serialisable shapes both outputs are built from (the JSON schema).

pub mod html;
pub mod jsonl;
pub mod markdown;
pub mod plots;
pub mod private;
pub mod prometheus;
pub mod records;
pub mod report;
pub mod rotating;
pub mod terminal;

use std::io;

pub use records::{ConnectFailed, Stats, TargetSummary, TcpConnectRecord, TcpListenerSummary, UpstreamClose};

pub trait Output {
    /// A connect() that failed, as it happens.
    fn connect_failed(&mut self, r: &ConnectFailed) -> io::Result<()>;
    /// A TCP connect attempt that left SYN_SENT (failed or delayed ones, or all with
    /// `--connections`).
    fn tcp_connect(&mut self, r: &TcpConnectRecord) -> io::Result<()>;
    /// A request cut short by the upstream, or given up by the proxy, as it happens.
    fn upstream_close(&mut self, r: &UpstreamClose) -> io::Result<()>;
    /// Per-target and per-listener summaries (the changed ones while running; all at the end).
    fn summary(&mut self, targets: &[TargetSummary], listeners: &[TcpListenerSummary], stats: &Stats) -> io::Result<()>;
}

/// Prints nothing (diagnose and report only want the verdicts at the end).
pub struct Quiet;

impl Output for Quiet {
    fn connect_failed(&mut self, _: &ConnectFailed) -> io::Result<()> {
        Ok(())
    }
    fn tcp_connect(&mut self, _: &TcpConnectRecord) -> io::Result<()> {
        Ok(())
    }
    fn upstream_close(&mut self, _: &UpstreamClose) -> io::Result<()> {
        Ok(())
    }
    fn summary(&mut self, _: &[TargetSummary], _: &[TcpListenerSummary], _: &Stats) -> io::Result<()> {
        Ok(())
    }
}
