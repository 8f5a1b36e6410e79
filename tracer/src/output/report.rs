//! The verdict report for people: a table per upstream, one verdict per root cause with its proof
//! and fix, and the 5xx nothing explains.

use std::io::{self, Write};

use crate::diagnosis::compare::{Comparison, Outcome};
use crate::diagnosis::report::Report;

pub fn write_text(out: &mut impl Write, r: &Report) -> io::Result<()> {
    writeln!(out, "\n=== upstream-tracer report ===")?;
    writeln!(
        out,
        "{} 502/504 seen (status lines nginx wrote), {} explained, {} unexplained; {} events, {} lost",
        r.total_5xx,
        r.explained,
        r.unexplained.len(),
        r.events,
        r.lost
    )?;
    if !r.status_sources.is_empty() {
        let s: Vec<String> = r.status_sources.iter().map(|(k, n)| format!("{k} {n}")).collect();
        writeln!(out, "read from: {}", s.join(", "))?;
    }
    for m in &r.status_sources_missing {
        writeln!(out, "not seen in the kernel ({m}): such 5xx are only in nginx's error log below")?;
    }
    if !r.upstreams.is_empty() {
        writeln!(
            out,
            "\n{:<48} {:>8} {:>7} {:>8} {:>10} {:>5} {:>5}  causes",
            "upstream", "connects", "failed", "requests", "ttfb p99", "502", "504"
        )?;
        for u in &r.upstreams {
            let causes: Vec<String> = u.causes.iter().map(|(k, n)| format!("{k} {n}")).collect();
            writeln!(
                out,
                "{:<48} {:>8} {:>7} {:>8} {:>8.1}ms {:>5} {:>5}  {}",
                u.target,
                u.connects,
                u.failed_connects,
                u.requests,
                u.ttfb_p99_ms,
                u.status_502,
                u.status_504,
                causes.join(", ")
            )?;
        }
    }
    for (i, v) in r.verdicts.iter().enumerate() {
        writeln!(out, "\nVERDICT {} — {} on {}", i + 1, v.kind, v.target)?;
        writeln!(out, "  {}", v.proof)?;
        for e in &v.evidence {
            writeln!(out, "  · {e}")?;
        }
        writeln!(out, "  FIX: {}", v.fix)?;
    }
    for (i, m) in r.near_misses.iter().enumerate() {
        writeln!(out, "\nNEAR MISS {} (no 502/504 yet) — {} on {}", i + 1, m.kind, m.target)?;
        writeln!(out, "  {}", m.proof)?;
        writeln!(out, "  FIX: {}", m.fix)?;
    }
    for w in &r.what_if {
        let m = &w.model;
        writeln!(out, "\nWHAT IF — {} (model: {} workers × {:.0} ms each, {} arrivals)", w.target, m.workers, m.service_ns as f64 / 1e6, w.arrivals)?;
        writeln!(out, "  recorded: {} refused at backlog {}; the model gives {}", w.recorded_refused, w.backlog, w.model_refused)?;
        for p in &w.predictions {
            writeln!(out, "  with backlog {} and {} workers: {} would have been refused", p.backlog, p.workers, p.refused)?;
        }
        match w.smallest_backlog {
            Some(b) => writeln!(out, "  smallest backlog with none refused: {b} (at {} workers)", m.workers)?,
            None => writeln!(out, "  no backlog up to 65535 absorbs it at {} workers", m.workers)?,
        }
        match w.smallest_workers {
            Some(n) => writeln!(out, "  fewest workers with none refused: {n} (at backlog {})", w.backlog)?,
            None => writeln!(out, "  no worker count up to 1024 absorbs it at backlog {}", w.backlog)?,
        }
    }
    if !r.unexplained.is_empty() {
        writeln!(out, "\nUNEXPLAINED: {} 502/504 with no upstream event in the kernel before them:", r.unexplained.len())?;
        for u in r.unexplained.iter().take(20) {
            writeln!(out, "  {:.3} nginx pid {} → {}", u.time, u.pid, u.status)?;
        }
    }
    if !r.other_5xx.is_empty() {
        let o: Vec<String> = r.other_5xx.iter().map(|(s, n)| format!("{n} × {s}")).collect();
        writeln!(out, "\nOther 5xx (from the app or nginx itself, not an upstream failure): {}", o.join(", "))?;
    }
    if !r.absorbed.is_empty() {
        let a: Vec<String> = r.absorbed.iter().map(|(k, n)| format!("{n} × {k}")).collect();
        // Only a 502/504 the kernel saw is counted: a failure without one may have been retried by
        // nginx with success, or its client may have gone, or its status went unseen (TLS).
        writeln!(out, "Upstream failures not followed by a 502/504 on that nginx worker (retried by nginx, or the client left): {}", a.join(", "))?;
    }
    if !r.error_log.is_empty() {
        let e: Vec<String> = r.error_log.iter().map(|(k, n)| format!("{k} {n}")).collect();
        writeln!(out, "nginx error log, same period: {}", e.join(", "))?;
    }
    if r.total_5xx == 0 {
        writeln!(out, "\nNo 502/504 were written while tracing.")?;
    }
    out.flush()
}

/// Two recordings side by side, for people.
pub fn write_comparison(out: &mut impl Write, c: &Comparison) -> io::Result<()> {
    writeln!(out, "\n=== upstream-tracer: before / after ===")?;
    for (name, s) in [("before", &c.before), ("after", &c.after)] {
        writeln!(
            out,
            "{name:<6} {}: {:.1} s, {} 502/504 ({} unexplained), {} events lost",
            s.file, s.duration_s, s.total_5xx, s.unexplained, s.lost
        )?;
    }
    if c.causes.is_empty() {
        writeln!(out, "\nNo 502/504 with a known cause in either recording.")?;
    } else {
        writeln!(out, "\n{:<28} {:<48} {:>8} {:>8} {:>10} {:>10}  outcome", "root cause", "upstream", "before", "after", "before/min", "after/min")?;
        for r in &c.causes {
            writeln!(
                out,
                "{:<28} {:<48} {:>8} {:>8} {:>10.1} {:>10.1}  {}",
                r.kind, r.target, r.before, r.after, r.before_per_min, r.after_per_min, r.outcome
            )?;
        }
    }
    if !c.upstreams.is_empty() {
        writeln!(out, "\n{:<48} {:>10} {:>10} {:>14} {:>14}", "upstream", "req before", "req after", "ttfb p99 before", "ttfb p99 after")?;
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}ms"));
        for u in &c.upstreams {
            writeln!(
                out,
                "{:<48} {:>10} {:>10} {:>14} {:>14}",
                u.target,
                u.before_requests,
                u.after_requests,
                ms(u.before_ttfb_p99_ms),
                ms(u.after_ttfb_p99_ms)
            )?;
        }
    }
    for r in c.causes.iter().filter(|r| r.outcome == Outcome::Gone) {
        writeln!(out, "\n{} on {}: gone ({} before, none after, with traffic to it).", r.kind, r.target, r.before)?;
    }
    for r in c.causes.iter().filter(|r| r.outcome == Outcome::NoTraffic) {
        writeln!(out, "\n{} on {}: not seen after, but nothing was sent to it either: not proven gone.", r.kind, r.target)?;
    }
    out.flush()
}
