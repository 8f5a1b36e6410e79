//! The verdict report for people: a table per upstream, one verdict per root cause with its proof
//! and fix, and the 5xx nothing explains.

use std::io::{self, Write};

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
        writeln!(out, "Upstream failures nginx retried without an error to the client: {}", a.join(", "))?;
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
