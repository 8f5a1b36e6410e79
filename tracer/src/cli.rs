//! Command-line flags. Raw flags are turned into validated options before anything is loaded.

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
    /// Print every failed connect() and a running summary per upstream target.
    #[command(after_help = "EXAMPLES:
    tracer watch                          # nginx's failed upstream connects, until Ctrl-C
    tracer watch --duration 30s --json    # 30 s of JSON lines (schema in README)
    tracer watch --pid 1234               # nginx master 1234 and its workers
    tracer watch --comm '*'               # every process on the host")]
    Watch(WatchArgs),
}

#[derive(Args, Debug, Clone)]
pub struct WatchArgs {
    /// Trace only this process and its children at start (repeatable).
    #[arg(long, short = 'p', value_name = "PID")]
    pub pid: Vec<u32>,
    /// Trace only processes with this name ('*' = any process).
    #[arg(long, default_value = "nginx", value_name = "NAME")]
    pub comm: String,
    /// Trace only processes in this cgroup (v2 directory, e.g. /sys/fs/cgroup/unified/system.slice/nginx.service).
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<std::path::PathBuf>,
    /// Stop after this long (e.g. 30s, 2m, 500ms); default: until Ctrl-C.
    #[arg(long, short = 'd', value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,
    /// How often to print the running summary.
    #[arg(long, default_value = "2s", value_parser = parse_duration, value_name = "DURATION")]
    pub interval: Duration,
    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
    /// Report every TCP connect attempt (default: only refused, abandoned or delayed ones).
    #[arg(long)]
    pub connections: bool,
    /// Ring buffer size in KiB (a power of two, at least 4 pages).
    #[arg(long, default_value_t = 4096, value_parser = parse_ringbuf_kib, value_name = "KIB")]
    pub ringbuf_kib: u32,
    /// Most upstream targets itemised; connects to more are counted as untracked.
    #[arg(long, default_value_t = 4096, value_name = "N")]
    pub max_targets: usize,
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
    Ok(Duration::from_secs_f64(secs))
}

fn parse_ringbuf_kib(s: &str) -> Result<u32, String> {
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
