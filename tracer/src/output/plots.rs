//! The report's plots: inline SVG on one shared time axis per upstream (connect() calls and
//! failures, requests completed, time to first byte, the listener's queue against its maximum,
//! 502/504 by verdict, worker deaths as marks), each with a text summary beside it; and the
//! what-if curve. Colours from the Okabe–Ito palette (distinct under colour blindness); no
//! script, nothing fetched.

use std::fmt::Write as _;

use crate::diagnosis::series::{ListenerSeries, Points, Series, UpstreamSeries};
use crate::diagnosis::what_if::WhatIf;
use crate::output::terminal::clock;

/// Okabe–Ito: orange, sky blue, bluish green, vermillion, blue, reddish purple, yellow, black.
pub const PALETTE: &[&str] = &["#E69F00", "#56B4E9", "#009E73", "#D55E00", "#0072B2", "#CC79A7", "#F0E442", "#000000"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

struct Line<'a> {
    label: String,
    color: &'a str,
    points: &'a [(f64, f64)],
    /// Counts per second, drawn as bars one second wide (side by side with the other bars);
    /// otherwise a line through the points (a dot when there is one).
    bars: bool,
}

/// The plot's size and its drawing area inside (viewBox units; the SVG scales to the page).
const W: f64 = 820.0;
const H: f64 = 190.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 800.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 150.0;

/// One plot: `lines` over x in [x0, x1], an optional dashed horizontal limit, vertical marks.
fn plot(
    title: &str,
    x0: f64,
    x1: f64,
    x_label: &dyn Fn(f64) -> String,
    lines: &[Line],
    limit: Option<(f64, String)>,
    marks: &[(f64, String)],
) -> String {
    let y_max = lines.iter().flat_map(|l| l.points.iter().map(|p| p.1)).chain(limit.as_ref().map(|l| l.0)).fold(1.0f64, f64::max) * 1.1;
    let x = |v: f64| LEFT + (RIGHT - LEFT) * (v - x0) / (x1 - x0).max(1e-9);
    let y = |v: f64| BOTTOM - (BOTTOM - TOP) * v / y_max;
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"plot\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\"><rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#bbb\"/>",
        esc(title),
        RIGHT - LEFT,
        BOTTOM - TOP
    );
    let _ = write!(s, "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>", LEFT - 4.0, TOP + 8.0, fmt_num(y_max / 1.1));
    let _ = write!(s, "<text x=\"{}\" y=\"{BOTTOM}\" text-anchor=\"end\">0</text>", LEFT - 4.0);
    for (i, v) in [x0, (x0 + x1) / 2.0, x1].iter().enumerate() {
        let anchor = ["start", "middle", "end"][i];
        let _ = write!(s, "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"{anchor}\">{}</text>", x(*v), BOTTOM + 14.0, esc(&x_label(*v)));
    }
    if let Some((v, label)) = &limit {
        let _ = write!(
            s,
            "<line x1=\"{LEFT}\" x2=\"{RIGHT}\" y1=\"{0:.1}\" y2=\"{0:.1}\" stroke=\"#000\" stroke-dasharray=\"6 3\"/><text x=\"{RIGHT}\" y=\"{1:.1}\" text-anchor=\"end\">{2}</text>",
            y(*v),
            y(*v) - 3.0,
            esc(label)
        );
    }
    for (t, what) in marks {
        let _ = write!(
            s,
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{TOP}\" y2=\"{BOTTOM}\" stroke=\"#CC79A7\" stroke-dasharray=\"2 2\"><title>{1}</title></line>",
            x(*t),
            esc(what)
        );
        if marks.len() <= 3 {
            let _ = write!(s, "<text x=\"{:.1}\" y=\"{}\">{}</text>", x(*t) + 3.0, TOP + 12.0, esc(what));
        }
    }
    let bar_sets = lines.iter().filter(|l| l.bars).count().max(1) as f64;
    let mut bar_i = 0.0;
    for l in lines {
        if l.bars {
            let w = (x(x0 + 1.0) - x(x0)) / bar_sets;
            for p in l.points.iter().filter(|p| p.1 > 0.0) {
                let _ = write!(
                    s,
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{}: {}</title></rect>",
                    x(p.0) + w * bar_i,
                    y(p.1),
                    (w - 1.0).max(1.0),
                    BOTTOM - y(p.1),
                    l.color,
                    esc(&l.label),
                    fmt_num(p.1)
                );
            }
            bar_i += 1.0;
        } else if let [p] = l.points {
            let _ =
                write!(s, "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{}\"><title>{}</title></circle>", x(p.0), y(p.1), l.color, esc(&l.label));
        } else {
            let pts: Vec<String> = l.points.iter().map(|p| format!("{:.1},{:.1}", x(p.0), y(p.1))).collect();
            let _ = write!(
                s,
                "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"><title>{}</title></polyline>",
                l.color,
                pts.join(" "),
                esc(&l.label)
            );
        }
    }
    for (i, l) in lines.iter().enumerate() {
        let lx = LEFT + 170.0 * i as f64;
        let _ = write!(
            s,
            "<rect x=\"{lx}\" y=\"{}\" width=\"12\" height=\"4\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>",
            H - 12.0,
            l.color,
            lx + 16.0,
            H - 7.0,
            esc(&l.label)
        );
    }
    s.push_str("</svg>");
    s
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// The peak of `p`: (value, when).
fn peak(p: &Points) -> Option<(f64, f64)> {
    p.iter().copied().map(|(t, v)| (v, t)).fold(None, |best, cur| if best.is_none_or(|b: (f64, f64)| cur.0 > b.0) { Some(cur) } else { best })
}

