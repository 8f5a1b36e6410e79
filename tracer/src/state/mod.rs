//! State built from the kernel events, one module per concern; `session` routes events to them.
pub mod connects;
pub mod requests;
pub mod session;
pub mod tcp;

pub use connects::{Backlog, ConnectStats, ListenerView, TargetStats};
pub use requests::{CutRequest, Requests};
pub use tcp::{ListenerStats, TcpStats};
