//! Kernel programs of upstream-tracer. One module per hook family under `probes/`; the ring
//! buffer, the in-kernel filter, the loss counters and the preamble every program starts with in
//! `maps.rs`; reads of kernel structs in `layout.rs`; the per-connection request maps in
//! `requests.rs` (the state machine itself is `tracer_common::conn`).
#![no_std]
#![no_main]

mod layout;
mod maps;
mod probes;
mod requests;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable: the verifier rejects programs that could panic.
    loop {}
}

/// GPL-compatible: `bpf_probe_read_user` and the ring buffer helpers are GPL-only.
#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
