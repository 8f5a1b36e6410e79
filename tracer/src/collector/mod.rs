//! Userspace state built from the kernel events: one module per concern.
pub mod connects;
pub mod tcp;

pub use connects::{Backlog, ConnectStats, ListenerView, TargetStats};
pub use tcp::{ListenerStats, TcpStats};
