//! Kernel programs of upstream-tracer. One module per probe family under `probes/`; shared maps,
//! the in-kernel filter and the loss counters in `maps.rs`.
#![no_std]
#![no_main]

mod layout;
mod maps;
mod net;
mod probes;

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
