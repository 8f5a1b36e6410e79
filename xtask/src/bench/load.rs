//! Loopback load generators that run as threads of this process, so the tracer can pick them out
//! by thread name (`--comm`, which the kernel compares per thread). Everything is bounded by a
//! deadline and a count, and sockets carry receive timeouts so a stuck peer cannot hang a thread.
//!
//! Request tracking only follows sockets a traced task connect()ed, so the client side always
//! connect()s to a unix listener (a socketpair would be invisible to it).

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Thread name of the ping-pong clients (the traced side).
pub const CLIENT_COMM: &str = "bench-client";
const SERVER_COMM: &str = "bench-server";
/// Thread name of the connection holder (traced in the memory phase).
pub const CONNS_COMM: &str = "bench-conns";

/// Bytes kept in flight per connection: the client rarely finds its socket empty, so it runs
/// recv, send, recv, send … without sleeping, and every recv→send turn is one state change (one
/// ring-buffer record: the previous "response" is complete) for the tracer.
const WINDOW: usize = 16;
const IO_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, Default)]
pub struct PingPong {
    /// Client recv→send turns (one tracer record each).
    pub turns: u64,
    /// send + recv calls of the clients (socket events the kernel programs handled in full).
    pub socket_calls: u64,
    pub elapsed: Duration,
}

/// `pairs` client threads, each connect()ed to an echo thread over a unix socket at `path`,
/// turning as fast as they can (or at `rate` turns/s in total) for `duration`.
pub fn ping_pong(path: &Path, pairs: usize, duration: Duration, rate: Option<u64>) -> Result<PingPong> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).with_context(|| format!("bind {}", path.display()))?;
    set_rcvtimeo(&listener, IO_TIMEOUT);
    let server = std::thread::Builder::new().name(SERVER_COMM.into()).spawn(move || -> Result<()> {
        let mut echoes = Vec::new();
        for _ in 0..pairs {
            let (s, _) = listener.accept().context("accept")?;
            echoes.push(std::thread::Builder::new().name(SERVER_COMM.into()).spawn(move || echo(s))?);
        }
        for e in echoes {
            let _ = e.join();
        }
        Ok(())
    })?;
    let per_client = rate.map(|r| (r / pairs as u64).max(1));
    let start = Instant::now();
    let clients: Vec<JoinHandle<Result<(u64, u64)>>> = (0..pairs)
        .map(|_| {
            let path = path.to_path_buf();
            std::thread::Builder::new()
                .name(CLIENT_COMM.into())
                .spawn(move || client(&path, duration, per_client))
                .map_err(anyhow::Error::from)
        })
        .collect::<Result<_>>()?;
    let mut out = PingPong::default();
    for c in clients {
        let (turns, calls) = c.join().map_err(|_| anyhow::anyhow!("client thread panicked"))??;
        out.turns += turns;
        out.socket_calls += calls;
    }
    out.elapsed = start.elapsed();
    server.join().map_err(|_| anyhow::anyhow!("server thread panicked"))??;
    let _ = std::fs::remove_file(path);
    Ok(out)
}

fn echo(mut s: UnixStream) {
    let _ = s.set_read_timeout(Some(IO_TIMEOUT));
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 || s.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

/// Returns (turns, send+recv calls).
fn client(path: &Path, duration: Duration, rate: Option<u64>) -> Result<(u64, u64)> {
    let mut s = UnixStream::connect(path).context("connect")?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut buf = [0u8; WINDOW];
    s.write_all(&buf)?;
    let start = Instant::now();
    let (mut turns, mut calls) = (0u64, 1u64);
    // Bounded by time; the count bound is a backstop far above anything 2 vCPUs reach.
    while turns < 1_000_000_000 {
        if turns % 64 == 0 {
            let t = start.elapsed();
            if t >= duration {
                break;
            }
            if let Some(r) = rate {
                // Ahead of the offered rate: sleep until the schedule catches up.
                let due = Duration::from_secs_f64(turns as f64 / r as f64);
                if due > t {
                    std::thread::sleep(due - t);
                }
            }
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            bail!("echo server closed the connection");
        }
        s.write_all(&buf[..n])?;
        turns += 1;
        calls += 2;
    }
    Ok((turns, calls))
}

/// `n` idle unix connections, each connect()ed by a thread named [`CONNS_COMM`] and carried
/// through one request/response (so the tracer follows it), held until dropped.
pub struct HeldConnections {
    pub clients: Vec<UnixStream>,
    _servers: Vec<UnixStream>,
}

pub fn hold_connections(path: &Path, n: usize, deadline: Duration) -> Result<HeldConnections> {
    raise_nofile(2 * n as u64 + 1024)?;
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).with_context(|| format!("bind {}", path.display()))?;
    set_rcvtimeo(&listener, IO_TIMEOUT);
    let server = std::thread::Builder::new().name(SERVER_COMM.into()).spawn(move || -> Result<Vec<UnixStream>> {
        let mut held = Vec::with_capacity(n);
        let mut b = [0u8; 1];
        for _ in 0..n {
            let (mut s, _) = listener.accept().context("accept")?;
            s.set_read_timeout(Some(IO_TIMEOUT))?;
            s.read_exact(&mut b)?;
            s.write_all(&b)?;
            held.push(s);
        }
        Ok(held)
    })?;
    let p = path.to_path_buf();
    let client = std::thread::Builder::new().name(CONNS_COMM.into()).spawn(move || -> Result<Vec<UnixStream>> {
        let end = Instant::now() + deadline;
        let mut held = Vec::with_capacity(n);
        let mut b = [1u8; 1];
        for i in 0..n {
            if Instant::now() > end {
                bail!("opened only {i} of {n} connections within {deadline:?}");
            }
            let mut s = UnixStream::connect(&p).with_context(|| format!("connection {i}"))?;
            s.set_read_timeout(Some(IO_TIMEOUT))?;
            s.write_all(&b)?;
            s.read_exact(&mut b)?;
            held.push(s);
        }
        Ok(held)
    })?;
    let clients = client.join().map_err(|_| anyhow::anyhow!("connection thread panicked"))?;
    let servers = server.join().map_err(|_| anyhow::anyhow!("accept thread panicked"))?;
    let _ = std::fs::remove_file(path);
    Ok(HeldConnections { clients: clients?, _servers: servers? })
}

impl HeldConnections {
    /// Close the client sides from a thread named [`CONNS_COMM`], so the tracer sees each close.
    pub fn close_traced(self) -> Result<()> {
        let HeldConnections { clients, _servers } = self;
        std::thread::Builder::new()
            .name(CONNS_COMM.into())
            .spawn(move || drop(clients))?
            .join()
            .map_err(|_| anyhow::anyhow!("close thread panicked"))?;
        drop(_servers);
        Ok(())
    }
}

/// A receive timeout on a listener also bounds accept().
fn set_rcvtimeo(l: &UnixListener, t: Duration) {
    use std::os::fd::AsRawFd;
    let tv = libc::timeval { tv_sec: t.as_secs() as libc::time_t, tv_usec: t.subsec_micros() as libc::suseconds_t };
    // SAFETY: a plain setsockopt on a socket we own, with a correctly sized timeval.
    unsafe {
        libc::setsockopt(
            l.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
}

/// 100 k connections are 200 k fds in this process (both ends).
fn raise_nofile(want: u64) -> Result<()> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: get/setrlimit with a valid struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        if r.rlim_cur >= want {
            return Ok(());
        }
        let n = libc::rlimit { rlim_cur: want, rlim_max: want.max(r.rlim_max) };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &n) != 0 {
            bail!("cannot raise RLIMIT_NOFILE to {want}: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}
