//! The listener behind an upstream target, from sock_diag netlink (unix_diag with
//! UDIAG_SHOW_RQLEN, inet_diag for TCP): queue length now, effective maximum, inode; and who owns
//! it (the processes holding the socket, from /proc/*/fd) and net.core.somaxconn.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::ffi::OsStrExt;

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_sock_diag::{
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{self, ExtensionFlags, InetRequest, SocketId},
    unix::{
        self,
        nlas::{Nla as UnixNla, UnixDiagName},
        ShowFlags, UnixRequest,
    },
    SockDiagMessage,
};
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr as NlAddr};
use serde::{Deserialize, Serialize};

use crate::kernel::sockaddr::Target;

#[derive(Debug, thiserror::Error)]
pub enum DiagError {
    #[error("sock_diag netlink: {0}")]
    Io(#[from] std::io::Error),
    #[error("sock_diag netlink: bad reply: {0}")]
    Decode(String),
    #[error("sock_diag netlink: kernel answered error {0}")]
    Kernel(i32),
}

/// A listening socket as sock_diag reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    pub inode: u32,
    /// Connections waiting to be accepted now.
    pub queue_len: u32,
    /// The effective backlog: min(listen() argument, somaxconn). A unix listener refuses new
    /// connections (EAGAIN) once `queue_len` exceeds this, so it holds `queue_max + 1` at most.
    pub queue_max: u32,
}

/// Send one dump request and collect every reply message.
fn dump(request: SockDiagMessage) -> Result<Vec<SockDiagMessage>, DiagError> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&NlAddr::new(0, 0))?;
    let mut hdr = NetlinkHeader::default();
    hdr.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut packet = NetlinkMessage::new(hdr, request.into());
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0)?;

    let mut out = Vec::new();
    let mut rx = vec![0u8; 64 * 1024];
    loop {
        let n = socket.recv(&mut &mut rx[..], 0)?;
        let mut off = 0;
        while off < n {
            let msg = NetlinkMessage::<SockDiagMessage>::deserialize(&rx[off..n]).map_err(|e| DiagError::Decode(e.to_string()))?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => {
                    return Err(DiagError::Kernel(e.code.map_or(0, |c| c.get())));
                }
                NetlinkPayload::InnerMessage(m) => out.push(m),
                _ => {}
            }
            if len == 0 {
                break;
            }
            off += (len + 3) & !3;
        }
    }
}

/// The unix listener bound to `target` (path or abstract name), if any.
pub fn unix_listener(target: &Target) -> Result<Option<Listener>, DiagError> {
    let replies = dump(SockDiagMessage::UnixRequest(UnixRequest {
        state_flags: unix::StateFlags::LISTEN,
        inode: 0,
        show_flags: ShowFlags::NAME | ShowFlags::RQLEN,
        cookie: [0xff; 8],
    }))?;
    for m in replies {
        let SockDiagMessage::UnixResponse(r) = m else { continue };
        let same = match (r.name(), target) {
            (Some(UnixDiagName::Pathname(p)), Target::UnixPath(want)) => p.as_bytes() == want.as_slice(),
            (Some(UnixDiagName::Abstract(n)), Target::UnixAbstract(want)) => n == want,
            _ => false,
        };
        if !same {
            continue;
        }
        let (queue_len, queue_max) =
            r.nlas.iter().find_map(|n| if let UnixNla::ReceiveQueueLength(a, b) = n { Some((*a, *b)) } else { None }).unwrap_or((0, 0));
        return Ok(Some(Listener { inode: r.header.inode, queue_len, queue_max }));
    }
    Ok(None)
}

/// Every TCP listener of one family, with its bound address.
fn tcp_listeners(v6: bool) -> Result<Vec<(SocketAddr, Listener)>, DiagError> {
    let replies = dump(SockDiagMessage::InetRequest(InetRequest {
        family: if v6 { AF_INET6 } else { AF_INET },
        protocol: IPPROTO_TCP,
        extensions: ExtensionFlags::empty(),
        states: inet::StateFlags::LISTEN,
        socket_id: if v6 { SocketId::new_v6() } else { SocketId::new_v4() },
    }))?;
    Ok(replies
        .into_iter()
        .filter_map(|m| match m {
            SockDiagMessage::InetResponse(r) => {
                let h = &r.header;
                let addr = SocketAddr::new(h.socket_id.source_address, h.socket_id.source_port);
                Some((addr, Listener { inode: h.inode, queue_len: h.recv_queue, queue_max: h.send_queue }))
            }
            _ => None,
        })
        .collect())
}

