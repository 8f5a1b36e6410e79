//! State built from the kernel events, one module per concern; the session (`crate::session`) routes events to them.
pub mod cause;
pub mod connects;
pub mod lookups;
pub mod requests;
pub mod tcp;

pub use connects::{Backlog, ConnectStats, ListenerView, TargetStats};
pub use requests::{CutRequest, Requests};
pub use tcp::{ListenerStats, TcpStats};
