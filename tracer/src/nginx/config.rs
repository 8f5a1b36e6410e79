//! Finding nginx on its own: master processes, their config (`nginx -T` with the running master's
//! -c/-p), the error and access logs and the timeouts the verdicts quote.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::host::listeners::{ppid, process_comm};

/// What was found (or given by flags).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Discovery {
    pub masters: Vec<u32>,
    pub conf: Option<String>,
    pub error_logs: Vec<String>,
    pub access_logs: Vec<String>,
    /// Seconds, as configured (first occurrence); None = not set (nginx's default applies).
    pub upstream_keepalive_timeout_s: Option<f64>,
    pub proxy_read_timeout_s: Option<f64>,
    pub proxy_connect_timeout_s: Option<f64>,
    /// `upstream NAME { server …; }` blocks (recordings made before they were read have none).
    #[serde(default)]
    pub upstream_groups: Vec<UpstreamGroup>,
}

/// One `upstream` block: nginx balances over its servers and, after `max_fails` failures within
/// `fail_timeout`, leaves a server out for `fail_timeout`; with every server out it answers 502
/// without connecting ("no live upstreams").
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct UpstreamGroup {
    pub name: String,
    pub servers: Vec<UpstreamServer>,
    /// `zone` set: the failure counts are shared by all workers (otherwise each worker counts its
    /// own).
    #[serde(default)]
    pub shared: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct UpstreamServer {
    /// As written, `unix:` prefix included (`unix:/run/app.sock`, `127.0.0.1:8000`): what the
    /// tracer names the target.
    pub addr: String,
    /// nginx's default 1; 0 = never marked down.
    pub max_fails: u32,
    /// Seconds, nginx's default 10.
    pub fail_timeout_s: f64,
    /// `backup` or `down`: not one of the servers nginx balances over normally.
    pub backup: bool,
    pub down: bool,
}

impl Discovery {
    /// nginx's upstream keepalive_timeout, default 60 s.
    pub fn keepalive_timeout_s(&self) -> f64 {
        self.upstream_keepalive_timeout_s.unwrap_or(60.0)
    }
}

/// nginx masters: processes named nginx whose parent is not.
pub fn masters() -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if process_comm(pid) == "nginx" && ppid(pid).is_none_or(|p| process_comm(p) != "nginx") {
            out.push(pid);
        }
    }
    out.sort();
    out
}

/// The master's command line. nginx overwrites its argv with a title ("nginx: master process
/// /usr/sbin/nginx -c …"), so /proc/PID/cmdline is one space-separated string, not NUL-separated
/// arguments.
fn cmdline(pid: u32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    split_cmdline(&raw)
}

fn split_cmdline(raw: &[u8]) -> Vec<String> {
    let joined = raw.split(|&c| c == 0).filter(|s| !s.is_empty()).map(String::from_utf8_lossy).collect::<Vec<_>>().join(" ");
    let args = joined.strip_prefix("nginx: master process ").unwrap_or(&joined);
    args.split_whitespace().map(str::to_string).collect()
}

/// Value of a one-letter nginx flag (`-c conf` or `-cconf`).
fn flag(args: &[String], f: &str) -> Option<String> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == f {
            return it.next().cloned();
        }
        if let Some(v) = a.strip_prefix(f) {
            if !v.is_empty() {
                return Some(v.to_string());
            }
        }
    }
    None
}

/// `30s`, `1m`, `500ms`, `60` (seconds) as nginx writes times.
fn nginx_time(v: &str) -> Option<f64> {
    let v = v.trim_end_matches(';');
    let (num, mult) = if let Some(n) = v.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = v.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (v, 1.0)
    };
    num.parse::<f64>().ok().map(|x| x * mult)
}