/// The TCP listener that accepts connections to `addr` (an exact bind, else a wildcard one),
/// with the address it is bound to.
pub fn tcp_listener_bound(addr: SocketAddr) -> Result<Option<(SocketAddr, Listener)>, DiagError> {
    let addr = normalize(addr);
    let mut wildcard = None;
    for (bound, l) in tcp_listeners(addr.is_ipv6())? {
        if bound.port() != addr.port() {
            continue;
        }
        if bound.ip() == addr.ip() {
            return Ok(Some((bound, l)));
        }
        if bound.ip().is_unspecified() {
            wildcard = Some((bound, l));
        }
    }
    Ok(wildcard)
}

pub fn tcp_listener(addr: SocketAddr) -> Result<Option<Listener>, DiagError> {
    Ok(tcp_listener_bound(addr)?.map(|(_, l)| l))
}

/// Look up the listener for any target kind.
pub fn listener_for(target: &Target) -> Result<Option<Listener>, DiagError> {
    match target {
        Target::UnixPath(_) | Target::UnixAbstract(_) => unix_listener(target),
        Target::Inet(a) => tcp_listener(*a),
        _ => Ok(None),
    }
}

/// An IPv4-mapped IPv6 target is served by an IPv4 (or dual-stack) listener.
fn normalize(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => a,
        },
        IpAddr::V4(_) => a,
    }
}

/// A process holding a socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub pid: u32,
    pub comm: String,
    /// Other processes holding the same socket (e.g. a pre-fork server's workers).
    pub sharers: u32,
}

/// Which process owns the socket with `inode`: of all processes holding it, the one whose parent
/// does not (the master of a pre-fork server). Reads every fd link of every process: on a host
/// with many sockets, prefer `owner_of_listener`.
pub fn owner_of(inode: u32) -> Option<Owner> {
    let link = socket_link(inode);
    let mut holders = HashSet::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if holds(pid, &link) {
            holders.insert(pid);
        }
    }
    let parents: HashMap<u32, u32> = holders.iter().map(|&p| (p, ppid(p).unwrap_or(0))).collect();
    let root = *holders.iter().filter(|p| !holders.contains(&parents[p])).min()?;
    Some(Owner { pid: root, comm: process_comm(root), sharers: holders.len() as u32 - 1 })
}

/// `owner_of` for a socket the tracer saw `pid` call listen() on as `fd`: only that process's
/// ancestors and descendants are read (a pre-fork server's master and workers), not every fd on
/// the host — with 100 k sockets open that scan took long enough to overflow the ring buffer.
/// Holders outside that family (a socket passed over SCM_RIGHTS) are not counted as sharers.
/// Falls back to the full scan when `pid` no longer has the socket at `fd`.
pub fn owner_of_listener(inode: u32, pid: u32, fd: i32) -> Option<Owner> {
    if socket_inode(pid, fd) != Some(inode) {
        return owner_of(inode);
    }
    let link = socket_link(inode);
    let mut root = pid;
    while let Some(parent) = ppid(root).filter(|&p| p > 0 && holds(p, &link)) {
        root = parent;
    }
    let mut sharers = 0;
    let mut seen = HashSet::from([root]);
    let mut todo = children(root);
    while let Some(p) = todo.pop() {
        if !seen.insert(p) {
            continue;
        }
        if holds(p, &link) {
            sharers += 1;
        }
        todo.extend(children(p));
    }
    Some(Owner { pid: root, comm: process_comm(root), sharers })
}

fn socket_link(inode: u32) -> String {
    format!("socket:[{inode}]")
}

/// Does `pid` have an fd on the socket `link` ("socket:[inode]")? Stops at the first match.
fn holds(pid: u32, link: &str) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    fds.flatten().any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str().as_bytes() == link.as_bytes()))
}

/// The socket inode behind `fd` of process `pid`.
pub fn socket_inode(pid: u32, fd: i32) -> Option<u32> {
    let l = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let s = l.to_str()?;
    s.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

pub fn ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised comm (which may itself contain spaces or ')').
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(1)?.parse().ok()
}

pub fn process_comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).map(|s| s.trim_end().to_string()).unwrap_or_default()
}

/// Children of `pid` (all threads' children lists).
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
            }
        }
    }
    out
}

/// net.core.somaxconn of the tracer's network namespace.
pub fn somaxconn() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn").ok()?.trim().parse().ok()
}

