//! From 502/504 to root cause: each status line joined to the kernel event before it (`join`),
//! classified and explained per root cause (`verdict`), and the whole picture (`report`).
pub mod join;
pub mod report;
pub mod verdict;
