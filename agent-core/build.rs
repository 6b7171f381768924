//! Builds the kernel programs (agent-ebpf) for the bpf target with nightly and bpf-linker,
//! and places the object in OUT_DIR for include_bytes_aligned!.
//!
//! As aya-build does, with one difference: the eBPF crate builds in one target directory
//! shared by every profile and host target (target/ebpf), not in this build script's
//! OUT_DIR. The object does not depend on the host profile, so clippy, the debug and test
//! builds and the static release build for the VM guests all reuse one compilation (with
//! aya-build each compiled `core` and the programs again, a minute or two apiece).
use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

const PACKAGE: &str = "faultline-ebpf";
const TARGET: &str = "bpfel-unknown-none";

fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?);
    let root = manifest.parent().context("workspace root")?;
    let ebpf = root.join("agent-ebpf");
    println!("cargo:rerun-if-changed={}", ebpf.display());
    println!("cargo:rerun-if-changed={}", root.join("agent-common/src").display());
    let out = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR")?);
    let arch = env::var("CARGO_CFG_TARGET_ARCH").context("CARGO_CFG_TARGET_ARCH")?;
    if env::var("CARGO_CFG_TARGET_ENDIAN").as_deref() != Ok("little") {
        bail!("only little-endian hosts are built for ({TARGET})");
    }
    let target_dir = root.join("target/ebpf");
    build(&ebpf, &target_dir, &arch)?;
    let object = target_dir.join(TARGET).join("release").join(PACKAGE);
    std::fs::copy(&object, out.join(PACKAGE))
        .with_context(|| format!("copying {} to OUT_DIR", object.display()))?;
    Ok(())
}

/// `cargo +nightly build` of the eBPF crate; its own lock serialises concurrent builds.
fn build(ebpf: &Path, target_dir: &Path, arch: &str) -> anyhow::Result<()> {
    let flags = [&format!("--cfg=bpf_target_arch=\"{arch}\""), "-Cdebuginfo=2", "-Clink-arg=--btf"]
        .join("\x1f");
    let out = Command::new("rustup")
        .current_dir(ebpf)
        .args(["run", "nightly", "cargo", "build", "--package", PACKAGE, "--bins", "--release"])
        .args(["--target", TARGET, "-Z", "build-std=core", "--target-dir"])
        .arg(target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", flags)
        // The outer build's compiler and toolchain must not leak into the nightly one.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .context("running rustup run nightly cargo build (is the nightly toolchain installed?)")?;
    if !out.status.success() {
        for line in String::from_utf8_lossy(&out.stderr).lines() {
            println!("cargo:warning={line}");
        }
        bail!("building {PACKAGE} failed: {}", out.status);
    }
    Ok(())
}
