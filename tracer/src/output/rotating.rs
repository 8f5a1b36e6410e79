//! A file that rotates by size: `events.jsonl` → `events.jsonl.1` → … (`keep` old files), so a
//! daemon's event stream never fills the disk.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub struct RotatingFile {
    path: PathBuf,
    file: File,
    written: u64,
    max_bytes: u64,
    keep: u32,
}

fn open(path: &Path) -> io::Result<(File, u64)> {
    let f = super::private::open(path, true)?;
    let len = f.metadata()?.len();
    Ok((f, len))
}

impl RotatingFile {
    pub fn open(path: &Path, max_bytes: u64, keep: u32) -> io::Result<RotatingFile> {
        let (file, written) = open(path)?;
        Ok(RotatingFile { path: path.to_path_buf(), file, written, max_bytes: max_bytes.max(1024), keep: keep.max(1) })
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        for i in (1..self.keep).rev() {
            let from = format!("{}.{i}", self.path.display());
            if Path::new(&from).exists() {
                std::fs::rename(&from, format!("{}.{}", self.path.display(), i + 1))?;
            }
        }
        std::fs::rename(&self.path, format!("{}.1", self.path.display()))?;
        (self.file, self.written) = open(&self.path)?;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Rotate only between lines, so every file holds whole JSON objects.
        if self.written > 0 && self.written + buf.len() as u64 > self.max_bytes && buf.first() != Some(&b'\n') {
            self.rotate()?;
        }
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_and_keeps_n() {
        let dir = std::env::temp_dir().join(format!("tracer-rot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("e.jsonl");
        let mut f = RotatingFile::open(&p, 1024, 2).unwrap();
        for _ in 0..100 {
            f.write_all(&[b'x'; 99]).unwrap();
            f.write_all(b"\n").unwrap();
        }
        f.flush().unwrap();
        assert!(std::fs::metadata(&p).unwrap().len() <= 1024);
        assert!(dir.join("e.jsonl.1").exists() && dir.join("e.jsonl.2").exists());
        assert!(!dir.join("e.jsonl.3").exists(), "keeps 2");
        use std::os::unix::fs::PermissionsExt;
        for f in [p.clone(), dir.join("e.jsonl.1"), dir.join("e.jsonl.2")] {
            assert_eq!(std::fs::metadata(&f).unwrap().permissions().mode() & 0o777, 0o640, "{}", f.display());
        }
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.lines().all(|l| l.len() == 99), "whole lines only");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
