//! nginx's error log, read as it grows (rotation tolerated, malformed lines ignored), and what
//! each upstream error line says went wrong.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Follows one error log from where it was when we started, like `tail -F`: a rotated file is
/// read to its end through the handle we hold, then the new file from its start.
pub struct ErrorLog {
    path: PathBuf,
    file: Option<File>,
    pending: Vec<u8>,
}

impl ErrorLog {
    pub fn open_at_end(path: &Path) -> ErrorLog {
        let file = File::open(path).ok().and_then(|mut f| f.seek(SeekFrom::End(0)).ok().map(|_| f));
        ErrorLog { path: path.to_path_buf(), file, pending: Vec::new() }
    }

    /// Complete lines written since the last call.
    pub fn new_lines(&mut self) -> Vec<String> {
        let mut buf = Vec::new();
        if let Some(f) = self.file.as_mut() {
            let _ = f.read_to_end(&mut buf);
        }
        // Rotated (or truncated): switch to the file now at the path.
        let current = std::fs::metadata(&self.path).ok();
        let held = self.file.as_ref().and_then(|f| f.metadata().ok());
        let rotated = match (&current, &held) {
            (Some(c), Some(h)) => c.ino() != h.ino() || c.len() < h.len(),
            (Some(_), None) => true,
            _ => false,
        };
        if rotated {
            if let Ok(mut f) = File::open(&self.path) {
                if held.as_ref().zip(current.as_ref()).is_some_and(|(h, c)| c.ino() == h.ino()) {
                    buf.clear(); // truncated in place: start over
                    self.pending.clear();
                }
                let _ = f.read_to_end(&mut buf);
                self.file = Some(f);
            }
        }
        self.pending.extend_from_slice(&buf);
        let Some(end) = self.pending.iter().rposition(|&b| b == b'\n') else { return Vec::new() };
        let complete: Vec<u8> = self.pending.drain(..=end).collect();
        String::from_utf8_lossy(&complete).lines().map(str::to_string).collect()
    }
}

crate::codes! {
    /// What an nginx error-log line says went wrong with an upstream (in name order: reports
    /// list the counts in this order).
    pub enum ErrorKind {
        BrokenPipe = "broken_pipe",
        ConnectEacces = "connect_eacces",
        ConnectEagain = "connect_eagain",
        ConnectEnoent = "connect_enoent",
        ConnectRefused = "connect_refused",
        ConnectReset = "connect_reset",
        ConnectTimeout = "connect_timeout",
        NoLiveUpstreams = "no_live_upstreams",
        PrematureClose = "premature_close",
        ReadTimeout = "read_timeout",
        ResetByPeer = "reset_by_peer",
    }
}

impl ErrorKind {
    /// The kind of an error-log line, if it is an upstream error.
    pub fn of_line(line: &str) -> Option<ErrorKind> {
        // "2026/11/25 15:28:39 [error] 15563#15563: *39 <message>, client: …": malformed lines are
        // simply not matched.
        if !line.contains("] ") || !line.contains('#') {
            return None;
        }
        let connecting = line.contains("while connecting to upstream");
        Some(if line.contains("(11: Resource temporarily unavailable)") && connecting {
            ErrorKind::ConnectEagain
        } else if line.contains("(2: No such file or directory)") && connecting {
            ErrorKind::ConnectEnoent
        } else if line.contains("(13: Permission denied)") && connecting {
            ErrorKind::ConnectEacces
        } else if line.contains("(111: Connection refused)") {
            ErrorKind::ConnectRefused
        } else if line.contains("(104: Connection reset by peer)") && connecting {
            ErrorKind::ConnectReset
        } else if line.contains("upstream timed out") && connecting {
            ErrorKind::ConnectTimeout
        } else if line.contains("upstream timed out") {
            ErrorKind::ReadTimeout
        } else if line.contains("no live upstreams") {
            ErrorKind::NoLiveUpstreams
        } else if line.contains("upstream prematurely closed connection") {
            ErrorKind::PrematureClose
        } else if line.contains("(104: Connection reset by peer)") {
            ErrorKind::ResetByPeer
        } else if line.contains("(32: Broken pipe)") {
            ErrorKind::BrokenPipe
        } else {
            return None;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_declared_in_name_order() {
        assert!(ErrorKind::ALL.windows(2).all(|w| w[0].as_str() < w[1].as_str()));
    }

    #[test]
    fn error_lines() {
        let l = "2026/11/25 15:28:39 [error] 15563#15563: *39 connect() to unix:/x.sock failed (11: Resource temporarily unavailable) while connecting to upstream, client: 127.0.0.1";
        assert_eq!(ErrorKind::of_line(l), Some(ErrorKind::ConnectEagain));
        assert_eq!(ErrorKind::of_line("garbage (11: Resource temporarily unavailable)"), None);
        assert_eq!(ErrorKind::of_line(""), None);
    }

    #[test]
    fn follows_rotation() {
        let dir = std::env::temp_dir().join(format!("tracer-elog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("error.log");
        std::fs::write(&p, "old line\n").unwrap();
        let mut log = ErrorLog::open_at_end(&p);
        use std::io::Write;
        std::fs::OpenOptions::new().append(true).open(&p).unwrap().write_all(b"one\ntw").unwrap();
        assert_eq!(log.new_lines(), vec!["one"]);
        std::fs::OpenOptions::new().append(true).open(&p).unwrap().write_all(b"o\n").unwrap();
        std::fs::rename(&p, dir.join("error.log.1")).unwrap();
        std::fs::write(&p, "three\n").unwrap();
        assert_eq!(log.new_lines(), vec!["two", "three"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
