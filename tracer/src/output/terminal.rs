//! Human-readable lines: one per failed connect, and a summary line per upstream target like
//! `unix:/run/gunicorn.sock  EAGAIN 81 in 2.1s of 100 connects  queue 17/16 (gunicorn pid 1234, listen(16), somaxconn 4096)`.

use std::io::{self, Write};
use tracer_common::request::CloseClass;
use tracer_common::tcp::ConnectOutcome;

use super::records::{
    ConnectFailed, ListenerSummary, RequestSummary, Stats, TargetSummary, TcpConnectRecord, TcpListenerSummary, TcpSummary, UpstreamClose,
};
use super::Output;

pub struct Terminal<W: Write> {
    out: W,
}

impl<W: Write> Terminal<W> {
    pub fn new(out: W) -> Terminal<W> {
        Terminal { out }
    }
}

/// `HH:MM:SS.mmm` of a unix time.
pub fn clock(unix_secs: f64) -> String {
    let ms = (unix_secs * 1000.0).round() as u64;
    let s = ms / 1000;
    format!("{:02}:{:02}:{:02}.{:03}", (s / 3600) % 24, (s / 60) % 60, s % 60, ms % 1000)
}

/// `850us`, `12.3ms`, `3.0s`.
pub fn human_us(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.0}us")
    } else if us < 1_000_000.0 {
        format!("{:.1}ms", us / 1e3)
    } else {
        format!("{:.1}s", us / 1e6)
    }
}

/// `(gunicorn pid 42, listen(8), somaxconn 4096)`
fn owner_text(l: &ListenerSummary) -> String {
    let mut parts = Vec::new();
    if let (Some(pid), Some(comm)) = (l.owner_pid, &l.owner_comm) {
        parts.push(format!("{comm} pid {pid}"));
    }
    match (l.listen_backlog, l.listen_backlog_source) {
        (Some(b), Some("at_least")) => parts.push(format!("listen(≥{b})")),
        (Some(b), _) => parts.push(format!("listen({b})")),
        _ => {}
    }
    if let Some(m) = l.somaxconn {
        parts.push(format!("somaxconn {m}"));
    }
    format!("({})", parts.join(", "))
}

fn requests_text(r: &RequestSummary) -> String {
    let mut s = format!("{} requests, ttfb p50 {} p99 {}", r.completed, human_us(r.ttfb_p50_us), human_us(r.ttfb_p99_us));
    for (n, what) in [
        (r.premature_closes, "premature closes"),
        (r.keepalive_races, "keep-alive races"),
        (r.proxy_aborts, "proxy aborts (timeouts)"),
        (r.idle_closes, "idle closes"),
    ] {
        if n > 0 {
            s.push_str(&format!(", {n} {what}"));
        }
    }
    s
}

fn tcp_text(t: &TcpSummary) -> String {
    let mut s = format!("{} connects", t.attempts);
    if t.delayed_connects > 0 {
        s.push_str(&format!(", {} delayed ≥1s", t.delayed_connects));
    }
    if t.abandoned > 0 {
        s.push_str(&format!(", {} abandoned (connect timeout", t.abandoned));
        if t.abandoned_late > 0 {
            s.push_str(&format!("; {} just as the handshake completed", t.abandoned_late));
        }
        s.push(')');
    }
    if t.refused > 0 {
        s.push_str(&format!(", {} refused", t.refused));
    }
    if t.established > 0 {
        s.push_str(&format!(", connect p99 {}", human_us(t.connect_latency_p99_us)));
    }
    s
}

