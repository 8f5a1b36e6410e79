//! A self-contained HTML report (no server, no external files): the verdicts, and a timeline with
//! one mark per 502/504, coloured by cause, one row per upstream. The SVG is built here; a few
//! lines of inline script only count what was drawn, so a browser test can tell the page ran.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::diagnosis::compare::Comparison;
use crate::diagnosis::report::Report;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

use crate::output::plots::{self, PALETTE as COLORS};

pub fn render(r: &Report) -> String {
    let mut h = String::new();
    h.push_str("<!doctype html><html><head><meta charset=\"utf-8\"><title>upstream-tracer report</title><style>");
    h.push_str("body{font-family:system-ui,sans-serif;margin:2em;color:#222}h2{margin-top:1.5em}.v{border-left:4px solid #d62728;padding:.3em .8em;margin:.8em 0;background:#fafafa}.fix{color:#185}table{border-collapse:collapse}td,th{padding:.2em .6em;border-bottom:1px solid #ddd;text-align:right}td:first-child,th:first-child{text-align:left}svg text{font-size:11px}svg.timeline,svg.plot{width:100%;max-width:1000px;height:auto}figure{margin:.5em 0 1.2em}figcaption{font-size:.95em}@media (max-width:700px){body{margin:.5em}td,th{padding:.1em .3em}}@media print{body{margin:0;color:#000}.v{background:none}figure,.v{break-inside:avoid}}");
    h.push_str("</style></head><body>");
    let _ = write!(
        h,
        "<h1>upstream-tracer report</h1><p><b id=\"total\">{}</b> 502/504 seen, <b>{}</b> explained, <b>{}</b> unexplained; {} events, {} lost.</p>",
        r.total_5xx,
        r.explained,
        r.unexplained.len(),
        r.events,
        r.lost
    );
    h.push_str("<h2>Verdicts</h2>");
    for v in &r.verdicts {
        let _ = write!(h, "<div class=\"v\"><b>{}</b> — {}<br>{}<ul>", esc(v.kind.as_str()), esc(&v.target), esc(&v.proof));
        for e in &v.evidence {
            let _ = write!(h, "<li>{}</li>", esc(e));
        }
        let _ = write!(h, "</ul><span class=\"fix\">Fix: {}</span></div>", esc(&v.fix));
    }
    if r.verdicts.is_empty() {
        h.push_str("<p>No 502/504 with a known cause.</p>");
    }
    if !r.near_misses.is_empty() {
        h.push_str("<h2>Near misses (no 502/504 yet)</h2>");
        for m in &r.near_misses {
            let _ = write!(
                h,
                "<div class=\"v\"><b>{}</b> — {}<br>{}<br><span class=\"fix\">Fix: {}</span></div>",
                esc(m.kind.as_str()),
                esc(&m.target),
                esc(&m.proof),
                esc(&m.fix)
            );
        }
    }
    h.push_str("<h2>Upstreams</h2><table><tr><th>upstream</th><th>connects</th><th>failed</th><th>requests</th><th>ttfb p99 ms</th><th>502</th><th>504</th></tr>");
    for u in &r.upstreams {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td></tr>",
            esc(&u.target),
            u.connects,
            u.failed_connects,
            u.requests,
            u.ttfb_p99_ms,
            u.status_502,
            u.status_504
        );
    }
    h.push_str("</table><h2>Timeline</h2>");
    h.push_str(&timeline(r));
    if let Some(series) = &r.series {
        h.push_str(&plots::render(series));
    }
    for w in &r.what_if {
        h.push_str(&plots::what_if(w));
    }
    if !r.unexplained.is_empty() {
        let _ = write!(h, "<h2>Unexplained</h2><p>{} 502/504 with no upstream event before them.</p>", r.unexplained.len());
    }
    h.push_str("<p id=\"drawn\"></p><script>var m=document.querySelectorAll('svg .mark');document.getElementById('drawn').textContent=m.length+' marks drawn';document.title='upstream-tracer report ('+m.length+')';</script>");
    h.push_str("</body></html>\n");
    h
}

