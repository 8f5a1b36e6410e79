//! What went wrong upstream, as the kernel saw it: each state handler names the causes it finds,
//! and the join (`diagnosis::join`) ties them to the 502/504 nginx wrote next.

use serde::Serialize;

use crate::kernel::errno;
use crate::kernel::sockaddr::Target;

/// What went wrong upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CauseKind {
    /// connect() failed with this errno (EAGAIN, ENOENT, EACCES, …).
    ConnectError(i32),
    /// TCP connect refused (RST in SYN_SENT).
    TcpRefused,
    /// TCP connect abandoned in SYN_SENT (proxy_connect_timeout).
    ConnectTimeout,
    /// An established TCP connection reset before the first request (nginx: "connect() failed
    /// (104: Connection reset by peer)"): a full accept queue with tcp_abort_on_overflow = 1.
    ConnectReset,
    /// The upstream closed while a request was outstanding.
    Premature,
    /// Request sent on a reused connection the upstream had closed.
    KeepaliveRace,
    /// nginx closed the upstream connection with a request outstanding (read/send timeout).
    ProxyAbort,
}

impl CauseKind {
    /// The status nginx answers with for this cause.
    pub fn status(self) -> u16 {
        match self {
            CauseKind::ConnectTimeout | CauseKind::ProxyAbort => 504,
            _ => 502,
        }
    }

    /// The name in every output: the words nginx's error log uses for the same failure
    /// (`connect_eagain`, `connect_refused`, `premature_close`, …).
    pub fn name(self) -> String {
        match self {
            CauseKind::ConnectError(e) => format!("connect_{}", errno::name(e).to_ascii_lowercase()),
            CauseKind::TcpRefused => "connect_refused".into(),
            CauseKind::ConnectTimeout => "connect_timeout".into(),
            CauseKind::ConnectReset => "connect_reset".into(),
            CauseKind::Premature => "premature_close".into(),
            CauseKind::KeepaliveRace => "keepalive_race".into(),
            CauseKind::ProxyAbort => "proxy_abort".into(),
        }
    }
}

impl Serialize for CauseKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cause {
    pub ts_ns: u64,
    /// The nginx worker.
    pub pid: u32,
    pub kind: CauseKind,
    pub target: Option<Target>,
    /// Request age at the close (premature, race, abort) or connect duration.
    pub age_ns: u64,
    /// Idle time before reuse (races).
    pub idle_ns: u64,
}

#[cfg(test)]
mod tests {
    use super::CauseKind;

    #[test]
    fn names_follow_nginx_error_log_words() {
        assert_eq!(CauseKind::ConnectError(libc::EAGAIN).name(), "connect_eagain");
        assert_eq!(CauseKind::ConnectError(9999).name(), "connect_e9999");
        assert_eq!(CauseKind::Premature.name(), "premature_close");
        assert_eq!(serde_json::to_string(&CauseKind::ProxyAbort).unwrap(), "\"proxy_abort\"");
    }
}
