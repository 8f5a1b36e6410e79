//! Outputs behind one trait, generic over `io::Write` so tests render into a `Vec<u8>`.
//! `records` holds the serialisable shapes both outputs are built from (the JSON schema).

pub mod jsonl;
pub mod records;
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
