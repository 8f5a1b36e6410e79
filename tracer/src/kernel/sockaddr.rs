//! Decoding the raw sockaddr bytes copied by the kernel program into an upstream target.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

const AF_UNIX: u16 = libc::AF_UNIX as u16;
const AF_INET: u16 = libc::AF_INET as u16;
const AF_INET6: u16 = libc::AF_INET6 as u16;
/// `sizeof(sockaddr_un.sun_path)`.
pub const UNIX_PATH_MAX: usize = 108;

/// Where a connect() was aimed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// A filesystem unix socket path (no trailing NUL).
    UnixPath(Vec<u8>),
    /// An abstract unix socket name, without the leading NUL (may contain NULs).
    UnixAbstract(Vec<u8>),
    /// A unix sockaddr with no name (autobind), or too short to hold one.
    UnixUnnamed,
    Inet(SocketAddr),
    /// A family we do not decode, or an address the kernel program could not read.
    Other {
        family: u16,
    },
}

impl Target {
    /// Decode `addrlen` bytes of a sockaddr (at most `raw.len()` of them were copied).
    pub fn parse(raw: &[u8], addrlen: u32) -> Target {
        if raw.len() < 2 {
            return Target::Other { family: 0 };
        }
        let len = (addrlen as usize).min(raw.len());
        let family = u16::from_ne_bytes([raw[0], raw[1]]);
        match family {
            AF_UNIX => parse_unix(&raw[2..len.max(2)]),
            AF_INET if len >= 8 => {
                let port = u16::from_be_bytes([raw[2], raw[3]]);
                let ip = Ipv4Addr::new(raw[4], raw[5], raw[6], raw[7]);
                Target::Inet(SocketAddr::V4(SocketAddrV4::new(ip, port)))
            }
            AF_INET6 if len >= 24 => {
                let port = u16::from_be_bytes([raw[2], raw[3]]);
                let flowinfo = u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]);
                let mut ip = [0u8; 16];
                ip.copy_from_slice(&raw[8..24]);
                let scope_id = if len >= 28 { u32::from_ne_bytes([raw[24], raw[25], raw[26], raw[27]]) } else { 0 };
                Target::Inet(SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, flowinfo, scope_id)))
            }
            family => Target::Other { family },
        }
    }

    pub fn family(&self) -> &'static str {
        match self {
            Target::UnixPath(_) | Target::UnixAbstract(_) | Target::UnixUnnamed => "unix",
            Target::Inet(SocketAddr::V4(_)) => "ipv4",
            Target::Inet(SocketAddr::V6(_)) => "ipv6",
            Target::Other { .. } => "other",
        }
    }

    pub fn is_unix(&self) -> bool {
        self.family() == "unix"
    }

    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Target::Inet(a) => Some(a.ip()),
            _ => None,
        }
    }
}

/// `path` is `sun_path` cut to `addrlen - 2`.
fn parse_unix(path: &[u8]) -> Target {
    match path.first() {
        None => Target::UnixUnnamed,
        Some(0) => Target::UnixAbstract(path[1..].to_vec()),
        Some(_) => {
            // Filesystem names end at the first NUL; a 108-byte path has none.
            let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
            Target::UnixPath(path[..end].to_vec())
        }
    }
}

/// Bytes shown as text, with anything unprintable (and the backslash) escaped as `\xNN`.
fn escaped(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for &b in bytes {
        if (0x21..0x7f).contains(&b) && b != b'\\' {
            write!(f, "{}", b as char)?;
        } else {
            write!(f, "\\x{b:02x}")?;
        }
    }
    Ok(())
}

/// The form nginx uses in its logs (`unix:/run/x.sock`, `127.0.0.1:8000`, `[::1]:8000`);
/// abstract names are shown `unix:@name` like ss(8).
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::UnixPath(p) => {
                f.write_str("unix:")?;
                escaped(f, p)
            }
            Target::UnixAbstract(n) => {
                f.write_str("unix:@")?;
                escaped(f, n)
            }
            Target::UnixUnnamed => f.write_str("unix:(unnamed)"),
            Target::Inet(a) => write!(f, "{a}"),
            Target::Other { family } => write!(f, "family:{family}"),
        }
    }
}

