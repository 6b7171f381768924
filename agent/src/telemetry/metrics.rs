//! Prometheus metrics: rendered at scrape time from the engine's experiments, the agent's
//! own bpf link fds, and the gRPC calls counted by a tower layer.
//!
//! An experiment's series exist while it is active and for a grace period after it ends (so
//! a scrape sees its final counters), then go: label cardinality stays bounded by what is
//! active plus what ended recently.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::Mutex,
    time::{Duration, Instant, SystemTime},
};

use faultline_core::{
    counters,
    engine::{Snapshot, model::State},
};

/// Upper bounds (seconds) of the gRPC latency histogram.
const BUCKETS: [f64; 12] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
pub struct Metrics {
    /// (method, code) -> calls.
    calls: Mutex<BTreeMap<(String, String), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Metrics {
    pub fn observe_grpc(&self, method: &str, code: &str, took: Duration) {
        *lock(&self.calls).entry((method.to_string(), code.to_string())).or_default() += 1;
        let mut lat = lock(&self.latency);
        let h = lat.entry(method.to_string()).or_default();
        let s = took.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += s;
    }

    /// The exposition text for these experiments (as listed now) and link fds.
    pub fn render(
        &self,
        experiments: &[Snapshot],
        links: &[(String, String)],
        grace: Duration,
    ) -> String {
        let mut out = String::new();
        let kernel = faultline_core::caps::kernel_release();
        family(
            &mut out,
            "faultline_build_info",
            "gauge",
            "The running agent's version and kernel.",
        );
        let _ = writeln!(
            out,
            "faultline_build_info{{version=\"{}\",kernel=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION"),
            escape(&kernel)
        );

        family(
            &mut out,
            "faultline_experiments",
            "gauge",
            "Experiments the agent holds, by state and fault kind.",
        );
        let mut by: BTreeMap<(&'static str, &'static str), u64> = BTreeMap::new();
        for s in experiments {
            *by.entry((state_name(s.state), s.spec.fault.kind())).or_default() += 1;
        }
        for ((state, kind), n) in by {
            let _ = writeln!(out, "faultline_experiments{{state=\"{state}\",kind=\"{kind}\"}} {n}");
        }

        let now = SystemTime::now();
        let shown: Vec<&Snapshot> = experiments
            .iter()
            .filter(|s| match s.state {
                State::Active => true,
                State::Pending => false,
                _ => s.ended_at.is_some_and(|e| now.duration_since(e).unwrap_or_default() <= grace),
            })
            .collect();
        let labels = |s: &Snapshot| {
            let target = s.resolved.as_ref().map(|r| r.describe()).unwrap_or_default();
            format!(
                "id=\"{}\",kind=\"{}\",target=\"{}\"",
                s.id,
                s.spec.fault.kind(),
                escape(&target)
            )
        };
        family(
            &mut out,
            "faultline_experiment_active",
            "gauge",
            "1 while the experiment is in effect, 0 in its grace period after it ended.",
        );
        for s in &shown {
            let _ = writeln!(
                out,
                "faultline_experiment_active{{{}}} {}",
                labels(s),
                u8::from(s.state == State::Active)
            );
        }
        family(
            &mut out,
            "faultline_experiment_no_hit",
            "gauge",
            "1 while an active experiment has acted on nothing within its expect_hit_within \
             (check the target and filters).",
        );
        for s in shown.iter().filter(|s| s.state == State::Active) {
            let _ = writeln!(
                out,
                "faultline_experiment_no_hit{{{}}} {}",
                labels(s),
                u8::from(s.no_hit)
            );
        }
        family(
            &mut out,
            "faultline_experiment_remaining_seconds",
            "gauge",
            "Time until the experiment's deadline.",
        );
        for s in shown.iter().filter(|s| s.state == State::Active) {
            let left = s.deadline.and_then(|d| d.duration_since(now).ok()).unwrap_or_default();
            let _ = writeln!(
                out,
                "faultline_experiment_remaining_seconds{{{}}} {:.3}",
                labels(s),
                left.as_secs_f64()
            );
        }
        // Every counter of an experiment's group (faultline_core::counters declares them).
        for m in counters::ALL {
            family(&mut out, m.metric, m.metric_type.as_str(), m.help);
            let keeps =
                |s: &&&Snapshot| counters::of_kind(s.spec.fault.kind()).group() == Some(m.group);
            for s in shown.iter().filter(keeps) {
                let _ =
                    writeln!(out, "{}{{{}}} {}", m.metric, labels(s), m.metric_value(&s.counters));
            }
        }

        family(
            &mut out,
            "faultline_attached_programs",
            "gauge",
            "BPF links the agent holds, by link type and attach type.",
        );
        let mut per: BTreeMap<&(String, String), u64> = BTreeMap::new();
        for l in links {
            *per.entry(l).or_default() += 1;
        }
        for ((link, attach), n) in per {
            let _ = writeln!(
                out,
                "faultline_attached_programs{{link_type=\"{link}\",attach_type=\"{attach}\"}} {n}"
            );
        }

        family(
            &mut out,
            "faultline_grpc_requests_total",
            "counter",
            "gRPC calls served, by method and status code.",
        );
        for ((method, code), n) in lock(&self.calls).iter() {
            let _ = writeln!(
                out,
                "faultline_grpc_requests_total{{method=\"{}\",code=\"{code}\"}} {n}",
                escape(method)
            );
        }
        family(
            &mut out,
            "faultline_grpc_request_duration_seconds",
            "histogram",
            "Time to the response headers of gRPC calls.",
        );
        for (method, h) in lock(&self.latency).iter() {
            let m = escape(method);
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "faultline_grpc_request_duration_seconds_bucket{{method=\"{m}\",le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "faultline_grpc_request_duration_seconds_bucket{{method=\"{m}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "faultline_grpc_request_duration_seconds_sum{{method=\"{m}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "faultline_grpc_request_duration_seconds_count{{method=\"{m}\"}} {}",
                h.count
            );
        }
        out
    }
}

/// Every metric family the agent exports.
#[cfg(test)]
fn family_names() -> Vec<&'static str> {
    let mut v = vec![
        "faultline_build_info",
        "faultline_experiments",
        "faultline_experiment_active",
        "faultline_experiment_remaining_seconds",
        "faultline_attached_programs",
        "faultline_grpc_requests_total",
        "faultline_grpc_request_duration_seconds",
    ];
    v.extend(counters::ALL.iter().map(|m| m.metric));
    v
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn state_name(s: State) -> &'static str {
    match s {
        State::Pending => "pending",
        State::Active => "active",
        State::Expired => "expired",
        State::Cancelled => "cancelled",
        State::Failed => "failed",
        State::Aborted => "aborted",
    }
}

/// Label values escape backslash, double quote and newline.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The bpf links this process holds, as (link type, attach type) from /proc/self/fdinfo.
pub fn own_links() -> Vec<(String, String)> {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else { return Vec::new() };
    let mut out = Vec::new();
    for fd in fds.flatten() {
        if !std::fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == "anon_inode:bpf_link") {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/self/fdinfo/{}",
            fd.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        let field =
            |k: &str| info.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.trim().to_string());
        let link = field("link_type:").unwrap_or_else(|| "unknown".into());
        let attach = field("attach_type:").map(|a| attach_name(&a)).unwrap_or_default();
        out.push((link, attach));
    }
    out
}

/// Names of the attach types faultline uses (enum bpf_attach_type).
fn attach_name(raw: &str) -> String {
    let name = match raw.parse::<u32>() {
        Ok(0) => "cgroup_inet_ingress",
        Ok(1) => "cgroup_inet_egress",
        Ok(10) => "cgroup_inet4_connect",
        Ok(11) => "cgroup_inet6_connect",
        Ok(14) => "cgroup_udp4_sendmsg",
        Ok(15) => "cgroup_udp6_sendmsg",
        Ok(19) => "cgroup_udp4_recvmsg",
        Ok(20) => "cgroup_udp6_recvmsg",
        Ok(24) => "trace_fentry",
        Ok(26) => "modify_return",
        Ok(27) => "lsm_mac",
        Ok(46) => "tcx_ingress",
        Ok(47) => "tcx_egress",
        _ => return raw.to_string(),
    };
    name.to_string()
}

/// Counts gRPC calls and their latency for every service the server carries; the status is
/// the `grpc-status` of a trailers-only response (an error), else OK.
#[derive(Clone)]
pub struct GrpcLayer(pub std::sync::Arc<Metrics>);

impl<S> tower::Layer<S> for GrpcLayer {
    type Service = GrpcService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcService { inner, metrics: self.0.clone() }
    }
}

#[derive(Clone)]
pub struct GrpcService<S> {
    inner: S,
    metrics: std::sync::Arc<Metrics>,
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B, RB> tower::Service<tonic::codegen::http::Request<B>> for GrpcService<S>
where
    S: tower::Service<
            tonic::codegen::http::Request<B>,
            Response = tonic::codegen::http::Response<RB>,
        >,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: tonic::codegen::http::Request<B>) -> Self::Future {
        let method = req.uri().path().to_string();
        let t0 = Instant::now();
        let fut = self.inner.call(req);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let mut r = fut.await;
            if let Ok(resp) = &mut r {
                too_large_is_exhausted(resp.headers_mut());
            }
            let code = match &r {
                Ok(resp) => resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or("OK", |c| code_name(c)),
                Err(_) => "Unavailable",
            };
            metrics.observe_grpc(&method, code, t0.elapsed());
            r
        })
    }
}

