//! Files the tracer writes (the daemon's event file and its rotations, recordings, HTML reports)
//! hold sockaddrs, process names and nginx error lines: they are created 0640 (owner, then its
//! group; nobody else), and an existing file keeps its mode minus any access for others.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

pub const MODE: u32 = 0o640;

/// Open `path` for writing (appending, or truncated), created with `MODE`.
pub fn open(path: &Path, append: bool) -> io::Result<File> {
    let f = OpenOptions::new().create(true).write(true).append(append).truncate(!append).mode(MODE).open(path)?;
    let mode = f.metadata()?.permissions().mode() & 0o7777;
    if mode & !MODE != 0 {
        f.set_permissions(std::fs::Permissions::from_mode(mode & MODE))?;
    }
    Ok(f)
}

/// `std::fs::write` with `MODE`.
pub fn write(path: &Path, contents: impl AsRef<[u8]>) -> io::Result<()> {
    io::Write::write_all(&mut open(path, false)?, contents.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn created_0640_and_an_existing_file_loses_access_for_others() {
        let dir = std::env::temp_dir().join(format!("tracer-private-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("new");
        write(&p, "x").unwrap();
        assert_eq!(mode(&p), 0o640);
        let old = dir.join("old");
        std::fs::write(&old, "y").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o666)).unwrap();
        open(&old, true).unwrap();
        assert_eq!(mode(&old), 0o640);
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o600)).unwrap();
        open(&old, true).unwrap();
        assert_eq!(mode(&old), 0o600, "a stricter mode is kept");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
