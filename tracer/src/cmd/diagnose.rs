//! `tracer diagnose`, `tracer record`, `tracer report` and `tracer compare`: the same session as `watch`, quiet
//! while it runs, then the verdict report. `report` replays a recording through the very same
//! session code, so its verdicts are the ones the live run printed.

use std::io::{self, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;

use crate::cli::{CompareArgs, DiagnoseArgs, RecordArgs, ReportArgs, ReportOutputArgs};
use crate::cmd::live::{run_live, LiveRun};
use crate::config::DiagnoseConfig;
use crate::diagnosis::compare;
use crate::diagnosis::report::{self, Report};
use crate::diagnosis::what_if::Change;
use crate::host::env::Env;
use crate::host::record::{self, Mark, Record};
use crate::host::timebase::Timebase;
use crate::kernel::events::Event;
use crate::nginx::{self, ErrorLog};
use crate::output::{html, markdown, report as text, Quiet};
use crate::session::Session;

fn show(r: &Report, o: &ReportOutputArgs) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    if o.json {
        serde_json::to_writer(&mut out, r)?;
        writeln!(out)?;
    } else if o.markdown {
        markdown::write(&mut out, r)?;
    } else {
        text::write_text(&mut out, r)?;
    }
    if let Some(p) = &o.html {
        crate::output::private::write(p, html::render(r)).with_context(|| format!("writing {}", p.display()))?;
        eprintln!("tracer: HTML report written to {}", p.display());
    }
    Ok(())
}

async fn live(c: &DiagnoseConfig) -> anyhow::Result<()> {
    let n = &c.nginx;
    let found = nginx::discover(&c.trace.pids, n.nginx_conf.as_deref(), n.error_log.as_deref(), n.access_log.as_deref());
    eprintln!(
        "tracer: nginx masters {:?}, error log {}, {}",
        found.masters,
        found.error_logs.first().map(String::as_str).unwrap_or("(not found: 5xx are still seen in the kernel)"),
        match c.trace.duration {
            Some(d) => format!("diagnosing for {} s", d.as_secs_f64()),
            None => "diagnosing until Ctrl-C".into(),
        }
    );
    // Follow the error log from the moment the probes are attached.
    let logs: Arc<Mutex<Vec<ErrorLog>>> = Arc::default();
    let paths = found.error_logs.clone();
    let logs_ready = logs.clone();
    let run = LiveRun {
        keep_history: true,
        out: Box::new(Quiet),
        record: c.record.as_deref(),
        nginx: Some(found.clone()),
        hooks: None,
        on_ready: Box::new(move || {
            *logs_ready.lock().expect("not poisoned") = paths.iter().map(|p| ErrorLog::open_at_end(Path::new(p))).collect();
        }),
    };
    let mut session = run_live(&c.trace, run).await?;
    let lines = session.env().error_log_lines(|| logs.lock().expect("not poisoned").iter_mut().flat_map(|l| l.new_lines()).collect());
    session.env().mark(Mark::End);
    show(&report::build(&session.view(), &found, &lines, &[]), &c.output)
}

/// `tracer diagnose`.
pub async fn diagnose(args: DiagnoseArgs) -> anyhow::Result<()> {
    live(&DiagnoseConfig::diagnose(&args)?).await
}

/// `tracer record -o FILE`.
pub async fn record(args: RecordArgs) -> anyhow::Result<()> {
    live(&DiagnoseConfig::record(&args)?).await?;
    eprintln!("tracer: recorded to {}", args.output_file.display());
    Ok(())
}

/// Replay a recording through a session and build its report.
pub fn replay(path: &Path) -> anyhow::Result<Report> {
    Ok(replay_spanning(path, &[], false)?.0)
}

/// `replay` (with the queue model's predictions for `what_if`, and the plots' series with
/// `plots`), and how long the recording spans (first to last kernel event), in seconds.
pub fn replay_spanning(path: &Path, what_if: &[Change], plots: bool) -> anyhow::Result<(Report, f64)> {
    let (meta, records) = record::read(path)?;
    replay_records(&path.display().to_string(), meta, &records, what_if, plots)
}

/// `replay_spanning` of a parsed recording (`name` for errors; the fuzz target `report` feeds it
/// whatever `record::parse` accepts).
pub fn replay_records(name: &str, meta: record::Meta, records: &[Record], what_if: &[Change], plots: bool) -> anyhow::Result<(Report, f64)> {
    let times: Vec<u64> = records
        .iter()
        .filter_map(|r| if let Record::Event(raw) = r { crate::kernel::events::header(raw).ok() } else { None })
        .map(|h| h.ts_ns)
        .collect();
    let span_s = match (times.iter().min(), times.iter().max()) {
        (Some(a), Some(b)) => (b - a) as f64 / 1e9,
        _ => 0.0,
    };
    let tb = Timebase::with_offset_ns(meta.timebase_offset_ns as i128);
    let mut s = Session::new(Env::replay(records), tb, meta.probes.clone(), Box::new(Quiet), crate::config::defaults::MAX_TARGETS, false);
    if plots || !what_if.is_empty() {
        s.keep_history();
    }
    for r in records {
        match r {
            Record::Event(raw) => s.handle(Event::decode(raw)?, raw)?,
            Record::Mark(Mark::Batch) => s.end_batch()?,
            Record::Mark(Mark::Tick) => s.tick(Default::default)?,
            Record::Mark(Mark::End) => s.finish(Default::default)?,
            Record::Answer { .. } => {}
        }
    }
    let lines = s.env().error_log_lines(Vec::new);
    if let Some(e) = s.env().replay_error.take() {
        anyhow::bail!("{name} does not replay with this tracer version: {e}");
    }
    if s.env().unanswered > 0 {
        eprintln!(
            "tracer: {} questions this version asks were not in the recording (made by {}); they were answered with nothing",
            s.env().unanswered,
            meta.tracer_version
        );
    }
    let nginx = meta.nginx.unwrap_or_default();
    Ok((report::build(&s.view(), &nginx, &lines, what_if), span_s))
}

/// `tracer compare BEFORE AFTER`.
pub fn compare_cmd(args: CompareArgs) -> anyhow::Result<()> {
    let (before, before_s) = replay_spanning(&args.before, &[], false)?;
    let (after, after_s) = replay_spanning(&args.after, &[], false)?;
    let (bname, aname) = (args.before.display().to_string(), args.after.display().to_string());
    let c = compare::compare((&bname, &before, before_s), (&aname, &after, after_s));
    let mut out = io::stdout().lock();
    if args.output.json {
        serde_json::to_writer(&mut out, &c)?;
        writeln!(out)?;
    } else {
        text::write_comparison(&mut out, &c)?;
    }
    if let Some(p) = &args.output.html {
        crate::output::private::write(p, html::render_comparison(&c)).with_context(|| format!("writing {}", p.display()))?;
        eprintln!("tracer: HTML comparison written to {}", p.display());
    }
    Ok(())
}

/// `tracer report FILE`.
pub fn report_cmd(args: ReportArgs) -> anyhow::Result<()> {
    let (r, _) = replay_spanning(&args.file, &args.what_if, args.output.html.is_some())?;
    show(&r, &args.output)
}
