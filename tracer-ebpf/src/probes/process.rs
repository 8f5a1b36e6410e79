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

use crate::maps::{count, field, header, hooks_only, pid_tgid, submit_flags, EVENTS};

/// Signals that end a process unless handled: what kills workers (timeouts, harakiri, OOM, ^C).
#[inline(always)]
fn fatal(sig: i32) -> bool {
    matches!(sig, 1 | 2 | 3 | 6 | 9 | 11 | 15)
}

#[tracepoint]
pub fn signal_generate(ctx: TracePointContext) -> u32 {
    if hooks_only() {
        return 0;
    }
    let sig: i32 = field(&ctx, 8);
    if !fatal(sig) {
        return 0;
    }
    let ev = SignalEvent {
        hdr: header(kind::SIGNAL, pid_tgid()),
        sig,
        target_pid: field(&ctx, 36),
        // comm[16] at offset 20: four aligned 4-byte loads.
        target_comm: unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>([field(&ctx, 20), field(&ctx, 24), field(&ctx, 28), field(&ctx, 32)]) },
        code: field(&ctx, 16),
        result: field(&ctx, 44),
    };
    if EVENTS.output::<SignalEvent>(&ev, submit_flags()).is_err() {
        count(counters::RINGBUF_FULL);
    }
    0
}

#[tracepoint]
pub fn process_exit(ctx: TracePointContext) -> u32 {
    if hooks_only() {
        return 0;
    }
    let group_dead: u8 = field(&ctx, 32);
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
    if hooks_only() {
        return 0;
    }
    let id = pid_tgid();
    let parent = (id >> 32) as u32;
    if unsafe { APP_MASTERS.get(&parent) }.is_none() {
        return 0;
    }
    let ev = ForkEvent { hdr: header(kind::FORK, id), child_pid: field::<i32>(&ctx, 20) as u32, _pad: 0 };
    if EVENTS.output::<ForkEvent>(&ev, submit_flags()).is_err() {
        count(counters::RINGBUF_FULL);
    }
    0
}
