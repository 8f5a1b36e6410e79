//! `tracer daemon`: every probe, until stopped. Prometheus text on /metrics, /healthz, an optional
//! rotating JSON-lines event file, SIGHUP to reload the config, SIGTERM/SIGINT to detach (dropping
//! the loaded object detaches every program and frees every map). Bad input — a malformed config,
//! a port in use, an unwritable events path — is refused before anything is attached.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use axum::{routing::get, Router};

use crate::cli::{DaemonArgs, TraceArgs};
use crate::cmd::watch::{run_live, LiveHooks, LiveRun};
use crate::output::jsonl::JsonLines;
use crate::output::prometheus::Metrics;
use crate::output::rotating::RotatingFile;
use crate::output::{Output, Quiet};
use crate::state::session::Session;

const DEFAULT_LISTEN: &str = "127.0.0.1:9477";

/// The config file's settings under the flags' (flags win).
fn merged(cli: &DaemonArgs) -> anyhow::Result<DaemonArgs> {
    let file: DaemonArgs = match &cli.config {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("cannot read the config file {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("config file {} is not valid", p.display()))?
        }
        None => DaemonArgs::default(),
    };
    Ok(DaemonArgs {
        config: cli.config.clone(),
        listen: cli.listen.or(file.listen),
        events: cli.events.clone().or(file.events),
        events_max_mb: cli.events_max_mb.or(file.events_max_mb),
        events_keep: cli.events_keep.or(file.events_keep),
        max_upstream_labels: cli.max_upstream_labels.or(file.max_upstream_labels),
        comm: cli.comm.clone().or(file.comm),
        cgroup: cli.cgroup.clone().or(file.cgroup),
        ringbuf_kib: cli.ringbuf_kib.or(file.ringbuf_kib),
        max_targets: cli.max_targets.or(file.max_targets),
        map_entries: cli.map_entries.or(file.map_entries),
    })
}

fn events_output(a: &DaemonArgs) -> anyhow::Result<Box<dyn Output>> {
    Ok(match &a.events {
        Some(p) => {
            let f = RotatingFile::open(p, a.events_max_mb.unwrap_or(100) << 20, a.events_keep.unwrap_or(3))
                .with_context(|| format!("cannot open the events file {}", p.display()))?;
            Box::new(JsonLines::new(f))
        }
        None => Box::new(Quiet),
    })
}

struct Hooks {
    metrics: Metrics,
    cli: DaemonArgs,
    current: DaemonArgs,
}

impl LiveHooks for Hooks {
    fn start(&mut self, s: &mut Session) {
        // Feed every request's latency to the Prometheus histograms.
        s.request_samples = Some(Vec::new());
    }

    fn after_batch(&mut self, s: &mut Session) -> anyhow::Result<()> {
        self.metrics.update(s);
        Ok(())
    }

    fn reload(&mut self, s: &mut Session) {
        let new = match merged(&self.cli) {
            Ok(n) => n,
            Err(e) => {
                eprintln!("tracer: SIGHUP: keeping the running config: {e:#}");
                return;
            }
        };
        if new.events != self.current.events || new.events_max_mb != self.current.events_max_mb || new.events_keep != self.current.events_keep {
            match events_output(&new) {
                Ok(out) => s.replace_output(out),
                Err(e) => {
                    eprintln!("tracer: SIGHUP: keeping the old events file: {e:#}");
                    return;
                }
            }
        }
        self.metrics.cap.set_max(new.max_upstream_labels.unwrap_or(50));
        let restart: Vec<&str> = [
            ("listen", new.listen != self.current.listen),
            ("comm", new.comm != self.current.comm),
            ("cgroup", new.cgroup != self.current.cgroup),
            ("ringbuf-kib", new.ringbuf_kib != self.current.ringbuf_kib),
            ("max-targets", new.max_targets != self.current.max_targets),
            ("map-entries", new.map_entries != self.current.map_entries),
        ]
        .iter()
        .filter(|(_, changed)| *changed)
        .map(|(n, _)| *n)
        .collect();
        eprintln!(
            "tracer: SIGHUP: config reloaded{}",
            if restart.is_empty() { String::new() } else { format!(" (restart to apply: {})", restart.join(", ")) }
        );
        self.current = new;
    }
}

pub async fn run(cli: DaemonArgs) -> anyhow::Result<()> {
    let a = merged(&cli)?;
    let listen: SocketAddr = a.listen.unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default"));
    let out = events_output(&a)?;
    let http = std::net::TcpListener::bind(listen).with_context(|| format!("cannot listen on {listen} for /metrics"))?;
    http.set_nonblocking(true)?;
    let trace = TraceArgs {
        pid: Vec::new(),
        comm: a.comm.clone().unwrap_or_else(|| "nginx".into()),
        cgroup: a.cgroup.clone(),
        duration: None,
        ringbuf_kib: a.ringbuf_kib.unwrap_or(4096),
        max_targets: a.max_targets.unwrap_or(4096),
        map_entries: a.map_entries,
    };
    let metrics = Metrics::new(a.max_upstream_labels.unwrap_or(50));
    let registry = metrics.registry.clone();
    let mut hooks = Hooks { metrics, cli: cli.clone(), current: a };
    let server = {
        let registry: Arc<Mutex<_>> = registry.clone();
        let app = Router::new().route("/metrics", get(move || async move { Metrics::render(&registry) })).route("/healthz", get(|| async { "ok\n" }));
        let listener = tokio::net::TcpListener::from_std(http)?;
        tokio::spawn(async move { axum::serve(listener, app).await })
    };
    eprintln!("tracer: serving /metrics and /healthz on http://{listen}");
    let session = run_live(LiveRun {
        trace: &trace,
        interval: std::time::Duration::from_secs(5),
        out,
        all_connections: false,
        record: None,
        nginx: None,
        on_ready: Box::new(|| {}),
        hooks: Some(&mut hooks),
    })
    .await;
    server.abort();
    let mut session = session?;
    session.env.mark(crate::host::record::Mark::End);
    eprintln!("tracer: detached");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_packaged_config_is_valid() {
        let a: crate::cli::DaemonArgs = toml::from_str(include_str!("../../../packaging/upstream-tracer.toml")).unwrap();
        assert_eq!(a.listen, Some("127.0.0.1:9477".parse().unwrap()));
        assert_eq!(a.map_entries, Some(65536));
    }
}
