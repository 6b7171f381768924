//! One line per experiment event, for `faultline events` and a piped `get ID --watch`:
//! words, or a JSON object with the event's type and time.

use std::time::SystemTime;

use faultline_core::wire::convert::system_time as time;
use faultline_proto::v1 as pb;
use serde_json::{Value, json};

use super::{
    experiment,
    progress::{counters_text, first_hit, time_left_text},
    summary::{fault_summary, target_summary},
};
use crate::cli::Output;

/// What an event is, by the API's name for it (EventType without its prefix): "STATE",
/// "SNAPSHOT", "FIRST_HIT" (an agent that sends no type only sends state changes).
pub fn event_name(t: i32) -> &'static str {
    match pb::EventType::try_from(t) {
        Ok(pb::EventType::Snapshot) => "SNAPSHOT",
        Ok(pb::EventType::FirstHit) => "FIRST_HIT",
        Ok(pb::EventType::NoHit) => "NO_HIT",
        Ok(pb::EventType::Followed) => "FOLLOWED",
        _ => "STATE",
    }
}

/// One line per event: time, type, and the experiment in words.
pub fn event_line(
    kind: &str,
    at: Option<&prost_types::Timestamp>,
    e: &pb::Experiment,
    now: SystemTime,
) -> String {
    let at = time(at).unwrap_or(now);
    [
        humantime::format_rfc3339_millis(at).to_string(),
        format!("{kind:<9}"),
        e.id.clone(),
        format!("{:<9}", experiment::state_cell(e)),
        fault_summary(e.fault.as_ref()),
        target_summary(e),
        format!("first hit {}", first_hit(e)),
        counters_text(e),
        time_left_text(e, now),
    ]
    .join("  ")
}

fn event_json(kind: &str, at: Option<&prost_types::Timestamp>, e: &pb::Experiment) -> Value {
    let mut v = serde_json::to_value(experiment::experiment_json(e)).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("event".into(), json!(kind));
        let at = experiment::rfc3339(at)
            .unwrap_or_else(|| humantime::format_rfc3339_millis(SystemTime::now()).to_string());
        m.insert("time".into(), json!(at));
    }
    v
}

/// The line of one event as `output` wants it.
pub fn event_text(
    output: Output,
    kind: &str,
    at: Option<&prost_types::Timestamp>,
    e: &pb::Experiment,
) -> String {
    match output {
        Output::Json => event_json(kind, at, e).to_string(),
        Output::Table => event_line(kind, at, e, SystemTime::now()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cli::display::fixtures::{loss, t0};

    #[test]
    fn event_lines_name_the_type() {
        let now = t0() + Duration::from_secs(18);
        let e = loss("aaaaaaaaaaaa", pb::State::Active, t0(), 60);
        let l = event_line(event_name(pb::EventType::Snapshot as i32), None, &e, now);
        assert!(l.contains("  SNAPSHOT   aaaaaaaaaaaa  active"), "{l}");
        assert!(l.ends_with("matched 1000 dropped 503  42s left"), "{l}");
        // The API's names, as the README writes them.
        assert_eq!(event_name(0), "STATE");
        assert_eq!(event_name(pb::EventType::State as i32), "STATE");
        assert_eq!(event_name(pb::EventType::FirstHit as i32), "FIRST_HIT");
        let j = event_text(Output::Json, event_name(pb::EventType::FirstHit as i32), None, &e);
        let v: Value = serde_json::from_str(&j).unwrap_or_default();
        assert_eq!(v["event"], "FIRST_HIT", "{j}");
    }
}
