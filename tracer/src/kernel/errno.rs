//! Names and meanings of the connect() errors that matter in front of an upstream, and the names
//! of the signals that end workers.

/// (errno, name, what it means for an upstream)
const KNOWN: &[(i32, &str, &str)] = &[
    (libc::EAGAIN, "EAGAIN", "listen queue full"),
    (libc::ENOENT, "ENOENT", "socket file missing: app server down?"),
    (libc::EACCES, "EACCES", "permission denied on the socket file"),
    (libc::ECONNREFUSED, "ECONNREFUSED", "nothing listening"),
    (libc::ETIMEDOUT, "ETIMEDOUT", "connect timed out"),
    (libc::EHOSTUNREACH, "EHOSTUNREACH", "host unreachable"),
    (libc::ENETUNREACH, "ENETUNREACH", "network unreachable"),
    (libc::EADDRNOTAVAIL, "EADDRNOTAVAIL", "no free local port (ephemeral ports exhausted)"),
    (libc::ECONNRESET, "ECONNRESET", "connection reset"),
    (libc::EPERM, "EPERM", "blocked (firewall or LSM)"),
    (libc::EINPROGRESS, "EINPROGRESS", "non-blocking connect in progress"),
    (libc::EALREADY, "EALREADY", "connect already in progress"),
    (libc::EISCONN, "EISCONN", "already connected"),
    (libc::EINTR, "EINTR", "interrupted by a signal"),
    (libc::EPROTOTYPE, "EPROTOTYPE", "socket type mismatch"),
    (libc::EBADF, "EBADF", "bad file descriptor"),
    (libc::ENOTDIR, "ENOTDIR", "a directory on the socket path is a file"),
    (libc::ENAMETOOLONG, "ENAMETOOLONG", "socket path too long"),
    (libc::ENOTSOCK, "ENOTSOCK", "not a socket"),
    (libc::ENETDOWN, "ENETDOWN", "network is down"),
];

/// `EAGAIN`, or `E<n>` for one we do not name.
pub fn name(errno: i32) -> String {
    KNOWN.iter().find(|k| k.0 == errno).map_or_else(|| format!("E{errno}"), |k| k.1.to_string())
}

pub fn meaning(errno: i32) -> &'static str {
    KNOWN.iter().find(|k| k.0 == errno).map_or("", |k| k.2)
}

/// Results of a connect() that are not failures of the connection attempt.
pub fn is_in_progress(errno: i32) -> bool {
    errno == libc::EINPROGRESS || errno == libc::EALREADY || errno == libc::EISCONN
}

/// `SIGKILL`, or `SIG?` for one we do not name.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        6 => "SIGABRT",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        15 => "SIGTERM",
        _ => "SIG?",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        assert_eq!(super::name(11), "EAGAIN");
        assert_eq!(super::name(2), "ENOENT");
        assert_eq!(super::name(9999), "E9999");
        assert_eq!(super::meaning(11), "listen queue full");
    }
}