fn total(p: &Points) -> f64 {
    // A fold from +0: an empty `sum()` of floats is -0, printed "-0".
    p.iter().fold(0.0, |a, x| a + x.1)
}

/// First and last second with a non-zero value.
fn span(p: &Points) -> Option<(f64, f64)> {
    let nz: Vec<f64> = p.iter().filter(|x| x.1 > 0.0).map(|x| x.0).collect();
    Some((*nz.first()?, *nz.last()?))
}

fn figure(svg: String, summary: String) -> String {
    format!("<figure>{svg}<figcaption>{}</figcaption></figure>", esc(&summary))
}

fn upstream(u: &UpstreamSeries, t0: f64, t1: f64) -> String {
    let when = |t: f64| clock(t);
    let rel = |t: f64| if t == t0 { clock(t) } else { format!("+{:.0} s", t - t0) };
    let mut h = format!("<h3>{}</h3>", esc(&u.target));
    // connect() calls and failures.
    let mut summary = match peak(&u.connects) {
        Some((v, t)) => format!("{:.0} connect() calls, peak {v:.0}/s at {}.", total(&u.connects), when(t)),
        None => "No connect() seen.".into(),
    };
    if let Some((a, b)) = span(&u.failures) {
        let _ = write!(summary, " {:.0} failed, from {} to {}.", total(&u.failures), when(a), when(b + 1.0));
    } else {
        summary.push_str(" None failed.");
    }
    let lines = [
        Line { label: "connect() / s".into(), color: PALETTE[4], points: &u.connects, bars: true },
        Line { label: "failed / s".into(), color: PALETTE[3], points: &u.failures, bars: true },
    ];
    h.push_str(&figure(plot("connect() calls and failures per second", t0, t1, &rel, &lines, None, &u.deaths), summary));
    // 502/504 by verdict and requests completed.
    let mut lines: Vec<Line> = vec![Line { label: "completed / s".into(), color: PALETTE[2], points: &u.completed, bars: true }];
    for (i, (kind, p)) in u.fivexx.iter().enumerate() {
        lines.push(Line { label: format!("{kind} / s"), color: PALETTE[(i + 3) % PALETTE.len()], points: p, bars: true });
    }
    let fivexx: f64 = u.fivexx.values().map(total).sum();
    let summary = format!(
        "{:.0} requests completed; {fivexx:.0} 502/504{}{}.",
        total(&u.completed),
        u.fivexx.iter().map(|(k, p)| format!(", {:.0} {k}", total(p))).collect::<String>(),
        if u.deaths.is_empty() { String::new() } else { format!("; {} worker deaths cut requests (dotted marks)", u.deaths.len()) }
    );
    h.push_str(&figure(plot("502/504 by verdict and requests completed per second", t0, t1, &rel, &lines, None, &u.deaths), summary));
    // Time to first byte.
    if !u.ttfb_p50_ms.is_empty() {
        let lines = [
            Line { label: "ttfb p50 (ms)".into(), color: PALETTE[1], points: &u.ttfb_p50_ms, bars: false },
            Line { label: "ttfb p99 (ms)".into(), color: PALETTE[0], points: &u.ttfb_p99_ms, bars: false },
        ];
        let summary = match peak(&u.ttfb_p99_ms) {
            Some((v, t)) => format!("Time to first byte: p99 peaked at {v:.1} ms in the second from {}.", when(t)),
            None => String::new(),
        };
        h.push_str(&figure(plot("time to first byte, per second", t0, t1, &rel, &lines, None, &u.deaths), summary));
    }
    // Time to first byte, all requests: a histogram in doubling buckets.
    if !u.ttfb_histogram.is_empty() {
        let points: Vec<(f64, f64)> = u.ttfb_histogram.iter().enumerate().map(|(i, b)| (i as f64, b.1)).collect();
        let bounds: Vec<f64> = u.ttfb_histogram.iter().map(|b| b.0).collect();
        let label = |i: f64| bounds.get(i as usize).map_or(String::new(), |b| format!("≤ {} ms", fmt_num(*b)));
        let lines = [Line { label: "requests".into(), color: PALETTE[1], points: &points, bars: true }];
        let summary = format!("Time to first byte of all {:.0} requests, in buckets doubling from 1 ms.", total(&points));
        h.push_str(&figure(plot("time to first byte: histogram", 0.0, points.len() as f64, &label, &lines, None, &[]), summary));
    }
    // The listener's queue.
    if !u.queue.is_empty() {
        let limit = u.queue_max.map(|m| (m as f64, format!("max {m}")));
        let lines = [Line { label: "waiting".into(), color: PALETTE[5], points: &u.queue, bars: false }];
        let full = u.queue_max.map_or(0, |m| u.queue.iter().filter(|q| q.1 >= m as f64).count());
        let summary = format!(
            "Listen queue sampled {} times: at most {:.0} waiting{}; {full} samples at or above it.",
            u.queue.len(),
            peak(&u.queue).map_or(0.0, |p| p.0),
            u.queue_max.map_or(String::new(), |m| format!(" (its maximum is {m})"))
        );
        h.push_str(&figure(plot("listen queue against its maximum", t0, t1, &rel, &lines, limit, &[]), summary));
    }
    h
}

