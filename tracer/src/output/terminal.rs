//! Human-readable lines: one per failed connect, and a summary line per upstream target like
//! `unix:/run/gunicorn.sock  EAGAIN 81 in 2.1s of 100 connects  queue 17/16 (gunicorn pid 1234 listen(16), somaxconn 4096)`.

use std::io::{self, Write};

use super::records::{ConnectFailed, ListenerSummary, Stats, TargetSummary};
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
fn clock(unix_secs: f64) -> String {
    let ms = (unix_secs * 1000.0).round() as u64;
    let s = ms / 1000;
    format!("{:02}:{:02}:{:02}.{:03}", (s / 3600) % 24, (s / 60) % 60, s % 60, ms % 1000)
}

fn listener_text(l: &ListenerSummary) -> String {
    let mut who = Vec::new();
    if let (Some(pid), Some(comm)) = (l.owner_pid, &l.owner_comm) {
        who.push(format!("{comm} pid {pid}"));
    }
    match (l.listen_backlog, l.listen_backlog_source) {
        (Some(b), Some("at_least")) => who.push(format!("listen(≥{b})")),
        (Some(b), _) => who.push(format!("listen({b})")),
        _ => {}
    }
    let mut s = format!("queue {}/{}", l.peak_queue_len.max(l.queue_len), l.queue_max);
    if !who.is_empty() {
        s.push_str(&format!(" ({}", who.join(" ")));
        if let Some(m) = l.somaxconn {
            s.push_str(&format!(", somaxconn {m}"));
        }
        s.push(')');
    } else if let Some(m) = l.somaxconn {
        s.push_str(&format!(" (somaxconn {m})"));
    }
    s
}

/// One summary line for a target.
pub fn summary_line(t: &TargetSummary) -> String {
    let mut s = t.target.clone();
    if t.errors.is_empty() {
        s.push_str(&format!("  ok: {} connects, connect() p99 {:.0}us", t.connects, t.connect_p99_us));
    } else {
        let errs: Vec<String> = t
            .errors
            .iter()
            .map(|(name, e)| format!("{name} {} in {:.1}s", e.count, (e.last - e.first).max(0.0)))
            .collect();
        s.push_str(&format!("  {} of {} connects", errs.join(", "), t.connects));
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
        writeln!(
            self.out,
            "{} {}[{}] connect {}  {} ({})  {:.0}us",
            clock(r.time),
            r.comm,
            r.pid,
            r.target,
            r.error,
            r.meaning,
            r.duration_us
        )?;
        self.out.flush()
    }

    fn summary(&mut self, targets: &[TargetSummary], stats: &Stats) -> io::Result<()> {
        if targets.is_empty() && !stats.is_final {
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
        if stats.is_final {
            let l = &stats.lost;
            writeln!(
                self.out,
                "events: {} decoded, lost {} (ring buffer full {}, pending map full {}, undecodable {}), unreadable addresses {}",
                stats.events,
                l.total_dropped(),
                l.ringbuf_full,
                l.pending_map_full,
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
            "unix:/run/gunicorn.sock  EAGAIN 81 in 2.1s of 100 connects  queue 17/16 (gunicorn pid 1234 listen(16), somaxconn 4096)"
        );
    }
}
