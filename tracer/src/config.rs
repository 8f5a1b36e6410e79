//! Raw flags (and the daemon's config file) turned once into one validated `Config`, with every
//! default written here. Subcommands read the config, never the flags.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{CommandFactory, FromArgMatches};

use crate::cli::{DaemonArgs, DiagnoseArgs, NginxArgs, RecordArgs, ReportOutputArgs, TraceArgs, WatchArgs};

/// Every default, in one place (the help texts name them; `tests::help_names_the_defaults`).
pub mod defaults {
    use std::time::Duration;

    pub const COMM: &str = "nginx";
    pub const RINGBUF_KIB: u32 = 4096;
    pub const MAX_TARGETS: usize = 4096;
    pub const MAP_ENTRIES: u32 = tracer_common::CONN_MAP_ENTRIES;
    /// `watch`'s running summary, and the tick of `diagnose`/`record`.
    pub const INTERVAL: Duration = Duration::from_secs(2);
    /// The daemon's summary tick (it writes summaries to the events file only).
    pub const DAEMON_INTERVAL: Duration = Duration::from_secs(5);
    pub const LISTEN: &str = "127.0.0.1:9477";
    pub const EVENTS_MAX_MB: u64 = 100;
    pub const EVENTS_KEEP: u32 = 3;
    pub const MAX_UPSTREAM_LABELS: usize = 50;
}

/// What to trace and with which resources: shared by every subcommand that attaches.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceConfig {
    /// Processes (and their children at start) to trace; empty: any.
    pub pids: Vec<u32>,
    /// Process name to trace; None: any process (`--comm '*'`).
    pub comm: Option<String>,
    pub cgroup: Option<PathBuf>,
    pub duration: Option<Duration>,
    pub interval: Duration,
    pub ringbuf_bytes: u32,
    pub max_targets: usize,
    /// Size of the per-connection kernel maps; None: as compiled (`defaults::MAP_ENTRIES`).
    pub map_entries: Option<u32>,
    /// Report every TCP connect, not only failed or delayed ones.
    pub all_connections: bool,
    pub ready_file: Option<PathBuf>,
}

impl TraceConfig {
    fn new(t: &TraceArgs, duration: Option<Duration>, interval: Duration) -> anyhow::Result<TraceConfig> {
        let comm = t.comm.clone().unwrap_or_else(|| defaults::COMM.into());
        if comm.is_empty() {
            bail!("--comm: empty process name");
        }
        if t.map_entries == Some(0) || t.max_targets == Some(0) {
            bail!("--map-entries and --max-targets must be at least 1");
        }
        Ok(TraceConfig {
            pids: t.pid.clone(),
            comm: (comm != "*").then_some(comm),
            cgroup: t.cgroup.clone(),
            duration,
            interval,
            ringbuf_bytes: t.ringbuf_kib.unwrap_or(defaults::RINGBUF_KIB) * 1024,
            max_targets: t.max_targets.unwrap_or(defaults::MAX_TARGETS),
            map_entries: t.map_entries,
            all_connections: false,
            ready_file: t.ready_file.clone(),
        })
    }

    pub fn watch(a: &WatchArgs) -> anyhow::Result<TraceConfig> {
        let mut c = TraceConfig::new(&a.trace, a.duration.duration, a.interval.unwrap_or(defaults::INTERVAL))?;
        c.all_connections = a.connections;
        Ok(c)
    }
}

/// `diagnose` and `record`: a trace, then the report.
#[derive(Clone, Debug)]
pub struct DiagnoseConfig {
    pub trace: TraceConfig,
    pub nginx: NginxArgs,
    pub output: ReportOutputArgs,
    /// `record`: where the recording goes.
    pub record: Option<PathBuf>,
}

impl DiagnoseConfig {
    pub fn diagnose(a: &DiagnoseArgs) -> anyhow::Result<DiagnoseConfig> {
        let trace = TraceConfig::new(&a.trace, a.duration.duration, defaults::INTERVAL)?;
        Ok(DiagnoseConfig { trace, nginx: a.nginx.clone(), output: a.output.clone(), record: None })
    }

    pub fn record(a: &RecordArgs) -> anyhow::Result<DiagnoseConfig> {
        let trace = TraceConfig::new(&a.trace, a.duration.duration, defaults::INTERVAL)?;
        Ok(DiagnoseConfig { trace, nginx: a.nginx.clone(), output: a.output.clone(), record: Some(a.output_file.clone()) })
    }
}