fn timeline(r: &Report) -> String {
    let mut s = String::new();
    if r.timeline.is_empty() {
        return "<p>No 502/504 to draw.</p>".into();
    }
    let t0 = r.timeline.iter().map(|t| t.time).fold(f64::INFINITY, f64::min);
    let t1 = r.timeline.iter().map(|t| t.time).fold(f64::NEG_INFINITY, f64::max);
    let span = (t1 - t0).max(0.001);
    let mut rows: Vec<String> = r.timeline.iter().map(|t| t.target.clone().unwrap_or_else(|| "(unexplained)".into())).collect();
    rows.sort();
    rows.dedup();
    let kinds: Vec<&str> = {
        let mut k: Vec<&str> = r.timeline.iter().map(|t| t.verdict.map_or("unexplained", |v| v.as_str())).collect();
        k.sort();
        k.dedup();
        k
    };
    let color: BTreeMap<&str, &str> = kinds.iter().enumerate().map(|(i, k)| (*k, COLORS[i % COLORS.len()])).collect();
    let (left, width, row_h) = (330.0, 800.0, 28.0);
    let height = 40.0 + row_h * rows.len() as f64 + 20.0 * kinds.len() as f64;
    let _ = write!(s, "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"timeline\" viewBox=\"0 0 {} {height}\">", left + width + 20.0);
    for (i, row) in rows.iter().enumerate() {
        let y = 30.0 + row_h * i as f64;
        let _ = write!(
            s,
            "<text x=\"0\" y=\"{}\">{}</text><line x1=\"{left}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\" stroke=\"#ddd\"/>",
            y + 4.0,
            esc(row),
            left + width
        );
    }
    for t in &r.timeline {
        let row = t.target.clone().unwrap_or_else(|| "(unexplained)".into());
        let y = 30.0 + row_h * rows.iter().position(|r| *r == row).unwrap_or(0) as f64;
        let x = left + width * (t.time - t0) / span;
        let kind = t.verdict.map_or("unexplained", |v| v.as_str());
        let _ = write!(
            s,
            "<circle class=\"mark status-{}\" cx=\"{x:.1}\" cy=\"{y}\" r=\"4\" fill=\"{}\" fill-opacity=\"0.6\"><title>{} {} at +{:.3} s</title></circle>",
            t.status,
            color[kind],
            t.status,
            esc(kind),
            t.time - t0
        );
    }
    let axis_y = 30.0 + row_h * rows.len() as f64;
    let _ = write!(s, "<text x=\"{left}\" y=\"{axis_y}\">0 s</text><text x=\"{}\" y=\"{axis_y}\">{span:.2} s</text>", left + width - 40.0);
    for (i, k) in kinds.iter().enumerate() {
        let y = axis_y + 20.0 * (i + 1) as f64;
        let _ = write!(
            s,
            "<circle cx=\"{}\" cy=\"{}\" r=\"5\" fill=\"{}\"/><text x=\"{}\" y=\"{y}\">{}</text>",
            left + 5.0,
            y - 4.0,
            color[k],
            left + 15.0,
            esc(k)
        );
    }
    s.push_str("</svg>");
    s
}

/// Two recordings side by side: the page a post-mortem attaches.
pub fn render_comparison(c: &Comparison) -> String {
    let mut h = String::new();
    h.push_str("<!doctype html><html><head><meta charset=\"utf-8\"><title>upstream-tracer: before / after</title><style>");
    h.push_str("body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse}td,th{padding:.2em .6em;border-bottom:1px solid #ddd;text-align:right}td:first-child,th:first-child,td:nth-child(2),th:nth-child(2){text-align:left}.gone{color:#185;font-weight:bold}.more,.new{color:#d62728;font-weight:bold}");
    h.push_str("</style></head><body><h1>Before / after</h1><ul>");
    for (name, s) in [("before", &c.before), ("after", &c.after)] {
        let _ = write!(
            h,
            "<li><b>{name}</b> {}: {:.1} s, {} 502/504 ({} unexplained), {} events lost</li>",
            esc(&s.file),
            s.duration_s,
            s.total_5xx,
            s.unexplained,
            s.lost
        );
    }
    h.push_str("</ul><h2>Root causes</h2><table><tr><th>root cause</th><th>upstream</th><th>before</th><th>after</th><th>before/min</th><th>after/min</th><th>outcome</th></tr>");
    for r in &c.causes {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td class=\"{o}\">{o}</td></tr>",
            esc(r.kind.as_str()),
            esc(&r.target),
            r.before,
            r.after,
            r.before_per_min,
            r.after_per_min,
            o = r.outcome.as_str()
        );
    }
    h.push_str("</table><h2>Upstreams</h2><table><tr><th>upstream</th><th></th><th>requests before</th><th>requests after</th><th>ttfb p99 before</th><th>ttfb p99 after</th></tr>");
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1} ms"));
    for u in &c.upstreams {
        let _ = write!(
            h,
            "<tr><td>{}</td><td></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&u.target),
            u.before_requests,
            u.after_requests,
            ms(u.before_ttfb_p99_ms),
            ms(u.after_ttfb_p99_ms)
        );
    }
    h.push_str("</table></body></html>\n");
    h
}
