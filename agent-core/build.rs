//! Builds the kernel programs (agent-ebpf) for the bpf target with nightly and bpf-linker,
//! and places the object in OUT_DIR for include_bytes_aligned!.
fn main() -> anyhow::Result<()> {
    // aya-build watches agent-ebpf itself; the shared types live next door.
    println!("cargo:rerun-if-changed=../agent-common/src");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "faultline-ebpf",
            root_dir: "../agent-ebpf",
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
}
