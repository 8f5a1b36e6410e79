//! The 5xx nginx answers over TLS, from a uprobe on the TLS library's `SSL_write` /
//! `SSL_write_ex` (the loader finds the library in the traced processes' `/proc/PID/maps`).
//!
//! Why: with TLS the status line in writev() is ciphertext; the plaintext is only visible where
//! nginx hands it to OpenSSL. HTTP/1.x: `HTTP/1.1 502` at the start of the buffer. HTTP/2: the
//! buffer is a run of frames (nginx coalesces its output queue into one write of at most 16 KiB);
//! up to `MAX_FRAMES` frame headers are walked and each HEADERS frame whose `:status` is 5xx is one
//! event, so each stream's 502 is counted once even with many streams on one connection. The fd
//! is not an argument: events carry fd -1 (the join is by worker pid and time).
//!
//! Limits: a write that does not start at a frame boundary (the rest of a frame larger than the
//! previous write) stops the walk at the first implausible frame header; a write the library
//! refused (WANT_WRITE) and nginx repeats is read again. Neither happens with nginx's small 5xx
//! responses on an unblocked socket.
//!
//! When absent (no TLS library mapped at start, or the symbol missing, e.g. a stripped static
//! build): userspace takes TLS 5xx from nginx's error and access logs; HTTP/3 (QUIC) is never seen
//! here.

use aya_ebpf::{helpers::bpf_probe_read_user_buf, macros::uprobe, programs::ProbeContext};
use tracer_common::offsets::{http2, ssl_write};
use tracer_common::status::{self, FrameHeader, StatusSource, HTTP1_LINE};
use tracer_common::{Kind, StatusEvent};

use crate::maps::{header, output, preamble};

/// SSL_write(ssl, buf, num) / SSL_write_ex(ssl, buf, num, written) of a traced thread.
#[uprobe]
pub fn tls_status(ctx: ProbeContext) -> u32 {
    let id = preamble!(traced);
    let (Some(buf), Some(num)) = (ctx.arg::<u64>(ssl_write::BUF), ctx.arg::<u64>(ssl_write::NUM)) else { return 0 };
    // SSL_write's `int num`: the upper half of the register is not defined.
    let num = num & 0x7fff_ffff;
    if buf == 0 || num < http2::FRAME_HEADER as u64 {
        return 0;
    }
    let emit = |status: u16, source: StatusSource| {
        output(&StatusEvent { hdr: header(Kind::Status, id), fd: -1, status, source: source as u16 });
    };
    if num >= HTTP1_LINE as u64 {
        let mut line = [0u8; HTTP1_LINE];
        if unsafe { bpf_probe_read_user_buf(buf as *const u8, &mut line) }.is_err() {
            return 0;
        }
        if &line[..5] == b"HTTP/" {
            if let Some(s) = status::http1_status(&line) {
                emit(s, StatusSource::TlsHttp1);
            }
            return 0;
        }
    }
    let mut off: u64 = 0;
    for _ in 0..http2::MAX_FRAMES {
        if off + http2::FRAME_HEADER as u64 > num {
            break;
        }
        let mut fh = [0u8; http2::FRAME_HEADER];
        if unsafe { bpf_probe_read_user_buf((buf + off) as *const u8, &mut fh) }.is_err() {
            break;
        }
        let frame = FrameHeader::parse(&fh);
        if !frame.plausible() {
            break;
        }
        let block = off + http2::FRAME_HEADER as u64;
        if frame.is_plain_headers() && block + frame.len as u64 <= num {
            let mut b = [0u8; http2::BLOCK_PREFIX];
            // Reading past a short frame is harmless (within the buffer, or the read fails);
            // bytes beyond the frame are cleared so they cannot match.
            if unsafe { bpf_probe_read_user_buf((buf + block) as *const u8, &mut b) }.is_ok() {
                let b = clear_beyond(b, frame.len);
                if let Some(s) = status::hpack_status(&b) {
                    emit(s, StatusSource::TlsHttp2);
                }
            }
        }
        off = block + frame.len as u64;
    }
    0
}

/// Zero the bytes of `b` at or after `len` (a header block shorter than the window).
#[inline(always)]
fn clear_beyond(mut b: [u8; http2::BLOCK_PREFIX], len: u32) -> [u8; http2::BLOCK_PREFIX] {
    if len < http2::BLOCK_PREFIX as u32 {
        for (i, x) in b.iter_mut().enumerate() {
            if i as u32 >= len {
                *x = 0;
            }
        }
    }
    b
}