/// Pull what the verdicts need out of `nginx -T` output: statements end at `;`, blocks open at
/// `{` (the words before it name the block) and close at `}`; `#` starts a comment.
pub fn parse_config(text: &str, prefix: &Path, d: &mut Discovery) {
    let resolve = |p: &str| if p.starts_with('/') { p.to_string() } else { prefix.join(p).display().to_string() };
    let mut blocks: Vec<String> = Vec::new();
    // Index in `d.upstream_groups` of the `upstream` block being read.
    let mut group: Option<usize> = None;
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        for c in line.chars().chain(std::iter::once(' ')) {
            if c.is_whitespace() || c == ';' || c == '{' || c == '}' {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            } else {
                word.push(c);
            }
            match c {
                ';' => {
                    let in_upstream = blocks.iter().any(|b| b == "upstream");
                    match words.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
                        ["error_log", path, ..] if *path != "stderr" => d.error_logs.push(resolve(path)),
                        ["access_log", path, ..] if *path != "off" => d.access_logs.push(resolve(path)),
                        ["keepalive_timeout", t, ..] if in_upstream => {
                            d.upstream_keepalive_timeout_s = d.upstream_keepalive_timeout_s.or(nginx_time(t))
                        }
                        ["proxy_read_timeout", t] => d.proxy_read_timeout_s = d.proxy_read_timeout_s.or(nginx_time(t)),
                        ["proxy_connect_timeout", t] => d.proxy_connect_timeout_s = d.proxy_connect_timeout_s.or(nginx_time(t)),
                        ["server", addr, params @ ..] if group.is_some() => {
                            let mut s = UpstreamServer { addr: addr.to_string(), max_fails: 1, fail_timeout_s: 10.0, backup: false, down: false };
                            for p in params {
                                match p.split_once('=') {
                                    Some(("max_fails", v)) => s.max_fails = v.parse().unwrap_or(1),
                                    Some(("fail_timeout", v)) => s.fail_timeout_s = nginx_time(v).unwrap_or(10.0),
                                    None if *p == "backup" => s.backup = true,
                                    None if *p == "down" => s.down = true,
                                    _ => {}
                                }
                            }
                            d.upstream_groups[group.expect("checked")].servers.push(s);
                        }
                        ["zone", ..] if group.is_some() => d.upstream_groups[group.expect("checked")].shared = true,
                        _ => {}
                    }
                    words.clear();
                }
                '{' => {
                    if let ["upstream", name] = words.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
                        d.upstream_groups.push(UpstreamGroup { name: name.to_string(), ..Default::default() });
                        group = Some(d.upstream_groups.len() - 1);
                    }
                    blocks.push(words.drain(..).next().unwrap_or_default());
                }
                '}' => {
                    if blocks.pop().as_deref() == Some("upstream") {
                        group = None;
                    }
                    words.clear();
                }
                _ => {}
            }
        }
    }
    d.error_logs.dedup();
    d.access_logs.dedup();
}

