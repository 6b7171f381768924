//! Installs only what is missing, so a second run changes nothing.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

use crate::run;

/// Debian packages the tests use: ip/tc (copied into the guests too), QEMU for the VM tier,
/// xz for Debian's compressed kernel modules, dpkg-deb to unpack kernels, promtool (prometheus)
/// to check the metrics text, tmux for a real terminal around the CLI's live view, musl-gcc
/// for the C parts (ring) of the static guest binaries, Go for the Go programs of the
/// time-skew and stock-client tests (tests/go), with Debian's grpc-go sources for the latter,
/// runc and busybox-static for the real containers of the host-only `containers_runc` tests
/// (runc runs an OCI bundle directly: Debian's podman stops on hybrid-cgroup hosts, with crun
/// and with runc alike; busybox-static is the bundle's whole rootfs: a shell, sleep and nc in
/// one static binary).
const DEBIAN_PACKAGES: &[&str] = &[
    "iproute2",
    "qemu-system-x86",
    "xz-utils",
    "dpkg",
    "e2fsprogs",
    "mount",
    "tmux",
    "prometheus",
    "musl-tools",
    "golang-go",
    "golang-google-grpc-dev",
    "runc",
    "busybox-static",
];

/// The guests run static binaries.
const MUSL: &str = "x86_64-unknown-linux-musl";

pub fn all() -> anyhow::Result<()> {
    rust_src()?;
    musl_target()?;
    bpf_linker()?;
    debian_packages()?;
    python_venv()
}

/// Pinned Python packages: the offline checks of deploy/, the example client's test, and
/// Chaos Toolkit for the experiments of clients/python.
const PY_REQUIREMENTS: &[&str] = &[
    "deploy/requirements.txt",
    "examples/python/requirements.txt",
    "clients/python/requirements.txt",
];

/// The faultline Python package (client and Chaos Toolkit extension), built from this
/// checkout: its stubs come from proto/ at build time.
const PY_PACKAGE: &str = "clients/python";

/// What the package is built from: a change to any of these installs it again.
const PY_PACKAGE_SOURCES: &[&str] = &[
    "clients/python/pyproject.toml",
    "clients/python/setup.py",
    "clients/python/src",
    "proto/faultline/v1",
];

/// The venv's Python (target/py), made by `python_venv`.
pub fn venv_python() -> PathBuf {
    crate::root().join("target/py/bin/python")
}

/// target/py with the pinned requirements and the faultline package; a stamp of what was
/// installed (the requirement files, and a hash of the package's sources and protos) makes
/// a second run install nothing, and a change install again.
fn python_venv() -> anyhow::Result<()> {
    let venv = crate::root().join("target/py");
    let stamp = venv.join("installed-requirements.txt");
    let mut wanted = String::new();
    for f in PY_REQUIREMENTS {
        let path = crate::root().join(f);
        wanted += &std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
    }
    wanted += &format!("# {PY_PACKAGE} sources: {:016x}\n", sources_hash(PY_PACKAGE_SOURCES)?);
    if venv_python().exists() && std::fs::read_to_string(&stamp).ok() == Some(wanted.clone()) {
        return Ok(());
    }
    if !ok(Command::new("python3").args(["-m", "venv", "--help"])) {
        install_packages(&["python3", "python3-venv"])?;
    }
    if !venv_python().exists() {
        println!("== making the Python venv target/py");
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    println!("== installing {PY_REQUIREMENTS:?} into target/py");
    let mut pip = Command::new(venv_python());
    pip.args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"]);
    for f in PY_REQUIREMENTS {
        pip.arg("-r").arg(crate::root().join(f));
    }
    run(&mut pip)?;
    // Built with the venv's own pinned setuptools and grpcio-tools (no isolated build env
    // fetched from the index); --force-reinstall because the version does not change when
    // the sources do.
    println!("== installing {PY_PACKAGE} into target/py");
    run(Command::new(venv_python())
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
        .args(["--no-deps", "--no-build-isolation", "--force-reinstall"])
        .arg(crate::root().join(PY_PACKAGE)))?;
    std::fs::write(&stamp, wanted).with_context(|| format!("writing {}", stamp.display()))
}

/// FNV-1a over the relative paths and contents of the files under `paths` (sorted; caches
/// and build output skipped): stable across runs and Rust versions.
fn sources_hash(paths: &[&str]) -> anyhow::Result<u64> {
    fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
        if dir.is_file() {
            out.push(dir.to_path_buf());
            return Ok(());
        }
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name == "__pycache__" || name.ends_with(".egg-info") || name.ends_with(".pyc") {
                continue;
            }
            walk(&path, out)?;
        }
        Ok(())
    }
    let root = crate::root();
    let mut files = Vec::new();
    for p in paths {
        walk(&root.join(p), &mut files)?;
    }
    files.sort();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for f in files {
        let rel = f.strip_prefix(&root).unwrap_or(&f).to_string_lossy().into_owned();
        let bytes = std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?;
        for b in rel.as_bytes().iter().chain([0u8].iter()).chain(bytes.iter()) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    Ok(h)
}

