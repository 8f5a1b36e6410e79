//! nginx itself: where it is and how it is configured (`config`), and what its error log says
//! (`error_log`). The status lines it writes are seen in the kernel (`kernel::events`).
pub mod config;
pub mod error_log;

pub use config::{discover, Discovery};
pub use error_log::{ErrorKind, ErrorLog};