/// Serialised as its display form (`unix:/path`, `127.0.0.1:8000`).
impl serde::Serialize for Target {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(path: &[u8], abstract_: bool) -> (Vec<u8>, u32) {
        let mut raw = vec![0u8; 112];
        raw[..2].copy_from_slice(&AF_UNIX.to_ne_bytes());
        let off = if abstract_ { 3 } else { 2 };
        raw[off..off + path.len()].copy_from_slice(path);
        // Like most callers: the address length covers the name (+ NUL for paths when it fits).
        let addrlen = if abstract_ { off + path.len() } else { (2 + path.len() + 1).min(110) };
        (raw, addrlen as u32)
    }

    #[test]
    fn unix_path() {
        let (raw, len) = unix(b"/run/gunicorn.sock", false);
        let t = Target::parse(&raw, len);
        assert_eq!(t, Target::UnixPath(b"/run/gunicorn.sock".to_vec()));
        assert_eq!(t.to_string(), "unix:/run/gunicorn.sock");
        assert_eq!(t.family(), "unix");
    }

    #[test]
    fn unix_path_of_108_bytes_without_nul() {
        let path = vec![b'a'; 108];
        let (raw, len) = unix(&path, false);
        assert_eq!(len, 110);
        assert_eq!(Target::parse(&raw, len), Target::UnixPath(path));
    }

    #[test]
    fn unix_path_with_addrlen_sizeof_sockaddr_un() {
        // Callers that pass sizeof(struct sockaddr_un): the name ends at the first NUL.
        let (raw, _) = unix(b"/tmp/x.sock", false);
        assert_eq!(Target::parse(&raw, 110), Target::UnixPath(b"/tmp/x.sock".to_vec()));
    }

    #[test]
    fn abstract_names_keep_embedded_nuls_and_end_at_addrlen() {
        let (raw, len) = unix(b"app\0x", true);
        let t = Target::parse(&raw, len);
        assert_eq!(t, Target::UnixAbstract(b"app\0x".to_vec()));
        assert_eq!(t.to_string(), "unix:@app\\x00x");
    }

    #[test]
    fn unnamed_unix() {
        let (raw, _) = unix(b"", false);
        assert_eq!(Target::parse(&raw, 2), Target::UnixUnnamed);
    }

    #[test]
    fn ipv4() {
        let mut raw = vec![0u8; 112];
        raw[..2].copy_from_slice(&AF_INET.to_ne_bytes());
        raw[2..4].copy_from_slice(&8000u16.to_be_bytes());
        raw[4..8].copy_from_slice(&[127, 0, 0, 1]);
        let t = Target::parse(&raw, 16);
        assert_eq!(t.to_string(), "127.0.0.1:8000");
        assert_eq!(t.family(), "ipv4");
    }

    #[test]
    fn ipv6_with_scope() {
        let mut raw = vec![0u8; 112];
        raw[..2].copy_from_slice(&AF_INET6.to_ne_bytes());
        raw[2..4].copy_from_slice(&443u16.to_be_bytes());
        raw[8..24].copy_from_slice(&Ipv6Addr::LOCALHOST.octets());
        raw[24..28].copy_from_slice(&3u32.to_ne_bytes());
        let t = Target::parse(&raw, 28);
        assert_eq!(t.to_string(), "[::1%3]:443");
        let Target::Inet(SocketAddr::V6(a)) = t else { panic!("not v6") };
        assert_eq!(a.scope_id(), 3);
    }

    #[test]
    fn truncated_or_unknown() {
        let mut raw = vec![0u8; 112];
        raw[..2].copy_from_slice(&AF_INET6.to_ne_bytes());
        assert_eq!(Target::parse(&raw, 10), Target::Other { family: AF_INET6 });
        raw[..2].copy_from_slice(&16u16.to_ne_bytes());
        assert_eq!(Target::parse(&raw, 12), Target::Other { family: 16 });
        assert_eq!(Target::parse(&[1], 1), Target::Other { family: 0 });
    }
}