/// tonic answers an oversized request with OUT_OF_RANGE; a size limit is a resource limit,
/// so the caller gets RESOURCE_EXHAUSTED as for the agent's other limits.
fn too_large_is_exhausted(h: &mut tonic::codegen::http::HeaderMap) {
    let oversized = h.get("grpc-status").is_some_and(|v| v == "11")
        && h.get("grpc-message").and_then(|v| v.to_str().ok()).is_some_and(|m| {
            m.contains("message%20length%20too%20large") || m.contains("message length too large")
        });
    if oversized {
        h.insert("grpc-status", tonic::codegen::http::HeaderValue::from_static("8"));
    }
}

fn code_name(c: i32) -> &'static str {
    match c {
        0 => "OK",
        1 => "Cancelled",
        2 => "Unknown",
        3 => "InvalidArgument",
        4 => "DeadlineExceeded",
        5 => "NotFound",
        6 => "AlreadyExists",
        7 => "PermissionDenied",
        8 => "ResourceExhausted",
        9 => "FailedPrecondition",
        10 => "Aborted",
        11 => "OutOfRange",
        12 => "Unimplemented",
        13 => "Internal",
        14 => "Unavailable",
        15 => "DataLoss",
        16 => "Unauthenticated",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_and_calls_render_in_exposition_format() {
        let m = Metrics::default();
        m.observe_grpc("/faultline.v1.FaultService/Inject", "OK", Duration::from_millis(2));
        m.observe_grpc(
            "/faultline.v1.FaultService/Inject",
            "InvalidArgument",
            Duration::from_millis(20),
        );
        let text = m.render(
            &[],
            &[("cgroup".into(), "cgroup_inet_egress".into())],
            Duration::from_secs(1),
        );
        assert!(text.contains("faultline_grpc_requests_total{method=\"/faultline.v1.FaultService/Inject\",code=\"OK\"} 1"));
        assert!(text.contains("le=\"0.005\"} 1\n"), "{text}");
        assert!(text.contains("le=\"0.025\"} 2\n"));
        assert!(text.contains("le=\"+Inf\"} 2\n"));
        assert!(text.contains(
            "faultline_attached_programs{link_type=\"cgroup\",attach_type=\"cgroup_inet_egress\"} 1"
        ));
        for name in family_names() {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} not declared");
        }
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
