//! Where the traced nginx's TLS library is, for the `tls_status` uprobes: the `libssl` each
//! traced process maps (`/proc/PID/maps`), or the executable itself when it maps none (a static
//! build: the symbols, if not stripped, are in the binary). Read once at start; with none found
//! the loader falls back to the system's libssl (ld.so.cache), so an nginx started later with it is
//! covered; one with its own library is not (the error log covers it).

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::kernel::load::Filter;

/// A file to put the uprobes on, and one process that maps it (for the messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsTarget {
    pub path: PathBuf,
    pub pid: u32,
}

/// The processes whose libraries count: the `--pid` ones, else every process with the traced
/// name (`nginx` when every process is traced).
fn candidates(filter: &Filter) -> Vec<u32> {
    if !filter.pids.is_empty() {
        return filter.pids.clone();
    }
    let name = filter.comm.as_deref().unwrap_or("nginx");
    let name = &name.as_bytes()[..name.len().min(15)];
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/comm")).is_ok_and(|c| c.strip_suffix(b"\n").unwrap_or(&c) == name))
        .collect()
}

/// `libssl.so.3`, `libssl.so`, `libssl-1_1.so`… but not `libssl3.so` (NSS).
fn is_libssl(path: &str) -> bool {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.starts_with("libssl.so") || base.starts_with("libssl-")
}

/// The libssl paths in a `/proc/PID/maps` text (each once).
pub fn libssl_in_maps(maps: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in maps.lines() {
        // address perms offset dev inode path
        let Some(path) = line.split_whitespace().nth(5) else { continue };
        if path.starts_with('/') && is_libssl(path) && !out.iter().any(|p| p == path) {
            out.push(path.to_string());
        }
    }
    out
}

/// A path as the process sees it, openable from here: itself when the process shares our root,
/// else through `/proc/PID/root` (a container).
fn from_here(pid: u32, path: &str) -> PathBuf {
    let same_root = match (std::fs::metadata(format!("/proc/{pid}/root/")), std::fs::metadata("/")) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => true,
    };
    if same_root {
        PathBuf::from(path)
    } else {
        PathBuf::from(format!("/proc/{pid}/root{path}"))
    }
}

/// Every distinct TLS library (by device and inode) the traced processes use.
pub fn find(filter: &Filter) -> Vec<TlsTarget> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for pid in candidates(filter) {
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else { continue };
        let mut paths: Vec<PathBuf> = libssl_in_maps(&maps).iter().map(|p| from_here(pid, p)).collect();
        if paths.is_empty() {
            // Statically linked (or no TLS at all: attaching then fails on the symbol and says so).
            match std::fs::read_link(format!("/proc/{pid}/exe")) {
                Ok(exe) => paths.push(from_here(pid, &exe.to_string_lossy())),
                Err(_) => continue,
            }
        }
        for path in paths {
            let Ok(m) = std::fs::metadata(&path) else { continue };
            if seen.insert((m.dev(), m.ino())) {
                out.push(TlsTarget { path, pid });
            }
        }
    }
    out
}

/// Whether `path` names a library (for messages: a static executable is not one).
pub fn is_library(path: &Path) -> bool {
    is_libssl(&path.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libssl_is_found_in_maps() {
        let maps = "55d0c0a00000-55d0c0a2c000 r--p 00000000 fe:01 1311 /usr/sbin/nginx\n\
                    7f95bdd60000-7f95bdd7e000 r--p 00000000 fe:01 2290 /usr/lib/x86_64-linux-gnu/libssl.so.3\n\
                    7f95bdd7e000-7f95bddd9000 r-xp 0001e000 fe:01 2290 /usr/lib/x86_64-linux-gnu/libssl.so.3\n\
                    7f95bde00000-7f95bde10000 r-xp 00000000 fe:01 2291 /usr/lib/x86_64-linux-gnu/libssl3.so\n\
                    7f95bdf00000-7f95bdf10000 rw-p 00000000 00:00 0 \n\
                    7ffd1b3f2000-7ffd1b413000 rw-p 00000000 00:00 0 [stack]\n";
        assert_eq!(libssl_in_maps(maps), vec!["/usr/lib/x86_64-linux-gnu/libssl.so.3".to_string()]);
        assert!(is_libssl("/opt/openssl/lib/libssl-1_1.so"));
        assert!(!is_libssl("/usr/lib/libssl3.so"));
    }
}
