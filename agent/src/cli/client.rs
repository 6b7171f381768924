//! Connecting to an agent: a Unix socket path, or an http:// or https:// URL (TLS, with a
//! client certificate for mutual TLS, and a bearer token when the agent asks for one).

use std::{path::PathBuf, sync::OnceLock};

use anyhow::Context as _;
use faultline_proto::v1::fault_service_client::FaultServiceClient;
use hyper_util::rt::TokioIo;
use tonic::{
    service::interceptor::InterceptedService,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

pub const DEFAULT_ENDPOINT: &str = "/run/faultline/faultline.sock";

pub type Client = FaultServiceClient<InterceptedService<Channel, Token>>;

/// How to reach a remote agent; set once from the command line.
#[derive(Clone, Debug, Default)]
pub struct Remote {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub token: Option<String>,
}

static REMOTE: OnceLock<Remote> = OnceLock::new();

pub fn set_remote(r: Remote) {
    let _ = REMOTE.set(r);
}

/// Adds `authorization: Bearer <token>` to every call when a token is set.
#[derive(Clone)]
pub struct Token(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Token {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

fn tls(r: &Remote) -> anyhow::Result<ClientTlsConfig> {
    let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let mut tls = ClientTlsConfig::new();
    tls = match &r.ca {
        Some(ca) => tls.ca_certificate(Certificate::from_pem(read(ca)?)),
        None => tls.with_enabled_roots(),
    };
    if let (Some(c), Some(k)) = (&r.cert, &r.key) {
        tls = tls.identity(Identity::from_pem(read(c)?, read(k)?));
    }
    Ok(tls)
}

pub async fn connect(endpoint: &str) -> anyhow::Result<Client> {
    let remote = REMOTE.get().cloned().unwrap_or_default();
    let channel = if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        let mut ep = Endpoint::from_shared(endpoint.to_string())
            .with_context(|| format!("bad endpoint {endpoint}"))?;
        if endpoint.starts_with("https://") {
            ep = ep.tls_config(tls(&remote)?).context("TLS configuration")?;
        }
        ep.connect().await.with_context(|| format!("cannot reach the agent at {endpoint}"))?
    } else {
        let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint).to_string();
        let shown = path.clone();
        // The URI is required by tonic but unused: the connector dials the socket.
        Endpoint::from_static("http://localhost")
            .connect_with_connector(tower::service_fn(move |_| {
                let path = path.clone();
                async move { tokio::net::UnixStream::connect(path).await.map(TokioIo::new) }
            }))
            .await
            .with_context(|| {
                format!("cannot reach the agent at {shown} (is `faultline serve` running?)")
            })?
    };
    let token = match &remote.token {
        Some(t) => Some(format!("Bearer {}", t.trim()).parse().context("the token is not ASCII")?),
        None => None,
    };
    Ok(FaultServiceClient::with_interceptor(channel, Token(token)))
}