/// Every upstream's and every overflowing TCP listener's plots on the shared axis.
pub fn render(series: &Series) -> String {
    let mut h = String::from("<h2>Over time</h2>");
    for u in &series.upstreams {
        h.push_str(&upstream(u, series.t0, series.t1));
    }
    for l in &series.listeners {
        h.push_str(&listener(l, series.t0, series.t1));
    }
    h
}

fn listener(l: &ListenerSeries, t0: f64, t1: f64) -> String {
    let rel = |t: f64| if t == t0 { clock(t) } else { format!("+{:.0} s", t - t0) };
    let lines = [
        Line { label: "SYNs dropped / s".into(), color: PALETTE[0], points: &l.syn_drops, bars: true },
        Line { label: "final ACKs dropped / s".into(), color: PALETTE[3], points: &l.ack_drops, bars: true },
    ];
    let summary = format!(
        "TCP listener {}: {:.0} SYNs dropped (inferred from traced connects' retransmits, placed when each connect left SYN_SENT) and {:.0} final ACKs dropped at its full accept queue.",
        l.listener,
        total(&l.syn_drops),
        total(&l.ack_drops)
    );
    format!(
        "<h3>TCP listener {}</h3>{}",
        esc(&l.listener),
        figure(plot("drops at the full accept queue per second", t0, t1, &rel, &lines, None, &[]), summary)
    )
}

/// Refused connects against the backlog, with today's and the smallest sufficient one marked.
pub fn what_if(w: &WhatIf) -> String {
    let points: Vec<(f64, f64)> = w.curve.iter().map(|&(b, n)| (b as f64, n as f64)).collect();
    let (x0, x1) = (0.0, points.last().map_or(1.0, |p| p.0.max(1.0)));
    let mut marks = vec![(w.backlog as f64, format!("today: backlog {}", w.backlog))];
    if let Some(b) = w.smallest_backlog {
        marks.push((b as f64, format!("smallest with none: {b}")));
    }
    let lines = [Line { label: "502s that would have happened".into(), color: PALETTE[3], points: &points, bars: false }];
    let summary = format!(
        "With {} workers: {} refused at today's backlog {} (recorded {}); {}",
        w.model.workers,
        w.model_refused,
        w.backlog,
        w.recorded_refused,
        w.smallest_backlog.map_or("no backlog up to 65535 absorbs the arrivals.".to_string(), |b| format!("none from backlog {b} on."))
    );
    format!(
        "<h3>What if — {}</h3>{}",
        esc(&w.target),
        figure(plot("502s against the backlog", x0, x1, &|b| format!("backlog {b:.0}"), &lines, None, &marks), summary)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_name_peaks_and_spans() {
        let p = vec![(10.0, 1.0), (11.0, 5.0), (12.0, 0.0)];
        assert_eq!(peak(&p), Some((5.0, 11.0)));
        assert_eq!(span(&p), Some((10.0, 11.0)));
        assert_eq!(total(&p), 6.0);
        assert!(peak(&Vec::new()).is_none());
        let svg = plot(
            "t",
            0.0,
            10.0,
            &|v| format!("{v}"),
            &[Line { label: "a".into(), color: PALETTE[0], points: &p, bars: true }],
            Some((3.0, "max 3".into())),
            &[],
        );
        assert!(svg.contains("<title>a: 5</title>") && svg.contains("max 3") && !svg.contains("class=\"mark"), "plots are not timeline marks");
    }
}
