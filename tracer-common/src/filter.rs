//! In-kernel filter, set once at load time as a read-only global so every program checks it before
//! doing any work (the libbpf-tools `const volatile targ_tgid` pattern).

use crate::COMM_LEN;

/// Only processes whose tgid is in the `PID_FILTER` map.
pub const BY_PID: u32 = 1 << 0;
/// Only processes whose comm equals `comm`.
pub const BY_COMM: u32 = 1 << 1;
/// Only processes in the cgroup (v2) with id `cgroup_id`.
pub const BY_CGROUP: u32 = 1 << 2;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FilterConfig {
    /// Bitwise or of `BY_*`; 0 = every process.
    pub flags: u32,
    pub _pad: u32,
    pub cgroup_id: u64,
    /// NUL-padded process name.
    pub comm: [u8; COMM_LEN],
}
const _: () = assert!(core::mem::size_of::<FilterConfig>() == 32);

impl FilterConfig {
    pub const ALL: FilterConfig = FilterConfig { flags: 0, _pad: 0, cgroup_id: 0, comm: [0; COMM_LEN] };
}