/// The daemon's rotating JSON-lines event file.
#[derive(Clone, Debug, PartialEq)]
pub struct EventsFile {
    pub path: PathBuf,
    pub max_bytes: u64,
    pub keep: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DaemonConfig {
    pub trace: TraceConfig,
    pub listen: SocketAddr,
    pub events: Option<EventsFile>,
    pub max_upstream_labels: usize,
}

impl DaemonConfig {
    /// The daemon's settings: the config file's keys are its flags' names, read as if they came
    /// first on the command line, so the real flags win and both go through the same parser.
    /// `cli` are the command-line arguments after `daemon`.
    pub fn load(cli: &[OsString]) -> anyhow::Result<DaemonConfig> {
        let first = parse_daemon_args(cli)?;
        let args = match &first.config {
            Some(file) => {
                let mut all = config_file_args(file)?;
                all.extend(cli.iter().cloned());
                parse_daemon_args(&all)?
            }
            None => first,
        };
        DaemonConfig::new(&args)
    }

    /// The settings of a config file's text alone (no flags): what `load` does with `--config
    /// FILE`, without the file (the fuzz target `daemon_config` feeds it arbitrary text).
    pub fn from_toml(text: &str) -> anyhow::Result<DaemonConfig> {
        DaemonConfig::new(&parse_daemon_args(&config_text_args(text, "<text>")?)?)
    }

    fn new(a: &DaemonArgs) -> anyhow::Result<DaemonConfig> {
        let trace = TraceConfig::new(&a.trace, None, defaults::DAEMON_INTERVAL)?;
        let events = a.events.clone().map(|path| EventsFile {
            path,
            max_bytes: a.events_max_mb.unwrap_or(defaults::EVENTS_MAX_MB).saturating_mul(1 << 20),
            keep: a.events_keep.unwrap_or(defaults::EVENTS_KEEP),
        });
        Ok(DaemonConfig {
            trace,
            listen: a.listen.unwrap_or_else(|| defaults::LISTEN.parse().expect("valid default")),
            events,
            max_upstream_labels: a.max_upstream_labels.unwrap_or(defaults::MAX_UPSTREAM_LABELS),
        })
    }

    /// Settings that changed from `self` to `new` but only apply after a restart (the
    /// attached programs and the HTTP listener are set up once).
    pub fn needs_restart(&self, new: &DaemonConfig) -> Vec<&'static str> {
        let (a, b) = (&self.trace, &new.trace);
        [
            ("listen", self.listen != new.listen),
            ("pid", a.pids != b.pids),
            ("comm", a.comm != b.comm),
            ("cgroup", a.cgroup != b.cgroup),
            ("ringbuf-kib", a.ringbuf_bytes != b.ringbuf_bytes),
            ("max-targets", a.max_targets != b.max_targets),
            ("map-entries", a.map_entries != b.map_entries),
        ]
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect()
    }
}

fn parse_daemon_args(args: &[OsString]) -> anyhow::Result<DaemonArgs> {
    let cmd = DaemonArgs::augment_args(clap::Command::new("tracer daemon").no_binary_name(true));
    let m = cmd.try_get_matches_from(args).map_err(|e| anyhow::anyhow!("{}", e.render().to_string().trim_end()))?;
    Ok(DaemonArgs::from_arg_matches(&m)?)
}

use clap::Args as _;

/// A TOML config file as `--key value` arguments, refusing keys that are not daemon flags.
fn config_file_args(file: &Path) -> anyhow::Result<Vec<OsString>> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read the config file {}", file.display()))?;
    config_text_args(&text, &file.display().to_string())
}

/// The text of a TOML config file (`name` for errors) as `--key value` arguments.
fn config_text_args(text: &str, name: &str) -> anyhow::Result<Vec<OsString>> {
    let invalid = || format!("config file {name} is not valid");
    let table: toml::Table = toml::from_str(text).with_context(invalid)?;
    let flags: Vec<String> =
        DaemonArgs::augment_args(clap::Command::new("d")).get_arguments().filter_map(|a| a.get_long().map(str::to_string)).collect();
    let mut out = Vec::new();
    for (key, value) in table {
        if key == "config" || !flags.contains(&key) {
            return Err(anyhow::anyhow!("unknown key '{key}' (the keys are `tracer daemon` flag names)")).with_context(invalid);
        }
        let values = match value {
            toml::Value::Array(a) => a,
            v => vec![v],
        };
        for v in values {
            let v = match v {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                other => return Err(anyhow::anyhow!("'{key}': {other} is not a string or number")).with_context(invalid),
            };
            out.push(format!("--{key}={v}").into());
        }
    }
    Ok(out)
}

