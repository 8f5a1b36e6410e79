//! Kernel programs and what they hand over: loading and attaching, the ring buffer, and the
//! events decoded from it.
pub mod btf;
pub mod errno;
pub mod events;
pub mod load;
pub mod sockaddr;
pub mod source;
pub mod tls;
