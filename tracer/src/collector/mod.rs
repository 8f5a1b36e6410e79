//! Userspace state built from the kernel events: one module per concern.
pub mod connects;
pub mod requests;
pub mod tcp;

pub use connects::{Backlog, ConnectStats, ListenerView, TargetStats};
pub use requests::{CutRequest, Requests};
pub use tcp::{ListenerStats, TcpStats};
