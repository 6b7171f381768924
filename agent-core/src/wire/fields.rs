//! The value checks every fault's validation shares: durations, percentages, errno names.
//! Each refusal names the field and the allowed range.

use std::time::Duration;

use crate::engine::error::{Error, Result};

pub const MAX_CIDRS: usize = 256;

/// A non-negative, normalised protobuf Duration: seconds >= 0 and nanos in 0..=999,999,999
/// (a larger nanos would silently carry into the seconds).
pub fn proto_duration(d: &prost_types::Duration, field: &str) -> Result<Duration> {
    if d.seconds < 0 || d.nanos < 0 {
        return Err(Error::invalid(
            field,
            format!("must not be negative, got {}", crate::units::format_proto_duration(d)),
        ));
    }
    if d.nanos > 999_999_999 {
        return Err(Error::invalid(
            format!("{field}.nanos"),
            format!("must be 0..=999999999 (the rest belongs in seconds), got {}", d.nanos),
        ));
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

/// A non-negative protobuf Duration (absent is zero).
pub fn non_negative(d: Option<&prost_types::Duration>, field: &str) -> Result<Duration> {
    d.map_or(Ok(Duration::ZERO), |d| proto_duration(d, field))
}

/// An errno name or number; empty means `default`.
pub fn errno(s: &str, default: i32, field: &str) -> Result<i32> {
    if s.trim().is_empty() {
        return Ok(default);
    }
    crate::errno::parse(s).ok_or_else(|| {
        Error::invalid(
            field,
            format!("{s:?} is not an errno name (ECONNREFUSED, EIO, ...) or a number 1-4095"),
        )
    })
}

pub fn percent(p: f64, field: &str) -> Result<f64> {
    if !(p.is_finite() && p > 0.0 && p <= 100.0) {
        return Err(Error::invalid(field, format!("must be > 0 and <= 100, got {p}")));
    }
    Ok(p)
}
