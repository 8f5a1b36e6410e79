//! Reading the status nginx answers from the bytes it hands to the kernel (writev) or to its TLS
//! library (`SSL_write*`, before encryption): the HTTP/1.x status line, or the `:status` of an
//! HTTP/2 HEADERS frame. Pure functions on fixed-size windows, so the kernel programs call them
//! on what they read (no loops, no variable indexing: verifier-friendly) and the host tests them.

use crate::codes;
use crate::offsets::http2;

codes! {
    /// Where a status was seen ([`crate::StatusEvent::source`]).
    pub enum StatusSource: u16 {
        /// The plaintext HTTP/1.x status line in nginx's writev() on the client socket.
        KernelWritev = 0 => "kernel_writev",
        /// An HTTP/1.x status line in the plaintext nginx handed to `SSL_write`/`SSL_write_ex`.
        TlsHttp1 = 1 => "tls_uprobe_http1",
        /// The `:status` of an HTTP/2 HEADERS frame in the plaintext handed to `SSL_write*`.
        TlsHttp2 = 2 => "tls_uprobe_http2",
    }
}

/// Bytes of a buffer's start [`http1_status`] looks at: `HTTP/1.1 502`.
pub const HTTP1_LINE: usize = 12;

/// The status of an HTTP/1.x status line at the start of `line` when it is 5xx.
#[inline(always)]
pub fn http1_status(line: &[u8; HTTP1_LINE]) -> Option<u16> {
    let digit = |b: u8| b.is_ascii_digit();
    if &line[..7] != b"HTTP/1." || line[8] != b' ' || line[9] != b'5' || !digit(line[10]) || !digit(line[11]) {
        return None;
    }
    Some(500 + (line[10] - b'0') as u16 * 10 + (line[11] - b'0') as u16)
}

/// An HTTP/2 frame header (RFC 9113 §4.1): 24-bit length, type, flags, stream id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload bytes after the 9-byte header.
    pub len: u32,
    pub ty: u8,
    pub flags: u8,
    pub stream: u32,
}

impl FrameHeader {
    #[inline(always)]
    pub fn parse(b: &[u8; http2::FRAME_HEADER]) -> FrameHeader {
        FrameHeader {
            len: (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32,
            ty: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5] & 0x7f, b[6], b[7], b[8]]),
        }
    }

    /// A frame type this side of RFC 9113 knows (0–9): anything else means the buffer does not
    /// start at a frame boundary (the rest of a frame split across two writes), so the walk stops.
    #[inline(always)]
    pub fn plausible(&self) -> bool {
        self.ty <= http2::MAX_KNOWN_TYPE
    }

    /// A HEADERS frame whose header block starts right after the frame header (no padding, no
    /// priority fields: nginx sends neither) and can hold a `:status`.
    #[inline(always)]
    pub fn is_plain_headers(&self) -> bool {
        self.ty == http2::TYPE_HEADERS && self.flags & (http2::FLAG_PADDED | http2::FLAG_PRIORITY) == 0 && self.len >= 1
    }
}

/// The `:status` of a HEADERS frame's header block when it is 5xx, from the block's first
/// [`http2::BLOCK_PREFIX`] bytes (zero beyond the frame). nginx writes `:status` first: a static
/// table index for 200/204/206/304/400/404/500 (`0x88`–`0x8e`; 500 = `0x8e`), otherwise a literal
/// with the indexed name 8 (`0x48 0x03 '5' '0' '2'`), possibly after one dynamic table size
/// update (`0x20`–`0x3f`, its integer continued in bytes with the top bit set when ≥ 31).
#[inline(always)]
pub fn hpack_status(b: &[u8; http2::BLOCK_PREFIX]) -> Option<u16> {
    if b[0] & 0xe0 != 0x20 {
        return status_at::<0>(b);
    }
    // A dynamic table size update: 5-bit prefix, then continuation bytes while the top bit is set.
    if b[0] != 0x3f {
        status_at::<1>(b)
    } else if b[1] & 0x80 == 0 {
        status_at::<2>(b)
    } else if b[2] & 0x80 == 0 {
        status_at::<3>(b)
    } else if b[3] & 0x80 == 0 {
        status_at::<4>(b)
    } else {
        None
    }
}

