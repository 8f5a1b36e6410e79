//! Everything asked of the host, through one recordable seam (`env`).
pub mod appserver;
pub mod env;
pub mod listeners;
pub mod netstat;
pub mod record;
pub mod timebase;
