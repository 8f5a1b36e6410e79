//! Kernel constants the probe families share (address families, protocols, errnos).
pub const AF_UNIX: u16 = 1;
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const IPPROTO_TCP: u16 = 6;
pub const EPIPE: i32 = 32;
pub const ECONNRESET: i32 = 104;
