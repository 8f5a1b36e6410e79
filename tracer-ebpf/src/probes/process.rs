//! Process lifecycle, from `sched:sched_process_exit` (whole thread group only) and
//! `sched:sched_process_fork` (of app-server masters userspace named).
//!
//! Why: a worker that exits mid-request (killed, or recycled after max-requests) is what cuts a
//! request; the fork of a new worker by a known master keeps userspace's worker list exact
//! across recycling without scanning /proc. Not filtered by the process filter.
//!
//! When absent: process_exit — cut requests are blamed on no worker ("unknown" unless a signal
//! names it); process_fork — new workers are found by userspace's periodic worker scan.
//!
//! Owns `APP_MASTERS`, which userspace fills.

use aya_ebpf::{
    macros::{map, tracepoint},
    maps::HashMap,
    programs::TracePointContext,
};
use tracer_common::{
    offsets::{sched_process_exit, sched_process_fork},
    ExitEvent, ForkEvent, Kind,
};

use crate::maps::{field, header, output, pid_tgid, preamble};

#[tracepoint]
pub fn process_exit(ctx: TracePointContext) -> u32 {
    preamble!();
    let group_dead: u8 = field(&ctx, sched_process_exit::GROUP_DEAD);
    if group_dead == 0 {
        return 0;
    }
    output(&ExitEvent { hdr: header(Kind::Exit, pid_tgid()) });
    0
}

/// App-server masters (listener owners) whose forks userspace wants to hear about.
#[map]
static APP_MASTERS: HashMap<u32, u8> = HashMap::with_max_entries(1024, 0);

#[tracepoint]
pub fn process_fork(ctx: TracePointContext) -> u32 {
    preamble!();
    let id = pid_tgid();
    let parent = (id >> 32) as u32;
    if unsafe { APP_MASTERS.get(&parent) }.is_none() {
        return 0;
    }
    output(&ForkEvent { hdr: header(Kind::Fork, id), child_pid: field::<i32>(&ctx, sched_process_fork::CHILD_PID) as u32, _pad: 0 });
    0
}
