//! Command-line flags. Raw flags are turned into validated options before anything is loaded.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "tracer",
    version,
    about = "eBPF tracer that ties nginx 502/504s to their kernel cause",
    long_about = "Kernel-level socket tracer for nginx upstreams: listen-queue overflows, failed \
connects and the listeners behind them, without changing nginx or the application. Needs root \
(CAP_BPF + CAP_PERFMON)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print every failed connect / cut request as it happens and a running summary per upstream.
    #[command(after_help = "EXAMPLES:
    tracer watch                          # nginx's upstream failures, until Ctrl-C
    tracer watch --duration 30s --json    # 30 s of JSON lines (schema in README)
    tracer watch --pid 1234               # nginx master 1234 and its workers
    tracer watch --comm '*'               # every process on the host")]
    Watch(WatchArgs),
    /// Trace for a while, then tie every 502/504 to its cause: one verdict per root cause, the
    /// proof, and the fix.
    #[command(after_help = "EXAMPLES:
    tracer diagnose --duration 30s
    tracer diagnose --duration 2m --html /tmp/report.html
    tracer diagnose --json --error-log /var/log/nginx/error.log")]
    Diagnose(DiagnoseArgs),
    /// Like diagnose, and also write everything seen to FILE for `tracer report FILE` later.
    #[command(after_help = "EXAMPLES:
    tracer record -o incident.rec --duration 10m
    tracer report incident.rec --html incident.html")]
    Record(RecordArgs),
    /// The verdict report of a recording (offline, no root needed).
    Report(ReportArgs),
    /// Two recordings side by side (before and after a fix): per root cause the 502/504 counts and
    /// rates and whether it is gone, per upstream the latency (offline, no root needed).
    #[command(after_help = "EXAMPLES:
    tracer record -o before.rec --duration 5m     # the incident
    # … raise the backlog …
    tracer record -o after.rec --duration 5m      # the same load after the fix
    tracer compare before.rec after.rec --html fix.html")]
    Compare(CompareArgs),
    /// Run continuously: Prometheus metrics on /metrics (127.0.0.1:9477), optional JSON-lines event
    /// file with size-based rotation; SIGHUP reloads the config file, SIGTERM detaches cleanly.
    #[command(after_help = "EXAMPLES:
    tracer daemon
    tracer daemon --config /etc/upstream-tracer.toml
    tracer daemon --listen 0.0.0.0:9477 --events /var/log/upstream-tracer/events.jsonl

CONFIG (TOML, keys are the flag names; flags win):
    listen = \"127.0.0.1:9477\"
    events = \"/var/log/upstream-tracer/events.jsonl\"
    events-max-mb = 100
    comm = \"nginx\"")]
    Daemon(DaemonArgs),
}

/// `tracer daemon`. Every flag may also come from the config file (same name as key); flags win.
#[derive(Args, Debug, Clone, Default)]
#[command(args_override_self = true)]
pub struct DaemonArgs {
    /// TOML config file (re-read on SIGHUP).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub trace: TraceArgs,
    /// Where to serve /metrics and /healthz [default: 127.0.0.1:9477].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// Also write every event as JSON lines (same schema as `watch --json`) to this file.
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,
    /// Rotate the events file at this size, in MiB [default: 100].
    #[arg(long, value_name = "MIB")]
    pub events_max_mb: Option<u64>,
    /// Rotated event files kept [default: 3].
    #[arg(long, value_name = "N")]
    pub events_keep: Option<u32>,
    /// Upstream/listener label values exported as such; the rest become "other" [default: 50].
    #[arg(long, value_name = "N")]
    pub max_upstream_labels: Option<usize>,
}

/// Which processes to trace and with what resources (every tracing subcommand). Defaults are in
/// `config::defaults`; the help text names them (a unit test keeps the two equal).
#[derive(Args, Debug, Clone, Default)]
pub struct TraceArgs {
    /// Trace only this process and its children at start (repeatable).
    #[arg(long, short = 'p', value_name = "PID")]
    pub pid: Vec<u32>,
    /// Trace only processes with this name ('*' = any process) [default: nginx].
    #[arg(long, value_name = "NAME")]
    pub comm: Option<String>,
    /// Trace only processes in this cgroup (v2 directory, e.g. /sys/fs/cgroup/unified/system.slice/nginx.service).
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
    /// Ring buffer size in KiB (a power of two, at least 4 pages) [default: 4096].
    #[arg(long, value_parser = parse_ringbuf_kib, value_name = "KIB")]
    pub ringbuf_kib: Option<u32>,
    /// Most upstream targets itemised; connects to more are counted as untracked [default: 4096].
    #[arg(long, value_name = "N")]
    pub max_targets: Option<usize>,
    /// Size of each per-connection kernel map (LRU: the oldest entry goes when full, and is
    /// counted; the fd → connection map gets twice as many) [default: 65536].
    #[arg(long, value_name = "N")]
    pub map_entries: Option<u32>,
    /// Create this file once every probe is attached (for scripts and tests that wait for the
    /// tracer); removed at exit.
    #[arg(long, value_name = "FILE")]
    pub ready_file: Option<PathBuf>,
}

