//! Builds the kernel programs (tracer-ebpf) for bpfel-unknown-none with the nightly toolchain and
//! bpf-linker, and leaves the object in OUT_DIR for `include_bytes_aligned!` (aya-template style).
fn main() -> anyhow::Result<()> {
    let root = env!("CARGO_MANIFEST_DIR");
    // aya-build reruns on changes of the eBPF crate; the shared wire types live elsewhere.
    println!("cargo:rerun-if-changed={root}/../tracer-common/src");
    let ebpf_dir = format!("{root}/../tracer-ebpf");
    aya_build::build_ebpf([aya_build::Package { name: "tracer-ebpf", root_dir: &ebpf_dir, ..Default::default() }], aya_build::Toolchain::Nightly)
}
