//! One module per hook family; each says which hook(s) it uses and why, and what replaces it
//! when the hook is absent. The attach table (program → hook, required or optional, oldest
//! kernel) is `tracer_common::probes`, shared with the loader and the README.
pub mod accept;
pub mod close;
pub mod connect;
pub mod http_status;
pub mod listen;
pub mod listen_drops;
pub mod process;
pub mod signal;
pub mod sock_io;
pub mod syn_sent;
pub mod tcp_state;
pub mod tls_status;
