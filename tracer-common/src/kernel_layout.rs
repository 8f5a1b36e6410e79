//! Where the kernel keeps what the programs read from kernel memory, set once at load time as a
//! read-only global. Userspace takes the offsets from the kernel's BTF: struct layouts depend on
//! the kernel's version and configuration.

/// Byte offsets of struct members, 0 = not found (the programs then skip what needs them and
/// count it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelLayout {
    /// task_struct.files
    pub task_files: u64,
    /// files_struct.fdt
    pub files_fdt: u64,
    /// fdtable.fd
    pub fdtable_fd: u64,
    /// file.private_data (a struct socket for a socket's file)
    pub file_private_data: u64,
    /// socket.type (SOCK_STREAM = 1)
    pub socket_type: u64,
    /// socket.sk
    pub socket_sk: u64,
    /// sock_common.skc_v6_daddr
    pub skc_v6_daddr: u64,
    /// sock_common.skc_v6_rcv_saddr
    pub skc_v6_rcv_saddr: u64,
    /// inet_sock.inet_sport (network order)
    pub inet_sport: u64,
}

impl KernelLayout {
    /// Before userspace sets it: nothing known.
    pub const UNKNOWN: KernelLayout = KernelLayout {
        task_files: 0,
        files_fdt: 0,
        fdtable_fd: 0,
        file_private_data: 0,
        socket_type: 0,
        socket_sk: 0,
        skc_v6_daddr: 0,
        skc_v6_rcv_saddr: 0,
        inet_sport: 0,
    };

    /// Can the programs go from an fd of the current task to its struct sock?
    pub fn can_walk_fds(&self) -> bool {
        self.task_files != 0 && self.files_fdt != 0 && self.fdtable_fd != 0 && self.file_private_data != 0 && self.socket_sk != 0
    }
}
