//! A connect() sockaddr as the kernel probe copies it: the first 4 bytes are `addrlen`
//! (little endian, as the event carries it), the rest the raw address bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tracer::kernel::sockaddr::Target;

fuzz_target!(|bytes: &[u8]| {
    let (len, raw) = bytes.split_at(bytes.len().min(4));
    let mut l = [0u8; 4];
    l[..len.len()].copy_from_slice(len);
    let t = Target::parse(raw, u32::from_le_bytes(l));
    let _ = (t.family(), t.is_unix(), t.ip(), t.to_string());
});
