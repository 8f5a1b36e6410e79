//! Which app server owns a listener, and the settings the verdicts' fixes name: read from its
//! command line and the config files it names, or its documented default when nothing sets it.
//! Read once per app-server master (through `Env`, so a recording replays the answer).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

crate::codes! {
    /// The app server behind an upstream, recognised from its command line.
    pub enum AppServerKind {
        Gunicorn = "gunicorn",
        Uwsgi = "uwsgi",
        PhpFpm = "php-fpm",
        Uvicorn = "uvicorn",
        Puma = "puma",
        Node = "node",
        Generic = "generic",
    }
}

crate::codes! {
    /// What a fix may need to change.
    pub enum Knob {
        /// The listen() backlog.
        Backlog = "backlog",
        /// How long a request may run before the app server kills its worker.
        WorkerTimeout = "worker_timeout",
        /// How long an idle keep-alive connection is kept open.
        KeepAlive = "keep_alive",
        /// Requests a worker serves before it is recycled.
        MaxRequests = "max_requests",
        /// Worker processes.
        Workers = "workers",
    }
}

/// A setting as the app server sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setting {
    pub knob: Knob,
    /// As the user writes it: `--backlog`, `listen.backlog`, `request_terminate_timeout`.
    pub name: String,
    pub value: String,
    /// `command line`, the config file's path, or `default`.
    pub source: String,
    /// php-fpm: the pool it belongs to, and that pool's `listen`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<(String, String)>,
}

impl Setting {
    /// `--backlog 16 (command line)`, `request_terminate_timeout = 2s (pool "www", /etc/…/www.conf)`.
    pub fn describe(&self) -> String {
        let place = match &self.pool {
            Some((pool, _)) => format!("pool \"{pool}\", {}", self.source),
            None => self.source.clone(),
        };
        if self.name.starts_with('-') {
            format!("{} {} ({place})", self.name, self.value)
        } else {
            format!("{} = {} ({place})", self.name, self.value)
        }
    }

