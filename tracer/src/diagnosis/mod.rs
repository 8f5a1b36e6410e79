//! From 502/504 to root cause: each status line joined to the kernel event before it (`join`),
//! classified and explained per root cause (`verdict`), failures that did not become one yet
//! (`near_miss`), 502s of an upstream group with no live server (`groups`), and the whole
//! picture (`report`);
//! two recordings side by side (`compare`); the recorded arrivals through a queue model
//! (`what_if`).
pub mod compare;
pub mod groups;
pub mod join;
pub mod near_miss;
pub mod report;
pub mod series;
pub mod verdict;
pub mod what_if;
