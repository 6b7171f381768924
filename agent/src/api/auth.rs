//! Who is calling, and whether they may: the bearer token and per-client rate limit of the
//! TCP listener. The Unix socket is 0600 root, so the file system has already decided there.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use tonic::{Request, Status};

use super::audit::Audit;

/// "unix:uid=0,pid=42", "tcp:10.0.0.7:51234 cert:CN=ci-runner", for logs and limits.
pub fn client_of<T>(req: &Request<T>) -> String {
    if let Some(info) = req.extensions().get::<tonic::transport::server::UdsConnectInfo>() {
        return match info.peer_cred {
            Some(c) => format!("unix:uid={},pid={}", c.uid(), c.pid().unwrap_or(0)),
            None => "unix".into(),
        };
    }
    let mut who = req.remote_addr().map_or_else(|| "tcp".into(), |a| format!("tcp:{a}"));
    if let Some(cn) = req.peer_certs().and_then(|c| c.first().and_then(|c| subject_cn(c))) {
        who.push_str(&format!(" cert:CN={cn}"));
    }
    who
}

/// The subject's common name of a DER certificate: the last CN attribute (OID 2.5.4.3) in
/// it, since the issuer's comes first. Enough for naming the caller; not used to decide.
fn subject_cn(der: &[u8]) -> Option<String> {
    let oid = [0x06, 0x03, 0x55, 0x04, 0x03];
    let at = der.windows(oid.len()).rposition(|w| w == oid)? + oid.len();
    let (tag, len) = (*der.get(at)?, *der.get(at + 1)? as usize);
    // UTF8String, PrintableString, IA5String; short form lengths only.
    if ![0x0c, 0x13, 0x16].contains(&tag) || len > 127 {
        return None;
    }
    String::from_utf8(der.get(at + 2..at + 2 + len)?.to_vec()).ok()
}

/// A token bucket per client: `rate` calls per second, bursts of `burst`.
pub struct RateLimit {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimit {
    pub fn new(rate: f64, burst: f64) -> RateLimit {
        RateLimit { rate, burst, buckets: Mutex::new(HashMap::new()) }
    }

    pub fn allow(&self, client: &str) -> bool {
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        // Bounded: idle full buckets are the same as no bucket.
        if b.len() > 10_000 {
            let (rate, burst) = (self.rate, self.burst);
            b.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = b.entry(client.to_string()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Checks every call on the TCP listener: the token (when one is configured), then the
/// client's rate. Refusals are audited.
#[derive(Clone)]
pub struct Gate {
    pub token: Option<Arc<String>>,
    pub limit: Arc<RateLimit>,
    pub audit: Arc<Audit>,
}

impl tonic::service::Interceptor for Gate {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let who = client_of(&req);
        if let Some(token) = &self.token {
            let got = req.metadata().get("authorization").and_then(|v| v.to_str().ok());
            let want = format!("Bearer {token}");
            if !got.is_some_and(|g| constant_time_eq(g.as_bytes(), want.as_bytes())) {
                let s = Status::unauthenticated(
                    "a valid bearer token is required (authorization: Bearer ...)",
                );
                self.audit.record(&who, "call", &super::audit::refusal(&s));
                return Err(s);
            }
        }
        if !self.limit.allow(&who) {
            let s = Status::resource_exhausted(format!(
                "rate limit: at most {} calls/s per client, bursts of {}",
                self.limit.rate, self.limit.burst
            ));
            self.audit.record(&who, "call", &super::audit::refusal(&s));
            return Err(s);
        }
        Ok(req)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refill_and_are_per_client() {
        let l = RateLimit::new(1000.0, 3.0);
        assert!(l.allow("a") && l.allow("a") && l.allow("a"));
        assert!(!l.allow("a"), "burst of 3");
        assert!(l.allow("b"), "another client has its own bucket");
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(l.allow("a"), "refilled");
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"Bearer x", b"Bearer x"));
        assert!(!constant_time_eq(b"Bearer x", b"Bearer y"));
        assert!(!constant_time_eq(b"Bearer", b"Bearer x"));
    }
}
