//! gRPC clients as users have them, over the agent's Unix socket with no options: stock
//! grpcio (Python) and grpc-go (what grpcurl is built on). Both send an :authority of their
//! own there (grpcio the socket's path, which unpatched h2 resets: third_party/README.md),
//! and both read the API through reflection v1alpha, as grpcurl, grpcui and Evans do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{path::PathBuf, process::Command};

use faultline_tests::Agent;

use crate::python_client::{repo_root, venv_python};

/// A stock grpcio client (tests/python/stock_grpcio.py) dials `unix://SOCKET` with no channel
/// options, so grpc-core sends the socket's path as :authority, which unpatched h2 resets
/// (third_party/README.md); then it reads the API through reflection v1alpha.
#[test]
fn stock_grpcio_over_the_unix_socket_needs_no_channel_options() {
    let python = venv_python();
    let agent = Agent::start();
    let out = Command::new(&python)
        .arg(repo_root().join("tests/python/stock_grpcio.py"))
        .arg(&agent.socket)
        .arg(repo_root().join("proto"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stock grpcio failed ({}):\nstderr:\n{}\nagent log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        agent.log()
    );
    let r: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    // The same kernel release the CLI reads.
    assert_eq!(r["kernel_release"], agent.caps()["kernel_release"], "{r}");
    let services = r["v1alpha_services"].as_array().unwrap();
    assert!(services.iter().any(|s| s == "faultline.v1.FaultService"), "{r}");
    assert!(services.iter().any(|s| s == "grpc.health.v1.Health"), "{r}");
    assert_eq!(r["v1alpha_file"], "faultline/v1/service.proto", "{r}");
    let methods = r["v1alpha_methods"].as_array().unwrap();
    for m in ["Inject", "Get", "List", "Cancel", "Watch", "Capabilities"] {
        assert!(methods.iter().any(|x| x == m), "reflection lacks {m}: {r}");
    }
}

/// tests/go/grpcls, built by `cargo xtask test` (xtask/src/golang.rs) against Debian's grpc-go.
fn grpc_ls_bin() -> PathBuf {
    let p = std::env::var_os("FL_GO_GRPC_LS_BIN").map(PathBuf::from).expect(
        "FL_GO_GRPC_LS_BIN is not set: run through `cargo xtask test`, which builds tests/go/grpcls",
    );
    assert!(p.exists(), "{} is missing", p.display());
    p
}

/// grpc-go dials `unix://SOCKET` with no options and lists the services through reflection
/// v1alpha: `grpcurl -plaintext -unix SOCKET list`.
#[test]
fn grpc_go_lists_the_services_like_grpcurl() {
    let agent = Agent::start();
    let out = Command::new(grpc_ls_bin()).arg(&agent.socket).output().unwrap();
    assert!(
        out.status.success(),
        "grpc-go client failed ({}): {}\nagent log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        agent.log()
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let services = r["services"].as_array().unwrap();
    for s in ["faultline.v1.FaultService", "grpc.health.v1.Health"] {
        assert!(services.iter().any(|x| x == s), "{s} not listed: {r}");
    }
}
