//! Reads that follow kernel structs at offsets userspace found in the kernel's BTF
//! (`tracer_common::kernel_layout`): the struct sock behind an fd, and what the TCP probes read
//! from a socket.

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};
use tracer_common::{counters, kernel_layout::KernelLayout};

use crate::maps::count;

/// Set by the loader; read-only for the programs.
#[no_mangle]
static LAYOUT: KernelLayout = KernelLayout::UNKNOWN;

#[inline(always)]
pub fn layout() -> KernelLayout {
    unsafe { core::ptr::read_volatile(&LAYOUT) }
}

#[inline(always)]
fn read_ptr(base: u64, offset: u64) -> Option<u64> {
    if base == 0 {
        return None;
    }
    unsafe { bpf_probe_read_kernel((base + offset) as *const u64) }.ok().filter(|p| *p != 0)
}

const SOCK_STREAM: u16 = 1;

/// The struct sock of the current task's `fd` if it is a stream socket. None for another kind of
/// socket (a connected UDP resolver, a unix datagram socket to syslog), and None — counted as
/// `sock_lookup_failed` — when the layout is unknown or a read failed. Follows
/// current->files->fdt->fd[fd]->private_data (struct socket)->sk. Called right after a
/// connect()/accept() on that fd returned, in the same task, so the fd still names that socket.
#[inline(always)]
pub fn stream_sock_of_fd(fd: i32) -> Option<u64> {
    match walk_fd(fd) {
        Ok(sk) => sk,
        Err(()) => {
            count(counters::SOCK_LOOKUP_FAILED);
            None
        }
    }
}

#[inline(always)]
fn walk_fd(fd: i32) -> Result<Option<u64>, ()> {
    let l = layout();
    if !l.can_walk_fds() || fd < 0 {
        return Err(());
    }
    let task = unsafe { bpf_get_current_task() };
    let files = read_ptr(task, l.task_files).ok_or(())?;
    let fdt = read_ptr(files, l.files_fdt).ok_or(())?;
    let fds = read_ptr(fdt, l.fdtable_fd).ok_or(())?;
    let file = read_ptr(fds, fd as u64 * 8).ok_or(())?;
    let socket = read_ptr(file, l.file_private_data).ok_or(())?;
    let ty: u16 = unsafe { bpf_probe_read_kernel((socket + l.socket_type) as *const u16) }.map_err(|_| ())?;
    if ty != SOCK_STREAM {
        return Ok(None);
    }
    read_ptr(socket, l.socket_sk).map(Some).ok_or(())
}
