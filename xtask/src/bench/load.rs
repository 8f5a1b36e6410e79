//! The synthetic loopback load: threads of this process, so the tracer can pick the clients out
//! by thread name (`--comm`, which the kernel compares per thread). Bounded by a deadline and a
//! count; sockets carry receive timeouts so a stuck peer cannot hang a thread.
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

/// Bytes kept in flight per connection, read back CHUNK bytes at a time: the client almost never
/// finds its socket empty, so it runs recv, send, recv, send … without sleeping or waiting for a
/// wake-up from the other CPU, and every recv→send turn is one state change (one ring-buffer
/// record: the previous "response" is complete) for the tracer.
const WINDOW: usize = 4096;
const CHUNK: usize = 16;
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
            std::thread::Builder::new().name(CLIENT_COMM.into()).spawn(move || client(&path, duration, per_client)).map_err(anyhow::Error::from)
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
    let mut buf = [0u8; 65536];
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
    s.write_all(&[0u8; WINDOW])?;
    let mut buf = [0u8; CHUNK];
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
