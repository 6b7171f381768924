//! The tests' Go programs, built with Debian's Go toolchain (`cargo xtask setup` installs
//! golang-go and golang-google-grpc-dev), static (cgo off, so the musl guests run them too),
//! offline, into target/go:
//! - tests/go/clock: the time-skew tests' clock server, as a Go runtime reads time;
//! - tests/go/grpcls: a grpc-go client doing what `grpcurl -plaintext -unix SOCKET list`
//!   does, for the stock-client tests (grpcurl itself is in no registry these machines
//!   reach; it is built on grpc-go and asks reflection v1alpha the same way).

use std::{path::PathBuf, process::Command};

use crate::{root, run};

/// Where the tests find it (tests/src/clock.rs).
pub const CLOCK_ENV: &str = "FL_GO_CLOCK_BIN";
/// Its path in the guests.
pub const GUEST_CLOCK: &str = "/bin/fl-clock-go";

/// Where the tests find the grpc-go client (tests/tests/host_only/stock_clients.rs).
pub const GRPC_LS_ENV: &str = "FL_GO_GRPC_LS_BIN";

/// `go build` of tests/go/PACKAGE into target/go/BINARY: static, offline, with a cache of its
/// own; `env` adds the module mode's settings. A no-op when nothing changed (Go's build cache).
fn build(
    package: &str,
    binary: &str,
    env: &[(&str, std::ffi::OsString)],
) -> anyhow::Result<PathBuf> {
    let dir = root().join("target/go");
    let out = dir.join(binary);
    let mut cmd = Command::new("go");
    cmd.args(["build", "-trimpath", "-o"])
        .arg(&out)
        .arg(format!("./{package}"))
        .current_dir(root().join("tests/go"))
        .env("CGO_ENABLED", "0")
        .env("GOPROXY", "off")
        .env("GOCACHE", dir.join("cache"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(&mut cmd)?;
    Ok(out)
}

/// Builds the grpc-go client in GOPATH mode against Debian's grpc-go sources (there is no
/// module proxy here).
pub fn grpc_ls() -> anyhow::Result<PathBuf> {
    let path = root().join("target/go/path");
    let gopath = std::env::join_paths([path, "/usr/share/gocode".into()])?;
    build("grpcls", "fl-grpc-ls", &[("GO111MODULE", "off".into()), ("GOPATH", gopath)])
}

/// Builds the Go clock server (module mode, no dependencies).
pub fn clock_server() -> anyhow::Result<PathBuf> {
    let path = root().join("target/go/path");
    build("clock", "fl-clock-go", &[("GOFLAGS", "-mod=mod".into()), ("GOPATH", path.into())])
}
