//! Userspace state built from the kernel events: one module per concern.
pub mod connects;

pub use connects::{Backlog, ConnectStats, ListenerView, TargetStats};
