//! One JSON object per line (`--json`); the schema is `records.rs`.

use std::io::{self, Write};

use serde::Serialize;

use super::records::{ConnectFailed, Stats, TargetSummary, TcpConnectRecord, TcpListenerSummary, UpstreamClose};
use super::Output;

pub struct JsonLines<W: Write> {
    out: W,
}

impl<W: Write> JsonLines<W> {
    pub fn new(out: W) -> JsonLines<W> {
        JsonLines { out }
    }

    fn line(&mut self, v: &impl Serialize) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, v)?;
        self.out.write_all(b"\n")
    }
}

impl<W: Write> Output for JsonLines<W> {
    fn connect_failed(&mut self, r: &ConnectFailed) -> io::Result<()> {
        self.line(r)?;
        self.out.flush()
    }

    fn tcp_connect(&mut self, r: &TcpConnectRecord) -> io::Result<()> {
        self.line(r)
    }

    fn upstream_close(&mut self, r: &UpstreamClose) -> io::Result<()> {
        self.line(r)?;
        self.out.flush()
    }

    fn summary(&mut self, targets: &[TargetSummary], listeners: &[TcpListenerSummary], stats: &Stats) -> io::Result<()> {
        for t in targets {
            self.line(t)?;
        }
        for l in listeners {
            self.line(l)?;
        }
        if stats.is_final || !targets.is_empty() || !listeners.is_empty() {
            self.line(stats)?;
        }
        self.out.flush()
    }
}