/// One line for a TCP listener, e.g.
/// `127.0.0.1:18000 (gunicorn pid 42, listen(8), somaxconn 4096) queue full: 361 SYN + 12 ACK drops; 57 connects delayed ≥1s; connect p99 3.0s; accept wait p99 1.9s`
pub fn listener_line(l: &TcpListenerSummary) -> String {
    let mut s = l.listener.clone();
    if let Some(q) = &l.queue {
        s.push_str(&format!(" {}", owner_text(q)));
    }
    let mut parts = Vec::new();
    if l.syn_drops + l.ack_drops > 0 {
        let mut full = format!("queue full: {} SYN + {} ACK drops", l.syn_drops, l.ack_drops);
        if let Some(q) = &l.queue {
            full.push_str(&format!(" (queue {}/{})", q.peak_queue_len, q.queue_max));
        }
        parts.push(full);
    }
    let c = &l.connects;
    if c.delayed_connects > 0 {
        parts.push(format!("{} connects delayed ≥1s", c.delayed_connects));
    }
    if c.abandoned > 0 {
        parts.push(format!("{} connect timeouts", c.abandoned));
    }
    if c.established > 0 {
        parts.push(format!("connect p99 {}", human_us(c.connect_latency_p99_us)));
    }
    if l.accepts > 0 {
        parts.push(format!("accept wait p50 {} p99 {} ({} accepts)", human_us(l.accept_wait_p50_us), human_us(l.accept_wait_p99_us), l.accepts));
    }
    if parts.is_empty() {
        parts.push("no traffic traced".into());
    }
    format!("{s} {}", parts.join("; "))
}

/// `queue 17/16 (gunicorn pid 1234, listen(16), somaxconn 4096)`
fn listener_text(l: &ListenerSummary) -> String {
    format!("queue {}/{} {}", l.peak_queue_len.max(l.queue_len), l.queue_max, owner_text(l))
}

/// One summary line for a target.
pub fn summary_line(t: &TargetSummary) -> String {
    let mut s = t.target.clone();
    if t.errors.is_empty() && t.tcp.is_none() {
        s.push_str(&format!("  ok: {} connects, connect() p99 {:.0}us", t.connects, t.connect_p99_us));
    } else if t.errors.is_empty() {
        s.push_str(&format!("  {} connect() calls", t.connects));
    } else {
        let errs: Vec<String> = t.errors.iter().map(|(name, e)| format!("{name} {} in {:.1}s", e.count, (e.last - e.first).max(0.0))).collect();
        s.push_str(&format!("  {} of {} connects", errs.join(", "), t.connects));
    }
    if let Some(tcp) = &t.tcp {
        s.push_str(&format!("  TCP: {}", tcp_text(tcp)));
    }
    if let Some(r) = &t.requests {
        s.push_str(&format!("  {}", requests_text(r)));
    }
    match &t.listener {
        Some(l) => s.push_str(&format!("  {}", listener_text(l))),
        None if t.failed > 0 && t.family == "unix" => s.push_str("  no listener on this path"),
        None if t.failed > 0 => s.push_str("  no listener found"),
        None => {}
    }
    s
}

impl<W: Write> Output for Terminal<W> {
    fn connect_failed(&mut self, r: &ConnectFailed) -> io::Result<()> {
        writeln!(self.out, "{} {}[{}] connect {}  {} ({})  {:.0}us", clock(r.time), r.comm, r.pid, r.target, r.error, r.meaning, r.duration_us)?;
        self.out.flush()
    }

    fn tcp_connect(&mut self, r: &TcpConnectRecord) -> io::Result<()> {
        let what = match r.outcome {
            ConnectOutcome::Established => format!("established after {}", human_us(r.latency_us)),
            ConnectOutcome::Refused => "refused (RST: nothing listening)".to_string(),
            ConnectOutcome::Abandoned => format!("abandoned in SYN_SENT after {} (connect timeout)", human_us(r.latency_us)),
        };
        writeln!(self.out, "{} {}[{}] tcp {} → {}  {what}, {} SYN retransmits", clock(r.time), r.comm, r.pid, r.local, r.remote, r.syn_retransmits)?;
        self.out.flush()
    }