#[inline(always)]
fn status_at<const I: usize>(b: &[u8; http2::BLOCK_PREFIX]) -> Option<u16> {
    let first = b[I];
    if first == http2::INDEXED_500 {
        return Some(500);
    }
    // `:status` (static index 8) as a literal: with incremental indexing (0x48), without (0x08)
    // or never indexed (0x18); a 3-byte raw (not Huffman) value.
    let literal = first == 0x48 || first == 0x08 || first == 0x18;
    let digit = |x: u8| x.is_ascii_digit();
    if !literal || b[I + 1] != 3 || b[I + 2] != b'5' || !digit(b[I + 3]) || !digit(b[I + 4]) {
        return None;
    }
    Some(500 + (b[I + 3] - b'0') as u16 * 10 + (b[I + 4] - b'0') as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::assert_table;

    #[test]
    fn sources_keep_their_values_and_names() {
        assert_table::<StatusSource>(&[(0, "kernel_writev"), (1, "tls_uprobe_http1"), (2, "tls_uprobe_http2")]);
    }

    #[test]
    fn http1_status_lines() {
        assert_eq!(http1_status(b"HTTP/1.1 502"), Some(502));
        assert_eq!(http1_status(b"HTTP/1.0 504"), Some(504));
        assert_eq!(http1_status(b"HTTP/1.1 200"), None);
        assert_eq!(http1_status(b"HTTP/2.0 502"), None);
        assert_eq!(http1_status(b"HTTP/1.1 5x2"), None);
    }

    fn block(bytes: &[u8]) -> [u8; http2::BLOCK_PREFIX] {
        let mut b = [0; http2::BLOCK_PREFIX];
        b[..bytes.len()].copy_from_slice(bytes);
        b
    }

    #[test]
    fn hpack_status_as_nginx_writes_it() {
        assert_eq!(hpack_status(&block(b"\x48\x03502\x76")), Some(502));
        assert_eq!(hpack_status(&block(b"\x20\x48\x03504")), Some(504), "after a table size update to 0");
        assert_eq!(hpack_status(&block(b"\x3f\xe1\x1f\x48\x03502")), Some(502), "after a size update to 4096");
        assert_eq!(hpack_status(&block(b"\x8e\x76")), Some(500));
        assert_eq!(hpack_status(&block(b"\x20\x8e")), Some(500));
        assert_eq!(hpack_status(&block(b"\x08\x03503")), Some(503));
        for ok in [0x88u8, 0x89, 0x8a, 0x8b, 0x8c, 0x8d] {
            assert_eq!(hpack_status(&block(&[ok, 0x76])), None, "{ok:#x}");
        }
        assert_eq!(hpack_status(&block(b"\x48\x03429")), None);
        assert_eq!(hpack_status(&block(b"\x48\x8250")), None, "a Huffman value is not read");
        assert_eq!(hpack_status(&block(b"\x3f\xe1\xff\xff\x48")), None, "size update too long");
    }

    #[test]
    fn frame_headers() {
        let h = FrameHeader::parse(&[0, 0, 0x2a, 1, 4, 0x80, 0, 0, 3]);
        assert_eq!(h, FrameHeader { len: 42, ty: 1, flags: 4, stream: 3 });
        assert!(h.plausible() && h.is_plain_headers());
        let padded = FrameHeader::parse(&[0, 0, 0x2a, 1, 0x0c, 0, 0, 0, 3]);
        assert!(!padded.is_plain_headers());
        assert!(!FrameHeader::parse(&[0, 1, 0, 0x48, 0, 0, 0, 0, 1]).plausible());
    }
}
