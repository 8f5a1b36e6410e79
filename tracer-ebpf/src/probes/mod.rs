//! One module per probe family.
pub mod connect;
pub mod http_status;
pub mod process;
pub mod requests;
pub mod tcp;
