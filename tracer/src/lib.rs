//! upstream-tracer: the userspace collector. The data path reads in module order:
//! `load` (attach kernel programs) → `source` (ring buffer → `events`) → `collector` (per-target and
//! per-connection state; `listeners` samples sock_diag) → `output` (terminal, JSON lines).

pub mod cli;
pub mod collector;
pub mod errno;
pub mod events;
pub mod listeners;
pub mod load;
pub mod netstat;
pub mod output;
pub mod sockaddr;
pub mod source;
pub mod timebase;
pub mod watch;
