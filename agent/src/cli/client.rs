//! Connecting to an agent: a Unix socket path, or an http:// or https:// URL (TLS, with a
//! client certificate for mutual TLS, and a bearer token when the agent asks for one); for
//! the commands that keep running, a connection that is made again after it broke.

use std::{path::PathBuf, sync::OnceLock, time::Duration};

use anyhow::Context as _;
use faultline_proto::v1::{self as pb, fault_service_client::FaultServiceClient};
use hyper_util::rt::TokioIo;
use tonic::{
    Code,
    service::interceptor::InterceptedService,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

use super::output::{self, Coded, code_name};

pub const DEFAULT_ENDPOINT: &str = "/run/faultline/faultline.sock";

pub type Client = FaultServiceClient<InterceptedService<Channel, Token>>;

/// How to reach a remote agent; set once from the command line.
#[derive(Clone, Debug, Default, PartialEq)]
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

/// Whether the endpoint is TCP (another node, or this one over the network) rather than the
/// local Unix socket.
pub fn is_remote(endpoint: &str) -> bool {
    endpoint.starts_with("http://") || endpoint.starts_with("https://")
}

pub async fn connect(endpoint: &str) -> anyhow::Result<Client> {
    let remote = REMOTE.get().cloned().unwrap_or_default();
    let channel = if is_remote(endpoint) {
        let mut ep = Endpoint::from_shared(endpoint.to_string())
            .with_context(|| format!("bad endpoint {endpoint}"))?;
        if endpoint.starts_with("https://") {
            ep = ep.tls_config(tls(&remote)?).context("TLS configuration")?;
        }
        ep.connect().await.with_context(|| {
            Coded::quiet(Code::Unavailable, format!("cannot reach the agent at {endpoint}"))
        })?
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
                Coded::quiet(
                    Code::Unavailable,
                    format!("cannot reach the agent at {shown} (is `faultline serve` running?)"),
                )
            })?
    };
    let token = match &remote.token {
        Some(t) => Some(format!("Bearer {}", t.trim()).parse().context("the token is not ASCII")?),
        None => None,
    };
    Ok(FaultServiceClient::with_interceptor(channel, Token(token)))
}

/// gRPC errors become one line: "<CODE>: <message>", with the code kept for `-o json`.
pub fn status(s: tonic::Status) -> anyhow::Error {
    output::from_status(s)
}

/// The shortest experiment id prefix looked up among all experiments (as container ids).
pub const MIN_ID_PREFIX: usize = 4;

/// The experiment that `given` names: its id, or a unique prefix of one (case-insensitive, at
/// least `MIN_ID_PREFIX` characters), as `docker` takes container ids. An ambiguous prefix is
/// refused naming the matches; no match is NOT_FOUND.
pub async fn find_experiment(c: &mut Client, given: &str) -> anyhow::Result<pb::Experiment> {
    match c.get(pb::GetRequest { id: given.to_string() }).await {
        Ok(e) => return Ok(e.into_inner()),
        Err(s) if s.code() == Code::NotFound && !given.is_empty() => {}
        Err(s) => return Err(status(s)),
    }
    let list = c.list(pb::ListRequest::default()).await.map_err(status)?.into_inner().experiments;
    pick(given, list).map_err(Into::into)
}

/// The experiment of `list` whose id `given` begins (see `find_experiment`).
pub fn pick(given: &str, mut list: Vec<pb::Experiment>) -> Result<pb::Experiment, Coded> {
    let prefix = given.trim().to_ascii_lowercase();
    if let Some(i) = list.iter().position(|e| e.id == prefix) {
        return Ok(list.swap_remove(i));
    }
    if prefix.chars().count() < MIN_ID_PREFIX {
        return Err(Coded::new(
            Code::NotFound,
            format!(
                "no experiment {given} (an id prefix needs at least {MIN_ID_PREFIX} characters)"
            ),
        ));
    }
    let mut found: Vec<pb::Experiment> =
        list.into_iter().filter(|e| e.id.starts_with(&prefix)).collect();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => {
            Err(Coded::new(Code::NotFound, format!("no experiment {given}: no id begins with it")))
        }
        _ => {
            let ids: Vec<&str> = found.iter().map(|e| e.id.as_str()).collect();
            Err(Coded::new(
                Code::InvalidArgument,
                format!("{given} is ambiguous: it begins {}", ids.join(", ")),
            ))
        }
    }
}

