//! upstream-tracer: the userspace collector. The data path reads in folder order:
//!
//! - `kernel`: load and attach the programs (`load`), the ring buffer (`source`) and the typed
//!   events decoded from it (`events`, `sockaddr`, `errno`);
//! - `host`: every question asked of the host (sock_diag, /proc, counters, clocks) through `env`,
//!   which a recording (`record`) stores and a report replays;
//! - `state`: per-target, per-listener, per-connection and per-worker state built from the events,
//!   each family with its handlers (`session` only routes each event kind to its handler);
//! - `nginx`: nginx's own config and error log;
//! - `diagnosis`: each 502/504 joined to its kernel cause (`join`), grouped into verdicts;
//! - `output`: terminal, JSON lines, text/HTML report, Prometheus;
//! - `cmd`: one module per subcommand, `config` the validated settings they share.

pub mod cli;
pub mod cmd;
pub mod codes;
pub mod config;
pub mod diagnosis;
pub mod host;
pub mod kernel;
pub mod nginx;
pub mod output;
pub mod session;
pub mod state;