/// The help text of `tracer` (for the defaults test and docs).
pub fn help() -> String {
    let mut c = crate::cli::Cli::command();
    let mut out = c.render_long_help().to_string();
    for sub in ["watch", "diagnose", "record", "report", "daemon"] {
        if let Some(s) = c.find_subcommand_mut(sub) {
            out.push_str(&s.render_long_help().to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn help_names_the_defaults() {
        let h = help();
        for d in [
            format!("[default: {}]", defaults::COMM),
            format!("[default: {}]", defaults::RINGBUF_KIB),
            format!("[default: {}]", defaults::MAX_TARGETS),
            format!("[default: {}]", defaults::MAP_ENTRIES),
            format!("[default: {}s]", defaults::INTERVAL.as_secs()),
            format!("[default: {}]", defaults::LISTEN),
            format!("[default: {}]", defaults::EVENTS_MAX_MB),
            format!("[default: {}]", defaults::EVENTS_KEEP),
            format!("[default: {}]", defaults::MAX_UPSTREAM_LABELS),
        ] {
            assert!(h.contains(&d), "help text lacks {d}");
        }
    }

    #[test]
    fn daemon_defaults_then_file_then_flags() {
        let c = DaemonConfig::load(&[]).unwrap();
        assert_eq!(c.listen, defaults::LISTEN.parse().unwrap());
        assert_eq!(c.trace.comm.as_deref(), Some("nginx"));
        assert_eq!((c.trace.ringbuf_bytes, c.max_upstream_labels, c.events), (4096 * 1024, 50, None));
        let dir = std::env::temp_dir().join(format!("tracer-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.toml");
        std::fs::write(&f, "comm = \"python3\"\nevents = \"/tmp/e.jsonl\"\nevents-max-mb = 7\nmap-entries = 1024\n").unwrap();
        let c = DaemonConfig::load(&os(&["--config", f.to_str().unwrap(), "--comm", "nginx"])).unwrap();
        assert_eq!(c.trace.comm.as_deref(), Some("nginx"), "flags win");
        assert_eq!(c.events, Some(EventsFile { path: "/tmp/e.jsonl".into(), max_bytes: 7 << 20, keep: 3 }));
        assert_eq!(c.trace.map_entries, Some(1024));
        std::fs::write(&f, "no-such-setting = 1\n").unwrap();
        let e = format!("{:#}", DaemonConfig::load(&os(&["--config", f.to_str().unwrap()])).unwrap_err());
        assert!(e.contains("not valid") && e.contains("no-such-setting"), "{e}");
        std::fs::write(&f, "ringbuf-kib = 1000\n").unwrap();
        assert!(DaemonConfig::load(&os(&["--config", f.to_str().unwrap()])).is_err(), "file values are validated like flags");
        std::fs::write(&f, "listen = [not toml\n").unwrap();
        let e = format!("{:#}", DaemonConfig::load(&os(&["--config", f.to_str().unwrap()])).unwrap_err());
        assert!(e.contains("not valid"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_packaged_config_is_valid() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/upstream-tracer.toml");
        let c = DaemonConfig::load(&os(&["--config", file.to_str().unwrap()])).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9477".parse().unwrap());
        assert_eq!(c.trace.map_entries, Some(65536));
    }

    #[test]
    fn metrics_listen_on_loopback_by_default() {
        let c = DaemonConfig::load(&[]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9477".parse().unwrap());
        assert!(c.listen.ip().is_loopback());
    }

    #[test]
    fn config_text_parses_like_the_file() {
        let c = DaemonConfig::from_toml("comm = \"python3\"\nevents = \"/tmp/e.jsonl\"\nevents-max-mb = 7\n").unwrap();
        assert_eq!(c.trace.comm.as_deref(), Some("python3"));
        assert_eq!(c.events.unwrap().max_bytes, 7 << 20);
        assert!(DaemonConfig::from_toml("config = \"/etc/x\"").unwrap_err().to_string().contains("not valid"));
        // A size in MiB past u64 bytes saturates instead of wrapping to a tiny file.
        let c = DaemonConfig::from_toml("events = \"/tmp/e\"\nevents-max-mb = \"18446744073709551615\"\n").unwrap();
        assert_eq!(c.events.unwrap().max_bytes, u64::MAX);
    }

    #[test]
    fn restart_settings_are_named() {
        let a = DaemonConfig::load(&[]).unwrap();
        let b = DaemonConfig::load(&os(&["--comm", "x", "--max-upstream-labels", "3"])).unwrap();
        assert_eq!(a.needs_restart(&b), vec!["comm"]);
    }
}
