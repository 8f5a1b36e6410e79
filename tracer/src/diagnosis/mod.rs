//! From 502/504 to root cause: each status line joined to the kernel event before it (`join`),
//! classified and explained per root cause (`verdict`), failures that did not become one yet
//! (`near_miss`), and the whole picture (`report`).
pub mod groups;
pub mod join;
pub mod near_miss;
pub mod report;
pub mod verdict;