    fn upstream_close(&mut self, r: &UpstreamClose) -> io::Result<()> {
        let what = match r.class {
            CloseClass::Premature => format!("upstream closed ({}) a request {:.0} ms old", r.how, r.request_age_ms),
            CloseClass::KeepaliveRace => {
                format!("keep-alive race: request sent on a connection idle {:.0} ms, upstream closed it ({})", r.idle_before_ms, r.how)
            }
            CloseClass::ResetUnused => "upstream reset the connection right after the handshake, before the request".to_string(),
            CloseClass::ProxyAbort | CloseClass::Idle | CloseClass::Unused => {
                format!("proxy gave up on a request after {:.0} ms (closed it)", r.request_age_ms)
            }
        };
        let mut line = format!("{} {}[{}] {}  {what}", clock(r.time), r.comm, r.pid, r.target.as_deref().unwrap_or("(unknown upstream)"));
        if let Some(w) = &r.worker {
            match (&w.signal_name, &w.sender_comm, w.sender_pid) {
                (Some(sig), Some(by), Some(by_pid)) => line.push_str(&format!(
                    " — worker {} pid {} got {sig} from {by} pid {by_pid} ({})",
                    w.comm,
                    w.pid,
                    w.cause.as_str().replace('_', " ")
                )),
                _ => line.push_str(&format!(" — worker {} pid {} exited with no fatal signal (recycled or reloaded)", w.comm, w.pid)),
            }
        }
        writeln!(self.out, "{line}")?;
        self.out.flush()
    }

    fn summary(&mut self, targets: &[TargetSummary], listeners: &[TcpListenerSummary], stats: &Stats) -> io::Result<()> {
        if targets.is_empty() && listeners.is_empty() && !stats.is_final {
            return Ok(());
        }
        let title = if stats.is_final { "summary" } else { "so far" };
        writeln!(self.out, "--- upstream targets ({title}) ---")?;
        for t in targets {
            writeln!(self.out, "{}", summary_line(t))?;
        }
        if targets.is_empty() {
            writeln!(self.out, "(no connect() seen)")?;
        }
        if !listeners.is_empty() {
            writeln!(self.out, "--- TCP listeners on this host ---")?;
            for l in listeners {
                writeln!(self.out, "{}", listener_line(l))?;
            }
        }
        if stats.is_final && !stats.node_counters.is_empty() {
            let c: Vec<String> = stats.node_counters.iter().map(|(k, v)| format!("{k} +{v}")).collect();
            writeln!(self.out, "node counters while tracing (nstat): {}", c.join(", "))?;
        }
        if stats.is_final {
            let l = &stats.lost;
            writeln!(
                self.out,
                "events: {} decoded, lost {} (ring buffer full {}, pending map full {}, connection map full {}, socket lookup failed {}, evicted from the full connection map {}, program runs skipped by the kernel {}, undecodable {}), unreadable addresses {}",
                stats.events,
                l.total_dropped(),
                l.ringbuf_full,
                l.pending_map_full,
                l.conn_map_full,
                l.sock_lookup_failed,
                l.conn_evicted,
                l.runs_skipped,
                l.decode_errors,
                l.addr_read_failed
            )?;
            for p in stats.probes.iter().filter(|p| !p.attached) {
                writeln!(self.out, "probe {} not attached: {}", p.tracepoint, p.error.as_deref().unwrap_or("?"))?;
            }
        }
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::records::ErrnoSummary;
    use std::collections::BTreeMap;

    #[test]
    fn the_line_a_user_reads() {
        let mut errors = BTreeMap::new();
        errors.insert("EAGAIN".to_string(), ErrnoSummary { errno: 11, count: 81, first: 100.0, last: 102.1 });
        let t = TargetSummary {
            kind: "target",
            is_final: true,
            target: "unix:/run/gunicorn.sock".into(),
            family: "unix",
            connects: 100,
            failed: 81,
            errors,
            connect_p50_us: 10.0,
            connect_p99_us: 20.0,
            connect_max_us: 30.0,
            tcp: None,
            requests: None,
            listener: Some(ListenerSummary {
                inode: 1,
                queue_len: 3,
                peak_queue_len: 17,
                queue_max: 16,
                owner_pid: Some(1234),
                owner_comm: Some("gunicorn".into()),
                owner_sharers: Some(1),
                listen_backlog: Some(16),
                listen_backlog_source: Some("derived"),
                somaxconn: Some(4096),
            }),
        };
        assert_eq!(
            summary_line(&t),
            "unix:/run/gunicorn.sock  EAGAIN 81 in 2.1s of 100 connects  queue 17/16 (gunicorn pid 1234, listen(16), somaxconn 4096)"
        );
    }
}