    /// The value in seconds, when it is a duration (`30`, `2s`, `1m`).
    pub fn seconds(&self) -> Option<f64> {
        let v = self.value.trim();
        let (num, mult) = match v.strip_suffix("ms") {
            Some(n) => (n, 0.001),
            None => match v.char_indices().last() {
                Some((i, 's')) => (&v[..i], 1.0),
                Some((i, 'm')) => (&v[..i], 60.0),
                Some((i, 'h')) => (&v[..i], 3600.0),
                _ => (v, 1.0),
            },
        };
        num.trim().parse::<f64>().ok().map(|x| x * mult)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppServer {
    pub kind: AppServerKind,
    pub pid: u32,
    pub settings: Vec<Setting>,
    /// Settings that could not be read (a config file missing or unreadable), said in the fix.
    #[serde(default)]
    pub unreadable: Vec<String>,
}

impl AppServer {
    /// The setting for `knob` that applies to `target` (`unix:/path` or `ip:port`): a php-fpm
    /// pool's own when its `listen` matches, else the only one.
    pub fn setting(&self, knob: Knob, target: &str) -> Option<&Setting> {
        let mut candidates = self.settings.iter().filter(|s| s.knob == knob);
        let all: Vec<&Setting> = candidates.clone().collect();
        candidates.find(|s| s.pool.as_ref().is_some_and(|(_, listen)| listen_matches(listen, target))).or(match all.as_slice() {
            [one] => Some(*one),
            _ => None,
        })
    }
}

/// Does a php-fpm `listen` value (`/run/php/x.sock`, `127.0.0.1:9000`, `9000`) name `target`?
fn listen_matches(listen: &str, target: &str) -> bool {
    match target.strip_prefix("unix:") {
        Some(path) => listen == path,
        None => {
            listen == target
                || target
                    .rsplit_once(':')
                    .is_some_and(|(_, port)| listen == port || listen.ends_with(&format!(":{port}")) && listen.starts_with("[::]"))
        }
    }
}

/// The app server `pid` is, from /proc (None: the process is gone).
pub fn read(pid: u32) -> Option<AppServer> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_else(|_| PathBuf::from("/"));
    let args: Vec<String> = raw.split(|&b| b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    Some(recognise(pid, comm.trim(), &args, &cwd, &|p: &Path| std::fs::read_to_string(p).ok()))
}

type ReadFile<'a> = &'a dyn Fn(&Path) -> Option<String>;

/// Recognise the app server from its name and arguments and resolve its settings; `read_file`
/// reads the config files it names (relative paths against `cwd`).
pub fn recognise(pid: u32, comm: &str, args: &[String], cwd: &Path, read_file: ReadFile) -> AppServer {
    let named = |n: &str| comm.starts_with(n) || args.iter().take(3).any(|a| a.rsplit('/').next().is_some_and(|b| b.starts_with(n)));
    let kind = if named("php-fpm") {
        AppServerKind::PhpFpm
    } else if named("gunicorn") {
        AppServerKind::Gunicorn
    } else if named("uwsgi") {
        AppServerKind::Uwsgi
    } else if named("uvicorn") {
        AppServerKind::Uvicorn
    } else if named("puma") {
        AppServerKind::Puma
    } else if named("node") {
        AppServerKind::Node
    } else {
        AppServerKind::Generic
    };
    let mut app = AppServer { kind, pid, settings: Vec::new(), unreadable: Vec::new() };
    let resolve = |p: &str| if p.starts_with('/') { PathBuf::from(p) } else { cwd.join(p) };
    match kind {
        AppServerKind::Gunicorn => {
            // Flags win over the config file (-c, or ./gunicorn.conf.py), which wins over defaults.
            let file = flag(args, &["-c", "--config"]).map(|p| resolve(&p)).unwrap_or_else(|| cwd.join("gunicorn.conf.py"));
            let conf = read_file(&file).map(|t| python_assignments(&t)).unwrap_or_default();
            for (knob, flags, conf_key, default) in [
                (Knob::Backlog, &["--backlog"][..], "backlog", "2048"),
                (Knob::WorkerTimeout, &["-t", "--timeout"][..], "timeout", "30"),
                (Knob::KeepAlive, &["--keep-alive"][..], "keepalive", "2"),
                (Knob::MaxRequests, &["--max-requests"][..], "max_requests", "0"),
                (Knob::Workers, &["-w", "--workers"][..], "workers", "1"),
            ] {
                let (value, source) = match (flag(args, flags), conf.get(conf_key)) {
                    (Some(v), _) => (v, "command line".to_string()),
                    (None, Some(v)) => (v.clone(), file.display().to_string()),
                    (None, None) => (default.to_string(), "default".to_string()),
                };
                app.settings.push(Setting { knob, name: flags.last().expect("a flag").to_string(), value, source, pool: None });
            }
        }
        AppServerKind::Uwsgi => {
            let ini = flag(args, &["--ini"]).map(|p| resolve(&p));
            let conf = match &ini {
                Some(p) => match read_file(p) {
                    Some(t) => ini_section(&t, "uwsgi"),
                    None => {
                        app.unreadable.push(p.display().to_string());
                        BTreeMap::new()
                    }
                },
                None => BTreeMap::new(),
            };
            for (knob, flags, default) in [
                (Knob::Backlog, &["-l", "--listen"][..], "100"),
                (Knob::WorkerTimeout, &["--harakiri"][..], "0"),
                (Knob::MaxRequests, &["--max-requests"][..], "0"),
                (Knob::Workers, &["-p", "--processes", "--workers"][..], "1"),
            ] {
                let long = flags.iter().find(|f| f.starts_with("--")).expect("a long flag").trim_start_matches("--");
                let (value, source) = match (flag(args, flags), conf.get(long).or_else(|| conf.get(&long.replace('-', "_")))) {
                    (Some(v), _) => (v, "command line".to_string()),
                    (None, Some(v)) => (v.clone(), ini.as_ref().expect("read from it").display().to_string()),
                    (None, None) => (default.to_string(), "default".to_string()),
                };
                app.settings.push(Setting { knob, name: format!("--{long}"), value, source, pool: None });
            }
        }
        AppServerKind::PhpFpm => php_fpm(&mut app, args, read_file),
        AppServerKind::Uvicorn => {
            for (knob, f, default) in
                [(Knob::Backlog, "--backlog", "2048"), (Knob::KeepAlive, "--timeout-keep-alive", "5"), (Knob::Workers, "--workers", "1")]
            {
                let (value, source) = flag(args, &[f]).map_or((default.to_string(), "default".to_string()), |v| (v, "command line".to_string()));
                app.settings.push(Setting { knob, name: f.to_string(), value, source, pool: None });
            }
        }
        AppServerKind::Puma => {
            app.settings.push(Setting {
                knob: Knob::KeepAlive,
                name: "persistent_timeout".into(),
                value: "20".into(),
                source: "default".into(),
                pool: None,
            });
            app.settings.push(Setting { knob: Knob::Backlog, name: "backlog".into(), value: "1024".into(), source: "default".into(), pool: None });
        }
        AppServerKind::Node => {
            app.settings.push(Setting {
                knob: Knob::KeepAlive,
                name: "server.keepAliveTimeout".into(),
                value: "5s".into(),
                source: "default".into(),
                pool: None,
            });
            app.settings.push(Setting {
                knob: Knob::Backlog,
                name: "server.listen(…, backlog)".into(),
                value: "511".into(),
                source: "default".into(),
                pool: None,
            });
        }
        AppServerKind::Generic => {}
    }
    app
}

/// php-fpm: the master's title names its main config (`php-fpm: master process (/etc/…/php-fpm.conf)`);
/// pools come from it and the files it includes.
fn php_fpm(app: &mut AppServer, args: &[String], read_file: ReadFile) {
    let title = args.join(" ");
    let main = title
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(p, _)| PathBuf::from(p))
        .or_else(|| flag(args, &["-y", "--fpm-config"]).map(PathBuf::from));
    let Some(main) = main else {
        app.unreadable.push("php-fpm's main config (not named on its command line)".into());
        return;
    };
    let Some(text) = read_file(&main) else {
        app.unreadable.push(main.display().to_string());
        return;
    };
    let mut files = vec![(main.clone(), text)];
    for inc in ini_all(&files[0].1).into_iter().filter(|(k, _)| k == "include").map(|(_, v)| v) {
        let inc = if inc.starts_with('/') { PathBuf::from(inc) } else { main.parent().unwrap_or(Path::new("/")).join(inc) };
        for p in expand_glob(&inc) {
            match read_file(&p) {
                Some(t) => files.push((p, t)),
                None => app.unreadable.push(p.display().to_string()),
            }
        }
    }
    for (path, text) in &files {
        for (pool, keys) in ini_sections(text) {
            if pool == "global" || pool.is_empty() {
                continue;
            }
            let listen = keys.get("listen").cloned().unwrap_or_default();
            for (knob, key, default) in [
                (Knob::Backlog, "listen.backlog", "511"),
                (Knob::WorkerTimeout, "request_terminate_timeout", "0"),
                (Knob::MaxRequests, "pm.max_requests", "0"),
                (Knob::Workers, "pm.max_children", "5"),
            ] {
                let (value, source) = match keys.get(key) {
                    Some(v) => (v.clone(), path.display().to_string()),
                    None => (default.to_string(), "default".to_string()),
                };
                app.settings.push(Setting { knob, name: key.to_string(), value, source, pool: Some((pool.clone(), listen.clone())) });
            }
        }
    }
}

/// `dir/*.conf` → the matching files, sorted; any other path → itself.
fn expand_glob(p: &Path) -> Vec<PathBuf> {
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let Some((prefix, suffix)) = name.split_once('*') else { return vec![p.to_path_buf()] };
    let dir = p.parent().unwrap_or(Path::new("/"));
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()).is_some_and(|n| n.starts_with(prefix) && n.ends_with(suffix)))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The value of the first of `names` among the arguments (`--name value`, `--name=value`,
/// `-n value`, `-nvalue` for one-letter flags).
fn flag(args: &[String], names: &[&str]) -> Option<String> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        for n in names {
            if a == n {
                return it.next().cloned();
            }
            if let Some(v) = a.strip_prefix(&format!("{n}=")) {
                return Some(v.to_string());
            }
            if n.len() == 2 && !n.starts_with("--") && a.len() > 2 && a.starts_with(n) && !a.starts_with("--") {
                return Some(a[2..].to_string());
            }
        }
    }
    None
}

