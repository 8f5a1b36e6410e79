//! Fatal signals, from `signal:signal_generate` (in the sender's context: who killed whom).
//!
//! Why: a cut request names the worker that died and why — SIGKILL from the app server's master
//! (gunicorn worker timeout, uwsgi harakiri), from the OOM killer, or from someone else. Not
//! filtered by the process filter: the processes that matter are the upstream's workers and
//! whoever kills them.
//!
//! When absent: cut requests still name the worker that exited (`process`), without the signal
//! or its sender.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_common::{linux::fatal_signal, offsets::signal_generate as record, Kind, SignalEvent};

use crate::maps::{field, field_at, header, output, pid_tgid, preamble};

#[tracepoint]
pub fn signal_generate(ctx: TracePointContext) -> u32 {
    preamble!();
    let sig: i32 = field(&ctx, record::SIG);
    if !fatal_signal(sig) {
        return 0;
    }
    let c = record::COMM.offset;
    // comm[16]: four aligned 4-byte loads.
    let comm: [u32; 4] = [field_at(&ctx, c), field_at(&ctx, c + 4), field_at(&ctx, c + 8), field_at(&ctx, c + 12)];
    output(&SignalEvent {
        hdr: header(Kind::Signal, pid_tgid()),
        sig,
        target_pid: field(&ctx, record::PID),
        target_comm: unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>(comm) },
        code: field(&ctx, record::CODE),
        result: field(&ctx, record::RESULT),
    });
    0
}