fn musl_target() -> anyhow::Result<()> {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("rustup")?;
    if String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == MUSL) {
        return Ok(());
    }
    println!("== installing the {MUSL} target");
    run(Command::new("rustup").args(["target", "add", MUSL]))
}

fn ok(cmd: &mut Command) -> bool {
    cmd.output().map(|o| o.status.success()).unwrap_or(false)
}

fn rust_src() -> anyhow::Result<()> {
    let out = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()
        .context("running rustup (the nightly toolchain builds the eBPF programs)")?;
    if String::from_utf8_lossy(&out.stdout).lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    println!("== installing nightly rust-src");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo")
    })
}

/// bpf-linker must link against the nightly toolchain's own libLLVM; the plain
/// `cargo install bpf-linker` fails here. The library is found by glob, never by name, and
/// the link directory lives in CARGO_HOME because bpf-linker keeps it as its runpath.
fn bpf_linker() -> anyhow::Result<()> {
    if ok(Command::new("bpf-linker").arg("--version"))
        || ok(Command::new(cargo_home().join("bin/bpf-linker")).arg("--version"))
    {
        return Ok(());
    }
    println!("== installing bpf-linker 0.13.0 against nightly's libLLVM");
    let sysroot = Command::new("rustc").args(["+nightly", "--print", "sysroot"]).output()?;
    let lib_dir = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim()).join("lib");
    let lib = std::fs::read_dir(&lib_dir)
        .with_context(|| format!("reading {}", lib_dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libLLVM.so."))
        })
        .with_context(|| format!("no libLLVM.so.* in {}", lib_dir.display()))?;
    let prefix = cargo_home().join("faultline-llvm");
    let link_dir = prefix.join("lib");
    std::fs::create_dir_all(&link_dir)?;
    let own_name = lib.file_name().context("library without a name")?;
    for name in [std::ffi::OsStr::new("libLLVM.so"), own_name] {
        let link = link_dir.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&lib, &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    run(Command::new("cargo")
        .args([
            "install",
            "bpf-linker@0.13.0",
            "--locked",
            "--no-default-features",
            "--features",
            "llvm-22",
        ])
        .env("LLVM_PREFIX", &prefix))
}

fn debian_packages() -> anyhow::Result<()> {
    install_packages(DEBIAN_PACKAGES)
}

/// Installs those of `packages` dpkg does not list as installed.
pub fn install_packages(packages: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            let out = Command::new("dpkg-query").args(["-W", "-f=${Status}", p]).output();
            !out.map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(false)
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !ok(Command::new("apt-get").arg("--version")) {
        bail!("missing Debian packages {missing:?} and no apt-get to install them");
    }
    println!("== installing Debian packages {missing:?}");
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}
