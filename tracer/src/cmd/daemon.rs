//! `tracer daemon`: every probe, until stopped. Prometheus text on /metrics, /healthz, an optional
//! rotating JSON-lines event file, SIGHUP to reload the config, SIGTERM/SIGINT to detach (dropping
//! the loaded object detaches every program and frees every map). Bad input — a malformed config,
//! a port in use, an unwritable events path — is refused before anything is attached.

use std::ffi::OsString;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use axum::{routing::get, Router};

use crate::cmd::live::{run_live, LiveHooks, LiveRun};
use crate::config::{DaemonConfig, EventsFile};
use crate::host::record::Mark;
use crate::output::jsonl::JsonLines;
use crate::output::prometheus::Metrics;
use crate::output::rotating::RotatingFile;
use crate::output::{Output, Quiet};
use crate::session::Session;

fn events_output(events: Option<&EventsFile>) -> anyhow::Result<Box<dyn Output>> {
    Ok(match events {
        Some(e) => {
            let f = RotatingFile::open(&e.path, e.max_bytes, e.keep).with_context(|| format!("cannot open the events file {}", e.path.display()))?;
            Box::new(JsonLines::new(f))
        }
        None => Box::new(Quiet),
    })
}

struct Hooks {
    metrics: Metrics,
    /// The command line after `daemon`, re-read with the config file on SIGHUP.
    cli: Vec<OsString>,
    current: DaemonConfig,
}

impl LiveHooks for Hooks {
    fn start(&mut self, s: &mut Session) {
        // Feed every request's latency to the Prometheus histograms.
        s.keep_request_samples();
    }

    fn after_batch(&mut self, s: &mut Session) -> anyhow::Result<()> {
        let statuses = s.take_settled_statuses();
        let samples = s.take_request_samples();
        self.metrics.update(&s.view(), &statuses, &samples);
        Ok(())
    }

    fn reload(&mut self, s: &mut Session) {
        let new = match DaemonConfig::load(&self.cli) {
            Ok(n) => n,
            Err(e) => {
                eprintln!("tracer: SIGHUP: keeping the running config: {e:#}");
                return;
            }
        };
        if new.events != self.current.events {
            match events_output(new.events.as_ref()) {
                Ok(out) => s.replace_output(out),
                Err(e) => {
                    eprintln!("tracer: SIGHUP: keeping the old events file: {e:#}");
                    return;
                }
            }
        }
        self.metrics.cap.set_max(new.max_upstream_labels);
        let restart = self.current.needs_restart(&new);
        eprintln!(
            "tracer: SIGHUP: config reloaded{}",
            if restart.is_empty() { String::new() } else { format!(" (restart to apply: {})", restart.join(", ")) }
        );
        self.current = new;
    }
}

/// `cli`: the arguments after `tracer daemon`.
pub async fn run(cli: Vec<OsString>) -> anyhow::Result<()> {
    let config = DaemonConfig::load(&cli)?;
    let out = events_output(config.events.as_ref())?;
    let http = std::net::TcpListener::bind(config.listen).with_context(|| format!("cannot listen on {} for /metrics", config.listen))?;
    http.set_nonblocking(true)?;
    let metrics = Metrics::new(config.max_upstream_labels);
    let registry = metrics.registry.clone();
    let server = {
        let registry: Arc<Mutex<_>> = registry.clone();
        let app = Router::new().route("/metrics", get(move || async move { Metrics::render(&registry) })).route("/healthz", get(|| async { "ok\n" }));
        let listener = tokio::net::TcpListener::from_std(http)?;
        tokio::spawn(async move { axum::serve(listener, app).await })
    };
    eprintln!("tracer: serving /metrics and /healthz on http://{}", config.listen);
    let mut hooks = Hooks { metrics, cli, current: config.clone() };
    let run = LiveRun { keep_history: false, out, record: None, nginx: None, on_ready: Box::new(|| {}), hooks: Some(&mut hooks) };
    let session = run_live(&config.trace, run).await;
    server.abort();
    session?.env().mark(Mark::End);
    eprintln!("tracer: detached");
    Ok(())
}
