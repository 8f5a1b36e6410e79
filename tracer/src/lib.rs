//! upstream-tracer: the userspace collector. The data path reads in module order:
//! `load` (attach kernel programs) → `source` (ring buffer → `events`) → `session` (feeds the
//! `collector`s: per-target, per-listener and per-request state; `listeners` samples sock_diag;
//! every host question goes through `env` so `record` can replay it) → `correlate` (each 502/504
//! to its kernel cause) → `verdict` → `output` (terminal, JSON lines, report, HTML).

pub mod btf;
pub mod cli;
pub mod collector;
pub mod correlate;
pub mod daemon;
pub mod diagnose;
pub mod env;
pub mod errno;
pub mod events;
pub mod listeners;
pub mod load;
pub mod netstat;
pub mod nginx;
pub mod output;
pub mod record;
pub mod session;
pub mod sockaddr;
pub mod source;
pub mod timebase;
pub mod verdict;
pub mod watch;