/// A connection to the agent that is made again after it broke.
pub struct Agent {
    endpoint: String,
    /// The connection; None after a failed call, so the next call makes a new one.
    pub(super) client: Option<Client>,
    /// Longest wait for a connection or an answer.
    timeout: Duration,
}

/// Why a call to the agent did not give an answer.
pub enum Failure {
    /// The agent said no such experiment (its message).
    NotFound(String),
    /// Not reachable, or an error worth retrying: the text for the status line.
    Retry(String),
}

impl Agent {
    pub fn new(endpoint: &str, interval: Duration) -> Agent {
        Agent {
            endpoint: endpoint.to_string(),
            client: None,
            timeout: interval.max(Duration::from_secs(3)),
        }
    }

    async fn client(&mut self) -> Result<Client, Failure> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let c = match tokio::time::timeout(self.timeout, connect(&self.endpoint)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(self.unreachable(&e.root_cause().to_string())),
            Err(_) => return Err(self.unreachable("no answer")),
        };
        self.client = Some(c.clone());
        Ok(c)
    }

    fn unreachable(&self, why: &str) -> Failure {
        Failure::Retry(format!("agent unreachable at {}: {why}", self.endpoint))
    }

    /// Runs one call; a failed one drops the connection, so the next call makes a new one.
    pub async fn call<T>(
        &mut self,
        f: impl AsyncFnOnce(Client) -> Result<T, tonic::Status>,
    ) -> Result<T, Failure> {
        let c = self.client().await?;
        let r = tokio::time::timeout(self.timeout, f(c)).await;
        let s = match r {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(s)) => s,
            Err(_) => tonic::Status::deadline_exceeded("no answer"),
        };
        self.client = None;
        Err(match s.code() {
            Code::NotFound => Failure::NotFound(s.message().to_string()),
            Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded => {
                self.unreachable(s.message())
            }
            code => Failure::Retry(format!("agent error: {}: {}", code_name(code), s.message())),
        })
    }

    pub async fn list(&mut self) -> Result<Vec<pb::Experiment>, Failure> {
        self.call(async |mut c| {
            c.list(pb::ListRequest::default()).await.map(|r| r.into_inner().experiments)
        })
        .await
    }

    pub async fn get(&mut self, id: &str) -> Result<pb::Experiment, Failure> {
        let req = pb::GetRequest { id: id.to_string() };
        self.call(async |mut c| c.get(req).await.map(|r| r.into_inner())).await
    }
}

impl Failure {
    pub fn text(self) -> String {
        match self {
            Failure::NotFound(s) => format!("{}: {s}", code_name(Code::NotFound)),
            Failure::Retry(s) => s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(ids: &[&str]) -> Vec<pb::Experiment> {
        ids.iter().map(|id| pb::Experiment { id: id.to_string(), ..Default::default() }).collect()
    }

    #[test]
    fn ids_by_unique_prefix() {
        let l = || list(&["2f4c81a09b3e", "2f4c99000000", "a0b1c2d3e4f5"]);
        assert_eq!(pick("a0b1c2d3e4f5", l()).unwrap().id, "a0b1c2d3e4f5");
        assert_eq!(pick("a0b1", l()).unwrap().id, "a0b1c2d3e4f5");
        assert_eq!(pick("A0B1C", l()).unwrap().id, "a0b1c2d3e4f5");
        assert_eq!(pick("2f4c8", l()).unwrap().id, "2f4c81a09b3e");
        let ambiguous = pick("2f4c", l()).unwrap_err();
        assert_eq!(ambiguous.code, Code::InvalidArgument);
        assert_eq!(
            ambiguous.to_string(),
            "INVALID_ARGUMENT: 2f4c is ambiguous: it begins 2f4c81a09b3e, 2f4c99000000"
        );
        let none = pick("ffff", l()).unwrap_err();
        assert_eq!(none.code, Code::NotFound);
        assert_eq!(none.to_string(), "NOT_FOUND: no experiment ffff: no id begins with it");
        // Too short to be a prefix: only an exact id.
        let short = pick("a0b", l()).unwrap_err();
        assert_eq!(short.code, Code::NotFound);
        assert!(short.message.contains("at least 4 characters"), "{short}");
        assert_eq!(pick("ab", list(&["ab"])).unwrap().id, "ab");
    }
}