/// A sysctl under /proc/sys (`name` like `net/ipv4/tcp_abort_on_overflow`) as seen from the
/// network namespace of `pid` (network sysctls are per namespace). When `pid` lives in another
/// namespace than the tracer, a short-lived thread joins it (setns; needs CAP_SYS_ADMIN) to read
/// the value; when that fails, None (never the tracer's own value in its place).
pub fn netns_sysctl(pid: Option<u32>, name: &str) -> Option<u32> {
    let path = format!("/proc/sys/{name}");
    let read = |p: &str| std::fs::read_to_string(p).ok()?.trim().parse().ok();
    let Some(pid) = pid else { return read(&path) };
    let ns = |p: &str| std::fs::metadata(p).ok().map(|m| std::os::unix::fs::MetadataExt::ino(&m));
    let theirs = ns(&format!("/proc/{pid}/ns/net"))?;
    if ns("/proc/self/ns/net") == Some(theirs) {
        return read(&path);
    }
    let ns_path = format!("/proc/{pid}/ns/net");
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(&ns_path).ok()?;
        // SAFETY: setns on an fd we own, in this thread only (it ends right after the read).
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return None;
        }
        std::fs::read_to_string(&path).ok()?.trim().parse().ok()
    })
    .join()
    .ok()
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sysctl_of_our_own_netns_is_read_directly() {
        let ours = netns_sysctl(None, "net/ipv4/tcp_abort_on_overflow");
        assert!(ours.is_some());
        assert_eq!(netns_sysctl(Some(std::process::id()), "net/ipv4/tcp_abort_on_overflow"), ours);
        assert_eq!(netns_sysctl(Some(u32::MAX), "net/ipv4/tcp_abort_on_overflow"), None, "no such process: unknown, not ours");
    }

    /// A unix listener with an exact backlog (std picks its own).
    fn unix_listen(path: &std::path::Path, backlog: i32) -> std::os::fd::OwnedFd {
        use std::os::fd::FromRawFd;
        // SAFETY: plain socket syscalls on a zeroed sockaddr_un; the fd is owned by the result.
        unsafe {
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            assert!(fd >= 0);
            let mut a: libc::sockaddr_un = std::mem::zeroed();
            a.sun_family = libc::AF_UNIX as u16;
            for (d, s) in a.sun_path.iter_mut().zip(path.as_os_str().as_bytes()) {
                *d = *s as libc::c_char;
            }
            let len = std::mem::size_of::<libc::sockaddr_un>() as u32;
            assert_eq!(libc::bind(fd, &a as *const _ as *const libc::sockaddr, len), 0);
            assert_eq!(libc::listen(fd, backlog), 0);
            std::os::fd::OwnedFd::from_raw_fd(fd)
        }
    }

    /// Real kernel, no privileges needed: a unix listener we create is found with its backlog.
    #[test]
    fn finds_own_unix_listener_queue_and_owner() {
        let dir = std::env::temp_dir().join(format!("tracer-diag-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("l.sock");
        let _ = std::fs::remove_file(&path);
        let l = unix_listen(&path, 7);
        let t = Target::UnixPath(path.as_os_str().as_bytes().to_vec());
        let got = unix_listener(&t).unwrap().expect("listener found");
        assert_eq!((got.queue_len, got.queue_max), (0, 7));
        let _c = std::os::unix::net::UnixStream::connect(&path).unwrap();
        assert_eq!(unix_listener(&t).unwrap().unwrap().queue_len, 1);
        let owner = owner_of(got.inode).unwrap();
        assert_eq!(owner.pid, std::process::id());
        assert_eq!(socket_inode(std::process::id(), std::os::fd::AsRawFd::as_raw_fd(&l)), Some(got.inode));
        drop(l);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A pre-fork server in miniature: this process listens, a child inherits the socket. The
    /// lookup that starts from the listen() caller agrees with the full /proc scan.
    #[test]
    fn owner_from_the_listen_caller_matches_the_full_scan() {
        use std::os::fd::AsRawFd;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = l.as_raw_fd();
        let inode = socket_inode(std::process::id(), fd).unwrap();
        // SAFETY: clears FD_CLOEXEC on a valid fd so the child inherits it.
        assert_eq!(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }, 0);
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        // SAFETY: as above, restores FD_CLOEXEC.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        let full = owner_of(inode).unwrap();
        let near = owner_of_listener(inode, std::process::id(), fd).unwrap();
        let wrong_fd = owner_of_listener(inode, std::process::id(), fd + 1000).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(full.pid, std::process::id());
        // ≥: a child another test spawns in that instant inherits the fd too.
        assert!(full.sharers >= 1, "the child holds it too: {full:?}");
        assert_eq!(near, full);
        assert_eq!(wrong_fd, full, "a stale (pid, fd) falls back to the scan");
    }

    #[test]
    fn finds_own_tcp_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let got = tcp_listener(l.local_addr().unwrap()).unwrap().expect("listener found");
        assert!(got.queue_max > 0 && got.queue_max <= somaxconn().unwrap());
        assert_eq!(socket_inode(std::process::id(), std::os::fd::AsRawFd::as_raw_fd(&l)), Some(got.inode));
    }
}
