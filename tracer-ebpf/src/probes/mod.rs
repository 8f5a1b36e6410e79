//! One module per probe family.
pub mod connect;
pub mod tcp;
pub mod process;
pub mod requests;
pub mod http_status;
