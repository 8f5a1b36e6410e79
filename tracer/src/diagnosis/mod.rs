//! From 502/504 to root cause: each status line joined to the kernel event before it (`join`),
//! then grouped into verdicts with proof and fix (`verdict`).
pub mod join;
pub mod verdict;