/// Find nginx and its files; `error_log` / `access_log` / `conf` flags override what is found.
/// `prefer`: pids the user named (`--pid`); a master among them is the one whose config is read.
pub fn discover(prefer: &[u32], conf_flag: Option<&Path>, error_log: Option<&Path>, access_log: Option<&Path>) -> Discovery {
    let mut d = Discovery { masters: masters(), ..Default::default() };
    let master = prefer.iter().copied().find(|p| d.masters.contains(p)).or_else(|| d.masters.first().copied());
    let args = master.map(cmdline).unwrap_or_default();
    let prefix = PathBuf::from(flag(&args, "-p").unwrap_or_else(|| "/usr/share/nginx".into()));
    let conf = conf_flag.map(Path::to_path_buf).or_else(|| flag(&args, "-c").map(PathBuf::from));
    if let Some(e) = flag(&args, "-e") {
        d.error_logs.push(e);
    }
    let exe = master.and_then(|m| std::fs::read_link(format!("/proc/{m}/exe")).ok()).unwrap_or_else(|| "nginx".into());
    let mut cmd = std::process::Command::new(&exe);
    cmd.arg("-T").arg("-p").arg(&prefix);
    if let Some(c) = &conf {
        cmd.arg("-c").arg(c);
    }
    if let Ok(out) = cmd.output() {
        parse_config(&String::from_utf8_lossy(&out.stdout), &prefix, &mut d);
    }
    d.conf = conf.map(|c| c.display().to_string());
    if let Some(e) = error_log {
        d.error_logs = vec![e.display().to_string()];
    }
    if let Some(a) = access_log {
        d.access_logs = vec![a.display().to_string()];
    }
    d.error_logs.sort();
    d.error_logs.dedup();
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_values() {
        let conf = "events {}\nhttp {\n  error_log logs/e.log error;\n  access_log off;\n  access_log /var/log/a.log main;\n  upstream u {\n    server 127.0.0.1:1;\n    keepalive 8;\n    keepalive_timeout 30s;\n  }\n  keepalive_timeout 75;\n  server { location / { proxy_read_timeout 2s; proxy_connect_timeout 500ms; } }\n}\n";
        let mut d = Discovery::default();
        parse_config(conf, Path::new("/srv"), &mut d);
        assert_eq!(d.error_logs, vec!["/srv/logs/e.log"]);
        assert_eq!(d.access_logs, vec!["/var/log/a.log"]);
        assert_eq!(d.upstream_keepalive_timeout_s, Some(30.0), "only inside upstream {{}}");
        assert_eq!(d.proxy_read_timeout_s, Some(2.0));
        assert_eq!(d.proxy_connect_timeout_s, Some(0.5));
        assert_eq!(d.upstream_groups.len(), 1);
        assert_eq!((d.upstream_groups[0].name.as_str(), d.upstream_groups[0].servers[0].addr.as_str()), ("u", "127.0.0.1:1"));
    }

    #[test]
    fn upstream_groups_with_their_failure_settings() {
        let conf = "http {\n upstream app {\n  zone app 64k;\n  server unix:/run/a.sock max_fails=2 fail_timeout=30s;\n  server 127.0.0.1:8000;\n  server 127.0.0.1:8001 backup;\n }\n upstream other { server 10.0.0.1:80 down; }\n server { location / { proxy_pass http://app; } }\n}\n";
        let mut d = Discovery::default();
        parse_config(conf, Path::new("/"), &mut d);
        let names: Vec<&str> = d.upstream_groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["app", "other"]);
        let app = &d.upstream_groups[0];
        assert!(app.shared);
        let s: Vec<(&str, u32, f64, bool)> = app.servers.iter().map(|s| (s.addr.as_str(), s.max_fails, s.fail_timeout_s, s.backup)).collect();
        assert_eq!(s, [("unix:/run/a.sock", 2, 30.0, false), ("127.0.0.1:8000", 1, 10.0, false), ("127.0.0.1:8001", 1, 10.0, true)]);
        assert!(d.upstream_groups[1].servers[0].down && !d.upstream_groups[1].shared);
        // A recording made before groups were read still loads.
        let old: Discovery = serde_json::from_str(r#"{"masters":[],"conf":null,"error_logs":[],"access_logs":[],"upstream_keepalive_timeout_s":null,"proxy_read_timeout_s":null,"proxy_connect_timeout_s":null}"#).unwrap();
        assert!(old.upstream_groups.is_empty());
    }

    #[test]
    fn master_title_is_split_into_arguments() {
        let title = b"nginx: master process /usr/sbin/nginx -c /tmp/x/nginx.conf -p /tmp/x -e /tmp/x/error.log\0\0\0";
        let args = split_cmdline(title);
        assert_eq!(flag(&args, "-c").as_deref(), Some("/tmp/x/nginx.conf"));
        assert_eq!(flag(&args, "-e").as_deref(), Some("/tmp/x/error.log"));
        let plain = split_cmdline(b"/usr/sbin/nginx\0-c\0/etc/nginx/nginx.conf\0");
        assert_eq!(flag(&plain, "-c").as_deref(), Some("/etc/nginx/nginx.conf"));
    }
}
