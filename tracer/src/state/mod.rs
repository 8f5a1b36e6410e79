//! State built from the kernel events, one module per concern, each with the handlers that
//! build it; the session (`crate::session`) routes events to them.
pub mod cause;
pub mod connects;
pub mod history;
pub mod lookups;
pub mod requests;
pub mod tcp;

pub use connects::{Backlog, ConnectStats, ListenerView, TargetStats};
pub use requests::{CutRequest, Requests};
pub use tcp::{ListenerStats, TcpStats};

/// Copies of the items changed since they were last summarised (`dirty`), marking them clean.
fn take_dirty<'a, T: Clone + 'a>(items: impl Iterator<Item = &'a mut T>, dirty: impl Fn(&mut T) -> &mut bool) -> Vec<T> {
    items.filter_map(|t| std::mem::take(dirty(t)).then(|| t.clone())).collect()
}
