//! The gRPC surface: FaultService, grpc.health.v1 and server reflection, served on a Unix
//! socket (0600, in a directory only root may write) and optionally on TCP: TLS, mutual TLS with a client
//! CA, a bearer token and per-client rate limits there; plain text only when asked for.

pub mod audit;
pub mod auth;
pub mod service;
pub mod status;

use std::{
    net::SocketAddr,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context as _, bail};
use faultline_proto::v1::{FILE_DESCRIPTOR_SET, fault_service_server::FaultServiceServer};
use tokio::{net::UnixListener, sync::watch};
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::transport::Server;
use tracing::{info, warn};

use faultline_core::engine::Engine;

pub struct Listen {
    pub socket: PathBuf,
    pub tcp: Option<Tcp>,
    /// Largest request message accepted; larger ones get RESOURCE_EXHAUSTED.
    pub max_request_bytes: usize,
    pub audit: Arc<audit::Audit>,
}

/// The TCP listener and what guards it.
pub struct Tcp {
    pub addr: SocketAddr,
    /// None: plain text (the operator asked for it explicitly).
    pub tls: Option<tonic::transport::ServerTlsConfig>,
    pub token: Option<String>,
    pub rate: f64,
    pub burst: f64,
}

/// The socket's directory: one the agent creates (with any missing parents) is 0700; one that
/// exists is left as it is, unless another user could replace the socket in it, which
/// refuses the start: a directory that group or others may write without the sticky bit
/// (with it, as in /tmp, only a file's owner may remove or rename it), or one that belongs
/// to a user other than root and the agent's.
pub fn prepare_socket_dir(socket: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
    let dir = match socket.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating the socket directory {}", dir.display()))?;
            // The umask may only have taken bits away; make it exactly 0700.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("chmod 0700 {}", dir.display()))?;
            info!(dir = %dir.display(), "created the socket directory (0700)");
            return Ok(());
        }
        Err(e) => return Err(e).with_context(|| format!("the socket directory {}", dir.display())),
    };
    if !meta.is_dir() {
        bail!("the socket directory {} is not a directory", dir.display());
    }
    if let Some(why) = unsafe_socket_dir(meta.mode(), meta.uid(), nix::unistd::geteuid().as_raw()) {
        bail!(
            "the socket directory {} (mode {:04o}, owner uid {}) {why}: choose another --socket \
             directory, or a missing one (the agent creates it 0700)",
            dir.display(),
            meta.mode() & 0o7777,
            meta.uid()
        );
    }
    Ok(())
}

/// Why a directory with this mode and owner would let another user replace the agent's
/// socket (and so answer its clients), or None.
fn unsafe_socket_dir(mode: u32, owner: u32, me: u32) -> Option<String> {
    const STICKY: u32 = 0o1000;
    if owner != 0 && owner != me {
        return Some(format!(
            "belongs to uid {owner}, who could replace the socket with their own"
        ));
    }
    if mode & 0o022 != 0 && mode & STICKY == 0 {
        let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
            (true, true) => "its group and every other user",
            (true, false) => "its group",
            _ => "every other user",
        };
        return Some(format!(
            "is writable by {who} without the sticky bit, so they could replace the socket \
             with their own"
        ));
    }
    None
}

/// Binds the Unix socket (its directory prepared by `prepare_socket_dir`), replacing a stale
/// file but never a live agent's socket.
fn bind_unix(path: &Path) -> anyhow::Result<UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("another agent is serving on {}", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    let l = UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", path.display()))?;
    Ok(l)
}