/// `name = value` lines of a Python config file (gunicorn.conf.py): numbers and quoted strings.
fn python_assignments(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let l = l.split('#').next()?.trim();
            let (k, v) = l.split_once('=')?;
            let (k, v) = (k.trim(), v.trim().trim_matches(|c| c == '"' || c == '\''));
            (k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !k.is_empty()).then(|| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// Every `key = value` of an ini file, with the section each is in.
fn ini_lines(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for l in text.lines() {
        let l = l.split(';').next().unwrap_or("").trim();
        if l.starts_with('#') || l.is_empty() {
            continue;
        }
        if let Some(s) = l.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = s.trim().to_string();
        } else if let Some((k, v)) = l.split_once('=') {
            out.push((section.clone(), k.trim().to_string(), v.trim().trim_matches('"').to_string()));
        }
    }
    out
}

fn ini_all(text: &str) -> Vec<(String, String)> {
    ini_lines(text).into_iter().map(|(_, k, v)| (k, v)).collect()
}

fn ini_section(text: &str, section: &str) -> BTreeMap<String, String> {
    ini_lines(text).into_iter().filter(|(s, _, _)| s == section).map(|(_, k, v)| (k, v)).collect()
}

fn ini_sections(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (s, k, v) in ini_lines(text) {
        out.entry(s).or_default().insert(k, v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    fn files(map: &'static [(&'static str, &'static str)]) -> impl Fn(&Path) -> Option<String> {
        move |p: &Path| map.iter().find(|(n, _)| Path::new(n) == p).map(|(_, t)| t.to_string())
    }

    #[test]
    fn gunicorn_flags_then_config_file_then_defaults() {
        let read = files(&[("/srv/app/gunicorn.conf.py", "timeout = 90  # seconds\nworkers = 4\n")]);
        let a = recognise(7, "gunicorn", &args("/usr/bin/python3 /usr/local/bin/gunicorn --backlog 16 -w2 app:app"), Path::new("/srv/app"), &read);
        assert_eq!(a.kind, AppServerKind::Gunicorn);
        let s = |k| a.setting(k, "unix:/run/g.sock").unwrap().describe();
        assert_eq!(s(Knob::Backlog), "--backlog 16 (command line)");
        assert_eq!(s(Knob::Workers), "--workers 2 (command line)");
        assert_eq!(s(Knob::WorkerTimeout), "--timeout 90 (/srv/app/gunicorn.conf.py)");
        assert_eq!(s(Knob::KeepAlive), "--keep-alive 2 (default)");
    }

    #[test]
    fn uwsgi_ini_and_flags() {
        let read = files(&[("/etc/uwsgi/app.ini", "[uwsgi]\nharakiri = 60\nmax-requests = 200\n")]);
        let a = recognise(7, "uwsgi", &args("uwsgi --ini /etc/uwsgi/app.ini --listen 32"), Path::new("/"), &read);
        let s = |k| a.setting(k, "unix:/x").unwrap().describe();
        assert_eq!(s(Knob::Backlog), "--listen 32 (command line)");
        assert_eq!(s(Knob::WorkerTimeout), "--harakiri 60 (/etc/uwsgi/app.ini)");
        assert_eq!(s(Knob::MaxRequests), "--max-requests 200 (/etc/uwsgi/app.ini)");
    }

    #[test]
    fn php_fpm_pools_by_their_listen() {
        let read = files(&[
            (
                "/etc/php/8.2/fpm/php-fpm.conf",
                "[global]\npid = /run/php.pid\ninclude=/nonexistent/pool.d/www.conf\ninclude=/etc/php/8.2/fpm/app.conf\n",
            ),
            (
                "/etc/php/8.2/fpm/app.conf",
                "[app]\nlisten = /run/php/app.sock\nrequest_terminate_timeout = 2s ; cut slow scripts\n[other]\nlisten = 127.0.0.1:9001\n",
            ),
        ]);
        let a = recognise(7, "php-fpm8.2", &args("php-fpm: master process (/etc/php/8.2/fpm/php-fpm.conf)"), Path::new("/"), &read);
        assert_eq!(a.kind, AppServerKind::PhpFpm);
        let t = a.setting(Knob::WorkerTimeout, "unix:/run/php/app.sock").unwrap();
        assert_eq!(t.describe(), "request_terminate_timeout = 2s (pool \"app\", /etc/php/8.2/fpm/app.conf)");
        assert_eq!(t.seconds(), Some(2.0));
        assert_eq!(a.setting(Knob::Backlog, "127.0.0.1:9001").unwrap().describe(), "listen.backlog = 511 (pool \"other\", default)");
        assert!(a.setting(Knob::Backlog, "unix:/elsewhere.sock").is_none(), "two pools, none matches: no guess");
        assert_eq!(a.unreadable, vec!["/nonexistent/pool.d/www.conf"]);
    }

    #[test]
    fn unknown_servers_are_generic_and_durations_parse() {
        let a = recognise(7, "python3", &args("python3 server.py"), Path::new("/"), &|_: &Path| None);
        assert_eq!((a.kind, a.settings.len()), (AppServerKind::Generic, 0));
        let s = |v: &str| Setting { knob: Knob::WorkerTimeout, name: "t".into(), value: v.into(), source: "x".into(), pool: None }.seconds();
        assert_eq!((s("30"), s("2s"), s("1m"), s("500ms"), s("x")), (Some(30.0), Some(2.0), Some(60.0), Some(0.5), None));
    }
}
