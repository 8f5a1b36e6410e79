//! The report as Markdown: the verdicts with their proof and fix, the counts table and the near
//! misses, to paste into an incident ticket or a chat.

use std::io::{self, Write};

use crate::diagnosis::report::Report;

/// `|` and line breaks would end a table cell early.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

pub fn write(out: &mut impl Write, r: &Report) -> io::Result<()> {
    writeln!(out, "## upstream-tracer report\n")?;
    writeln!(
        out,
        "**{}** 502/504 seen, **{}** explained, **{}** unexplained; {} kernel events, {} lost.\n",
        r.total_5xx,
        r.explained,
        r.unexplained.len(),
        r.events,
        r.lost
    )?;
    for (i, v) in r.verdicts.iter().enumerate() {
        writeln!(out, "### Verdict {} — `{}` on `{}`\n", i + 1, v.kind, v.target)?;
        writeln!(out, "{}\n", v.proof)?;
        for e in &v.evidence {
            writeln!(out, "- {e}")?;
        }
        if !v.evidence.is_empty() {
            writeln!(out)?;
        }
        writeln!(out, "**Fix:** {}\n", v.fix)?;
    }
    if !r.upstreams.is_empty() {
        writeln!(out, "| upstream | connects | failed | requests | ttfb p99 | 502 | 504 | causes |")?;
        writeln!(out, "|---|--:|--:|--:|--:|--:|--:|---|")?;
        for u in &r.upstreams {
            let causes: Vec<String> = u.causes.iter().map(|(k, n)| format!("{k} {n}")).collect();
            writeln!(
                out,
                "| `{}` | {} | {} | {} | {:.1} ms | {} | {} | {} |",
                cell(&u.target),
                u.connects,
                u.failed_connects,
                u.requests,
                u.ttfb_p99_ms,
                u.status_502,
                u.status_504,
                cell(&causes.join(", "))
            )?;
        }
        writeln!(out)?;
    }
    for m in &r.near_misses {
        writeln!(out, "### Near miss (no 502/504 yet) — `{}` on `{}`\n\n{}\n\n**Fix:** {}\n", m.kind, m.target, m.proof, m.fix)?;
    }
    if !r.unexplained.is_empty() {
        writeln!(out, "**Unexplained:** {} 502/504 with no upstream event in the kernel before them.\n", r.unexplained.len())?;
    }
    if !r.error_log.is_empty() {
        let e: Vec<String> = r.error_log.iter().map(|(k, n)| format!("{k} {n}")).collect();
        writeln!(out, "nginx error log, same period: {}", e.join(", "))?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    #[test]
    fn cells_cannot_break_the_table() {
        assert_eq!(super::cell("a|b\nc"), "a\\|b c");
    }
}
