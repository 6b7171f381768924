//! The tests' Go program (tests/go/clock: the time-skew tests' clock server as a Go runtime
//! reads time), built with Debian's Go toolchain (`cargo xtask setup` installs golang-go),
//! static (cgo off, so the musl guests run it too), offline, into target/go.

use std::{path::PathBuf, process::Command};

use crate::{root, run};

/// Where the tests find it (tests/src/clock.rs).
pub const CLOCK_ENV: &str = "FL_GO_CLOCK_BIN";
/// Its path in the guests.
pub const GUEST_CLOCK: &str = "/bin/fl-clock-go";

/// Builds the Go clock server (a no-op when nothing changed: Go's build cache).
pub fn clock_server() -> anyhow::Result<PathBuf> {
    let dir = root().join("target/go");
    let out = dir.join("fl-clock-go");
    run(Command::new("go")
        .args(["build", "-trimpath", "-o"])
        .arg(&out)
        .arg("./clock")
        .current_dir(root().join("tests/go"))
        .env("CGO_ENABLED", "0")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=mod")
        .env("GOCACHE", dir.join("cache"))
        .env("GOPATH", dir.join("path")))?;
    Ok(out)
}
