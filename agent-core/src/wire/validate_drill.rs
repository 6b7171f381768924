//! Validation of what controls an experiment in flight rather than the fault itself: stop
//! conditions, the no-hit mark's delay, following a restarted container.

use std::time::Duration;

use faultline_proto::v1 as pb;

use super::fields::proto_duration;
use crate::engine::{
    error::{Error, Result},
    model::{DEFAULT_EXPECT_HIT_WITHIN, HTTP_PROBE_TIMEOUT, Resource, StopCondition, TargetSpec},
};
use crate::units::human_duration;

pub const MAX_STOP_CONDITIONS: usize = 8;
pub const MAX_HTTP_FAILURES: u32 = 100;

pub fn stop_conditions(list: &[pb::StopCondition]) -> Result<Vec<StopCondition>> {
    if list.len() > MAX_STOP_CONDITIONS {
        return Err(Error::invalid(
            "stop_conditions",
            format!("at most {MAX_STOP_CONDITIONS}, got {}", list.len()),
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, c)| stop_condition(c, &format!("stop_conditions[{i}]")))
        .collect()
}

fn stop_condition(c: &pb::StopCondition, field: &str) -> Result<StopCondition> {
    use pb::stop_condition::Condition;
    match &c.condition {
        None => Err(Error::invalid(
            field,
            "one of pressure, oom_kill, no_processes or http is required",
        )),
        Some(Condition::OomKill(_)) => Ok(StopCondition::OomKill),
        Some(Condition::NoProcesses(_)) => Ok(StopCondition::NoProcesses),
        Some(Condition::Pressure(p)) => {
            let resource = match pb::Resource::try_from(p.resource) {
                Ok(pb::Resource::Cpu) => Resource::Cpu,
                Ok(pb::Resource::Memory) => Resource::Memory,
                Ok(pb::Resource::Io) => Resource::Io,
                _ => {
                    return Err(Error::invalid(
                        format!("{field}.pressure.resource"),
                        format!("must be CPU, MEMORY or IO, got {}", p.resource),
                    ));
                }
            };
            let v = p.above_percent;
            if !(v > 0.0 && v < 100.0) {
                return Err(Error::invalid(
                    format!("{field}.pressure.above_percent"),
                    format!("must be above 0 and below 100, got {v}"),
                ));
            }
            Ok(StopCondition::Pressure { resource, above_percent: v })
        }
        Some(Condition::Http(h)) => {
            let f = format!("{field}.http");
            http_url(&h.url, &format!("{f}.url"))?;
            let timeout = match &h.timeout {
                None => HTTP_PROBE_TIMEOUT,
                Some(d) => {
                    let t = proto_duration(d, &format!("{f}.timeout"))?;
                    if !(Duration::from_millis(50)..=Duration::from_secs(10)).contains(&t) {
                        return Err(Error::invalid(
                            format!("{f}.timeout"),
                            format!("must be 50ms to 10s, got {}", human_duration(t)),
                        ));
                    }
                    t
                }
            };
            let failures = match h.failures {
                0 => 1,
                n if n <= MAX_HTTP_FAILURES => n,
                n => {
                    return Err(Error::invalid(
                        format!("{f}.failures"),
                        format!("must be 1 to {MAX_HTTP_FAILURES}, got {n}"),
                    ));
                }
            };
            Ok(StopCondition::Http { url: h.url.clone(), timeout, failures })
        }
    }
}

/// The parts of an http:// URL: host, port (80 unless given) and path ("/" unless given).
pub fn http_url(url: &str, field: &str) -> Result<(String, u16, String)> {
    let bad = |why: &str| {
        Error::invalid(field, format!("must be http://HOST[:PORT][/PATH] ({why}), got {url:?}"))
    };
    let rest = url.strip_prefix("http://").ok_or_else(|| bad("http only"))?;
    if url.len() > 2048 || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("no spaces, at most 2048 characters"));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.contains('@') {
        return Err(bad("no user info"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad("bad port"))?,
            None if after.is_empty() => 80,
            None => return Err(bad("bad port")),
        };
        (h.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad("bad port"))?),
            None => (authority.to_string(), 80),
        }
    };
    if host.is_empty() || port == 0 {
        return Err(bad("a host and a non-zero port"));
    }
    Ok((host, port, path.to_string()))
}

pub fn expect_hit_within(d: Option<&prost_types::Duration>) -> Result<Duration> {
    let Some(d) = d else { return Ok(DEFAULT_EXPECT_HIT_WITHIN) };
    let v = proto_duration(d, "expect_hit_within")?;
    if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&v) {
        return Err(Error::invalid(
            "expect_hit_within",
            format!("must be 1s to 1h, got {}", human_duration(v)),
        ));
    }
    Ok(v)
}

/// Follow needs a target that names a container the runtime may restart.
pub fn follow(follow: bool, target: &TargetSpec) -> Result<bool> {
    let container =
        matches!(target, TargetSpec::Container(_) | TargetSpec::Pod { container: Some(_), .. });
    if follow && !container {
        return Err(Error::invalid(
            "follow",
            "applies to container and pod-container targets only (a restarted container is \
             found again by its id or by its pod and container name)",
        ));
    }
    Ok(follow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_urls() {
        assert_eq!(
            http_url("http://127.0.0.1:8080/healthz", "f").unwrap(),
            ("127.0.0.1".into(), 8080, "/healthz".into())
        );
        assert_eq!(http_url("http://svc", "f").unwrap(), ("svc".into(), 80, "/".into()));
        assert_eq!(
            http_url("http://[::1]:81/x?y=1", "f").unwrap(),
            ("::1".into(), 81, "/x?y=1".into())
        );
        for bad in [
            "https://x/",
            "http://",
            "http://x:0/",
            "http://x:99999/",
            "http://a b/",
            "http://u@x/",
            "ftp://x",
        ] {
            assert!(http_url(bad, "f").is_err(), "{bad}");
        }
    }

    #[test]
    fn stop_condition_refusals_name_their_field() {
        let p = |resource, above_percent| pb::StopCondition {
            condition: Some(pb::stop_condition::Condition::Pressure(pb::Pressure {
                resource,
                above_percent,
            })),
        };
        let field = |r: Result<Vec<StopCondition>>| match r {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            field(stop_conditions(&[p(2, 40.0), p(2, 100.0)])),
            "stop_conditions[1].pressure.above_percent"
        );
        assert_eq!(field(stop_conditions(&[p(0, 40.0)])), "stop_conditions[0].pressure.resource");
        assert_eq!(field(stop_conditions(&[pb::StopCondition::default()])), "stop_conditions[0]");
        assert_eq!(field(stop_conditions(&vec![p(1, 5.0); 9])), "stop_conditions");
        let ok = stop_conditions(&[p(2, 40.0)]).unwrap();
        assert_eq!(ok[0].describe(), "psi.memory>40");
    }
}