/// Serves until `shutdown` turns true, then stops accepting and returns.
pub async fn serve(
    engine: Arc<Engine>,
    limits: faultline_core::wire::validate::Limits,
    caps: service::CapsFn,
    listen: Listen,
    metrics: Arc<crate::telemetry::metrics::Metrics>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (health, health_svc) = tonic_health::server::health_reporter();
    health.set_serving::<FaultServiceServer<service::Service>>().await;
    // Reflection in both versions: v1, and v1alpha that grpcui, Postman, Evans and older
    // grpcurl still ask for.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = || reflection().build_v1().context("building reflection v1");
    let reflection_v1alpha = || reflection().build_v1alpha().context("building reflection v1alpha");
    let fault_svc = FaultServiceServer::new(service::Service::new(
        engine,
        limits,
        caps,
        shutdown.clone(),
        listen.audit.clone(),
    ))
    .max_decoding_message_size(listen.max_request_bytes);

    let router = Server::builder()
        .layer(crate::telemetry::metrics::GrpcLayer(metrics.clone()))
        .add_service(health_svc.clone())
        .add_service(reflection_v1()?)
        .add_service(reflection_v1alpha()?)
        .add_service(fault_svc.clone());

    // TCP first: clients (and tests) take the Unix socket's existence as "the agent is up".
    let tcp_listener = match &listen.tcp {
        Some(tcp) => Some(
            tokio::net::TcpListener::bind(tcp.addr)
                .await
                .with_context(|| format!("binding {}", tcp.addr))?,
        ),
        None => None,
    };
    let unix = bind_unix(&listen.socket)?;
    info!(socket = %listen.socket.display(), "serving gRPC on unix socket");
    let wait = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let tcp_task = match listen.tcp.zip(tcp_listener) {
        Some((tcp, l)) => {
            let mut builder = Server::builder();
            match tcp.tls {
                Some(tls) => {
                    builder = builder.tls_config(tls).context("TLS configuration")?;
                    info!(addr = %tcp.addr, token = tcp.token.is_some(), "serving gRPC on TCP with TLS");
                }
                None => {
                    warn!(addr = %tcp.addr, "serving gRPC on plain TCP (--insecure-tcp): anyone who can reach this address controls the agent")
                }
            }
            // Health stays open to probes; everything else passes the gate.
            let gate = auth::Gate {
                token: tcp.token.map(Arc::new),
                limit: Arc::new(auth::RateLimit::new(tcp.rate, tcp.burst)),
                audit: listen.audit.clone(),
            };
            let router = builder
                .layer(crate::telemetry::metrics::GrpcLayer(metrics))
                .add_service(health_svc)
                .add_service(tonic::service::interceptor::InterceptedService::new(
                    reflection_v1()?,
                    gate.clone(),
                ))
                .add_service(tonic::service::interceptor::InterceptedService::new(
                    reflection_v1alpha()?,
                    gate.clone(),
                ))
                .add_service(tonic::service::interceptor::InterceptedService::new(fault_svc, gate));
            let rx = shutdown.clone();
            Some(tokio::spawn(async move {
                router.serve_with_incoming_shutdown(TcpListenerStream::new(l), wait(rx)).await
            }))
        }
        None => None,
    };
    let mut unix_task = tokio::spawn(
        router.serve_with_incoming_shutdown(UnixListenerStream::new(unix), wait(shutdown.clone())),
    );
    // A client that keeps its connection open must not hold the agent up: after the signal,
    // in-flight calls get a grace period, then the servers are dropped.
    let grace = async {
        wait(shutdown).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    let r = tokio::select! {
        r = &mut unix_task => r.context("unix server task")?.context("unix socket server"),
        _ = grace => {
            warn!("clients still connected after {SHUTDOWN_GRACE:?}; closing them");
            unix_task.abort();
            Ok(())
        }
    };
    let _ = std::fs::remove_file(&listen.socket);
    if let Some(t) = tcp_task {
        t.abort();
    }
    r
}

const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::unsafe_socket_dir;

    #[test]
    fn a_socket_directory_is_refused_when_another_user_could_replace_the_socket() {
        assert_eq!(unsafe_socket_dir(0o40755, 0, 0), None);
        assert_eq!(unsafe_socket_dir(0o40700, 0, 0), None);
        // Sticky, as /tmp: only the socket's owner may remove or rename it.
        assert_eq!(unsafe_socket_dir(0o41777, 0, 0), None);
        let m = unsafe_socket_dir(0o40777, 0, 0).unwrap();
        assert!(m.contains("writable by its group and every other user without the sticky"));
        assert!(unsafe_socket_dir(0o40775, 0, 0).unwrap().contains("by its group without"));
        assert!(unsafe_socket_dir(0o40757, 0, 0).unwrap().contains("by every other user"));
        assert!(unsafe_socket_dir(0o40755, 1000, 0).unwrap().contains("belongs to uid 1000"));
        // The agent's own user may own it (an agent run by that user).
        assert_eq!(unsafe_socket_dir(0o40755, 1000, 1000), None);
    }
}