/// How long to trace.
#[derive(Args, Debug, Clone, Default)]
pub struct DurationArgs {
    /// Stop after this long (e.g. 30s, 2m, 500ms); default: until Ctrl-C.
    #[arg(long, short = 'd', value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,
}

#[derive(Args, Debug, Clone)]
pub struct WatchArgs {
    #[command(flatten)]
    pub trace: TraceArgs,
    #[command(flatten)]
    pub duration: DurationArgs,
    /// How often to print the running summary [default: 2s].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub interval: Option<Duration>,
    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
    /// Report every TCP connect attempt (default: only refused, abandoned or delayed ones).
    #[arg(long)]
    pub connections: bool,
}

/// Where nginx's files are, when discovery should not guess.
#[derive(Args, Debug, Clone, Default)]
pub struct NginxArgs {
    /// nginx's error log (default: found from the running master's config).
    #[arg(long, value_name = "PATH")]
    pub error_log: Option<PathBuf>,
    /// nginx's access log (default: found from the config; only shown, never needed).
    #[arg(long, value_name = "PATH")]
    pub access_log: Option<PathBuf>,
    /// nginx's main config file (default: the running master's -c).
    #[arg(long, value_name = "PATH")]
    pub nginx_conf: Option<PathBuf>,
}

/// How to show a report.
#[derive(Args, Debug, Clone, Default)]
pub struct ReportOutputArgs {
    /// The report as one JSON object instead of text.
    #[arg(long, conflicts_with = "markdown")]
    pub json: bool,
    /// The report as Markdown (verdicts, proof, fix, the counts table), for a ticket or a chat.
    #[arg(long)]
    pub markdown: bool,
    /// Also write a self-contained HTML report with a timeline here.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct DiagnoseArgs {
    #[command(flatten)]
    pub trace: TraceArgs,
    #[command(flatten)]
    pub duration: DurationArgs,
    #[command(flatten)]
    pub nginx: NginxArgs,
    #[command(flatten)]
    pub output: ReportOutputArgs,
}

#[derive(Args, Debug, Clone)]
pub struct RecordArgs {
    #[command(flatten)]
    pub trace: TraceArgs,
    #[command(flatten)]
    pub duration: DurationArgs,
    /// The record file to write.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output_file: PathBuf,
    #[command(flatten)]
    pub nginx: NginxArgs,
    #[command(flatten)]
    pub output: ReportOutputArgs,
}

#[derive(Args, Debug, Clone)]
pub struct CompareArgs {
    /// The recording made before the change.
    pub before: PathBuf,
    /// The recording made after it.
    pub after: PathBuf,
    #[command(flatten)]
    pub output: ReportOutputArgs,
}

#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    /// A file written by `tracer record`.
    pub file: PathBuf,
    /// Replay the recorded arrivals at each overflowing unix listener through a model of its
    /// queue with this backlog and/or worker count, e.g. `backlog=64` or `backlog=32,workers=2`
    /// (repeatable); the report also names the smallest backlog and worker count with no refusal.
    #[arg(long = "what-if", value_name = "KEY=N[,KEY=N]")]
    pub what_if: Vec<crate::diagnosis::what_if::Change>,
    #[command(flatten)]
    pub output: ReportOutputArgs,
}

/// `30s`, `2m`, `500ms`, `1h`, or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let v: f64 = num.parse().map_err(|_| format!("'{s}' is not a duration (try 30s, 2m, 500ms)"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("'{s}': unknown unit '{unit}' (use ms, s, m or h)")),
    };
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("'{s}': must be positive"));
    }
    // Beyond a year is a typo, and a deadline that far would overflow the clock arithmetic.
    if secs > MAX_DURATION_S {
        return Err(format!("'{s}': too long (at most 8760h)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

const MAX_DURATION_S: f64 = 365.0 * 24.0 * 3600.0;

pub fn parse_ringbuf_kib(s: &str) -> Result<u32, String> {
    let v: u32 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if v < 16 || !v.is_power_of_two() || v > 1 << 20 {
        return Err(format!("{v}: must be a power of two between 16 and 1048576"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("3 days").is_err());
        assert!(parse_duration("x").is_err());
        assert_eq!(parse_duration("8760h").unwrap(), Duration::from_secs(365 * 24 * 3600));
    }

    #[test]
    fn huge_durations_are_errors_not_panics() {
        // Found by hand (Duration::from_secs_f64 panicked past u64 seconds).
        assert!(parse_duration("99999999999999999999s").unwrap_err().contains("too long"));
        assert!(parse_duration("8761h").unwrap_err().contains("too long"));
        assert!(parse_duration(&"9".repeat(400)).is_err());
        assert!(parse_duration("1.7976931348623157e308").is_err());
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        let e = Cli::try_parse_from(["tracer", "watch", "--duration", "soon"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
        let e = Cli::try_parse_from(["tracer", "watch", "--bogus"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::UnknownArgument);
        assert!(Cli::try_parse_from(["tracer", "watch", "--ringbuf-kib", "1000"]).is_err());
    }
}
