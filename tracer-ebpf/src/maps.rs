//! Maps and helpers every probe family shares: the event ring buffer, the loss counters, the
//! load-time filter and [`preamble!`], the first line of every program.

use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
    EbpfContext,
};
use tracer_common::{counters, filter, filter::FilterConfig, offsets::Field, Counter, EventHeader, Kind, COMM_LEN};

/// All events go through one ring buffer (ordered across CPUs, one wake-up for many records).
/// Userspace may resize it at load time.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 * 1024 * 1024, 0);

/// Loss counters, indexed by [`Counter`].
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counters::COUNT, 0);

/// Tgids allowed when `filter::BY_PID` is set (filled by userspace before attach).
#[map]
pub static PID_FILTER: HashMap<u32, u8> = HashMap::with_max_entries(1024, 0);

/// Set by the loader (`EbpfLoader::set_global`); read-only for the programs.
#[no_mangle]
static FILTER: FilterConfig = FilterConfig::ALL;

/// Set by the loader when `TRACER_HOOKS_ONLY=1` (a bench knob): every program returns at once,
/// so a run measures what the attachments themselves cost (tracepoint dispatch, the syscall slow
/// path) apart from what the programs do. Read-only, so the verifier folds the check away.
#[no_mangle]
static HOOKS_ONLY: u8 = 0;

#[inline(always)]
pub fn hooks_only() -> bool {
    unsafe { core::ptr::read_volatile(&HOOKS_ONLY) != 0 }
}

/// The first line of every program. `preamble!()` returns 0 at once under `TRACER_HOOKS_ONLY`;
/// `preamble!(traced)` also returns unless the current task passes the load-time filter, and
/// evaluates to its pid_tgid. Programs whose task is not the traced process (softirq drops, the
/// app servers' accepts and listens, signals, exits) or that a map lookup filters already (the
/// per-socket hooks) use the first form.
macro_rules! preamble {
    () => {
        if $crate::maps::hooks_only() {
            return 0;
        }
    };
    (traced) => {{
        $crate::maps::preamble!();
        let id = $crate::maps::pid_tgid();
        if !$crate::maps::traced(id) {
            return 0;
        }
        id
    }};
}
pub(crate) use preamble;

/// Pending bytes that make a submit wake the reader: a quarter of the ring (set by the loader),
/// so a small ring still wakes userspace long before it is full.
#[no_mangle]
static WAKEUP_BYTES: u64 = 64 * 1024;

/// Submit flags for a ring-buffer record. Waking the reader costs an irq_work self-interrupt per
/// record (a VM exit in a VM: microseconds, charged to the probe), so records are submitted
/// without a wake-up until a batch has built up; userspace also drains on a short timer.
#[inline(always)]
pub fn submit_flags() -> u64 {
    const BPF_RB_NO_WAKEUP: u64 = 1;
    const BPF_RB_FORCE_WAKEUP: u64 = 2;
    const BPF_RB_AVAIL_DATA: u64 = 0;
    let threshold = unsafe { core::ptr::read_volatile(&WAKEUP_BYTES) };
    if EVENTS.query(BPF_RB_AVAIL_DATA) >= threshold {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// Flags for the per-connection LRU maps: one LRU list per CPU instead of a global one behind a
/// spinlock (BPF_F_NO_COMMON_LRU).
pub const LRU_PER_CPU: u32 = 1 << 1;

#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(p) = COUNTERS.get_ptr_mut(counter as u32) {
        // Per-CPU slot: no other writer, a plain increment is exact.
        unsafe { *p += 1 };
    }
}

/// Is the current task one we were asked to trace?
#[inline(always)]
pub fn traced(pid_tgid: u64) -> bool {
    let f: FilterConfig = unsafe { core::ptr::read_volatile(&FILTER) };
    if f.flags == 0 {
        return true;
    }
    if f.flags & filter::BY_PID != 0 {
        let tgid = (pid_tgid >> 32) as u32;
        if unsafe { PID_FILTER.get(&tgid) }.is_none() {
            return false;
        }
    }
    if f.flags & filter::BY_COMM != 0 {
        let Ok(comm) = bpf_get_current_comm() else { return false };
        if !same_comm(&comm, &f.comm) {
            return false;
        }
    }
    if f.flags & filter::BY_CGROUP != 0 && unsafe { bpf_get_current_cgroup_id() } != f.cgroup_id {
        return false;
    }
    true
}

#[inline(always)]
fn same_comm(a: &[u8; COMM_LEN], b: &[u8; COMM_LEN]) -> bool {
    // Two 8-byte compares instead of a 16-step loop.
    let a: [u64; 2] = unsafe { core::mem::transmute(*a) };
    let b: [u64; 2] = unsafe { core::mem::transmute(*b) };
    a[0] == b[0] && a[1] == b[1]
}

/// Write a record to the ring buffer (copied from the stack), counting it if there is no room.
#[inline(always)]
pub fn output<T>(record: &T) {
    if EVENTS.output::<T>(record, submit_flags()).is_err() {
        count(Counter::RingbufFull);
    }
}

/// Fill the shared header for an event of `kind` raised by the current task.
#[inline(always)]
pub fn header(kind: Kind, pid_tgid: u64) -> EventHeader {
    EventHeader {
        kind: kind as u32,
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        _pad: 0,
        ts_ns: unsafe { bpf_ktime_get_ns() },
        comm: bpf_get_current_comm().unwrap_or([0; COMM_LEN]),
    }
}

#[inline(always)]
pub fn now_ns() -> u64 {
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
pub fn pid_tgid() -> u64 {
    bpf_get_current_pid_tgid()
}

/// A field of a tracepoint record (`tracer_common::offsets`), loaded straight from the context.
/// The verifier allows aligned loads from a tracepoint's record; `TracePointContext::read_at`
/// instead makes a `bpf_probe_read_kernel` helper call per field, which was most of a short
/// program's run time. `T` is at most the field's size; the offset is a multiple of its
/// alignment (as in the tracepoint's format file).
#[inline(always)]
pub fn field<T: Copy>(ctx: &TracePointContext, f: Field) -> T {
    field_at(ctx, f.offset)
}

/// A part of a field (e.g. 4 bytes of a `char comm[16]`) at `offset` in the record.
#[inline(always)]
pub fn field_at<T: Copy>(ctx: &TracePointContext, offset: usize) -> T {
    // SAFETY: the context is the tracepoint record; the verifier checks offset and size.
    unsafe { core::ptr::read((ctx.as_ptr() as *const u8).add(offset) as *const T) }
}
