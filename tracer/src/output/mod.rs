//! Outputs behind one trait, generic over `io::Write` so tests render into a `Vec<u8>`.
//! `records` holds the serialisable shapes both outputs are built from (the JSON schema).

pub mod jsonl;
pub mod records;
pub mod terminal;

use std::io;

pub use records::{ConnectFailed, Stats, TargetSummary};

pub trait Output {
    /// A connect() that failed, as it happens.
    fn connect_failed(&mut self, r: &ConnectFailed) -> io::Result<()>;
    /// Per-target summaries (the changed ones while running; all of them at the end).
    fn summary(&mut self, targets: &[TargetSummary], stats: &Stats) -> io::Result<()>;
}
