//! Process events that explain a cut request: a fatal signal generated for a process
//! (`signal:signal_generate`, in the sender's context: who killed whom) and a process exit
//! (`sched:sched_process_exit`, whole thread group only). Not filtered by the process filter:
//! the processes that matter are the upstream's workers and whoever kills them.

use aya_ebpf::{
    macros::{map, tracepoint},
    maps::HashMap,
    programs::TracePointContext,
};
use tracer_common::{counters, kind, ExitEvent, ForkEvent, SignalEvent};

use crate::maps::{EVENTS, count, header, pid_tgid, submit_flags};

/// Signals that end a process unless handled: what kills workers (timeouts, harakiri, OOM, ^C).
#[inline(always)]
fn fatal(sig: i32) -> bool {
    matches!(sig, 1 | 2 | 3 | 6 | 9 | 11 | 15)
}

#[tracepoint]
pub fn signal_generate(ctx: TracePointContext) -> u32 {
    let sig: i32 = unsafe { ctx.read_at(8) }.unwrap_or(0);
    if !fatal(sig) {
        return 0;
    }
    let ev = SignalEvent {
        hdr: header(kind::SIGNAL, pid_tgid()),
        sig,
        target_pid: unsafe { ctx.read_at(36) }.unwrap_or(0),
        target_comm: unsafe { ctx.read_at(20) }.unwrap_or([0; 16]),
        code: unsafe { ctx.read_at(16) }.unwrap_or(0),
        result: unsafe { ctx.read_at(44) }.unwrap_or(0),
    };
    if EVENTS.output::<SignalEvent>(&ev, submit_flags()).is_err() {
        count(counters::RINGBUF_FULL);
    }
    0
}

#[tracepoint]
pub fn process_exit(ctx: TracePointContext) -> u32 {
    let group_dead: u8 = unsafe { ctx.read_at(32) }.unwrap_or(0);
    if group_dead == 0 {
        return 0;
    }
    let ev = ExitEvent { hdr: header(kind::EXIT, pid_tgid()) };
    if EVENTS.output::<ExitEvent>(&ev, submit_flags()).is_err() {
        count(counters::RINGBUF_FULL);
    }
    0
}

/// App-server masters (listener owners) whose forks userspace wants to hear about.
#[map]
static APP_MASTERS: HashMap<u32, u8> = HashMap::with_max_entries(1024, 0);

#[tracepoint]
pub fn process_fork(ctx: TracePointContext) -> u32 {
    let id = pid_tgid();
    let parent = (id >> 32) as u32;
    if unsafe { APP_MASTERS.get(&parent) }.is_none() {
        return 0;
    }
    let ev = ForkEvent { hdr: header(kind::FORK, id), child_pid: unsafe { ctx.read_at::<i32>(20) }.unwrap_or(0) as u32, _pad: 0 };
    if EVENTS.output::<ForkEvent>(&ev, submit_flags()).is_err() {
        count(counters::RINGBUF_FULL);
    }
    0
}
