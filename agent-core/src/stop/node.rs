//! The policy's node-wide guards: the node's pressure (/proc/pressure) above a percent, or
//! its available memory (MemAvailable) below a size. The first that holds halts the agent:
//! every experiment ends, and new ones are refused until `faultline resume`.

use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::{Held, cgroup};
use crate::engine::model::Resource;

/// `[guards]` as the policy file writes it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardsFile {
    node_psi_cpu_above: Option<Spanned<f64>>,
    node_psi_memory_above: Option<Spanned<f64>>,
    node_psi_io_above: Option<Spanned<f64>>,
    min_available_memory: Option<Spanned<String>>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Guards {
    /// Halt when the node's "some avg10" of a resource is above the percent.
    pub pressure: Vec<(Resource, f64)>,
    /// Halt when MemAvailable falls below these bytes.
    pub min_available_memory: Option<u64>,
}

/// A refusal of the file: where (the value's span) and why.
pub type GuardError = (std::ops::Range<usize>, String);

impl Guards {
    /// A percent for min_available_memory is of `host_memory`.
    pub fn from_file(f: GuardsFile, host_memory: u64) -> Result<Guards, GuardError> {
        let mut g = Guards::default();
        for (key, resource, v) in [
            ("node_psi_cpu_above", Resource::Cpu, f.node_psi_cpu_above),
            ("node_psi_memory_above", Resource::Memory, f.node_psi_memory_above),
            ("node_psi_io_above", Resource::Io, f.node_psi_io_above),
        ] {
            let Some(v) = v else { continue };
            let pct = *v.get_ref();
            if !(pct > 0.0 && pct < 100.0) {
                return Err((v.span(), format!("guards.{key}: must be above 0 and below 100")));
            }
            g.pressure.push((resource, pct));
        }
        if let Some(v) = f.min_available_memory {
            let written = v.get_ref().trim();
            let bytes = match written.strip_suffix('%') {
                Some(n) => match n.trim().parse::<f64>() {
                    Ok(p) if p > 0.0 && p < 100.0 => (host_memory as f64 * p / 100.0) as u64,
                    _ => {
                        return Err((
                            v.span(),
                            format!("guards.min_available_memory: {written:?}: a percent must be above 0 and below 100"),
                        ));
                    }
                },
                None => crate::units::parse_bytes(written).map_err(|e| {
                    (
                        v.span(),
                        format!("guards.min_available_memory: {e}, or a percent of the host's memory (5%)"),
                    )
                })?,
            };
            g.min_available_memory = Some(bytes);
        }
        Ok(g)
    }

    pub fn is_empty(&self) -> bool {
        self.pressure.is_empty() && self.min_available_memory.is_none()
    }

    /// For the start log.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> =
            self.pressure.iter().map(|(r, p)| format!("node psi.{}>{p}", r.name())).collect();
        if let Some(b) = self.min_available_memory {
            parts.push(format!("available memory<{}", crate::units::human_bytes(b)));
        }
        if parts.is_empty() { "none".into() } else { parts.join(", ") }
    }

    /// Whether the node gives what the guards read; Err says what is missing.
    pub fn check_readable(&self) -> Result<(), String> {
        for (r, _) in &self.pressure {
            cgroup::read_pressure(&cgroup::node_pressure_file(*r))
                .map_err(|why| format!("guard node psi.{} needs PSI: {why}", r.name()))?;
        }
        if self.min_available_memory.is_some() {
            available_memory(Path::new("/proc/meminfo"))
                .ok_or("guard min_available_memory: no MemAvailable in /proc/meminfo")?;
        }
        Ok(())
    }

    /// The first guard that holds now, if one does.
    pub fn holding(&self) -> Option<Held> {
        for (r, above) in &self.pressure {
            if let Ok(v) = cgroup::read_pressure(&cgroup::node_pressure_file(*r))
                && v > *above
            {
                return Some(Held {
                    condition: format!("node psi.{}>{above}", r.name()),
                    value: format!("node {} some avg10 {v:.2}%", r.name()),
                });
            }
        }
        if let Some(min) = self.min_available_memory
            && let Some(avail) = available_memory(Path::new("/proc/meminfo"))
            && avail < min
        {
            return Some(Held {
                condition: format!("available memory<{}", crate::units::human_bytes(min)),
                value: format!("MemAvailable {}", crate::units::human_bytes(avail)),
            });
        }
        None
    }

    /// Evaluates every `super::PERIOD` until a guard holds (never, with no guards).
    pub async fn first_to_hold(&self) -> Held {
        if self.is_empty() {
            return std::future::pending().await;
        }
        let mut tick = tokio::time::interval(super::PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let g = self.clone();
            // File reads, off the async threads.
            if let Ok(Some(held)) = tokio::task::spawn_blocking(move || g.holding()).await {
                return held;
            }
        }
    }
}

/// MemAvailable in bytes.
pub fn available_memory(meminfo: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(meminfo).ok()?;
    meminfo_field(&text, "MemAvailable:")
}

fn meminfo_field(text: &str, key: &str) -> Option<u64> {
    let kib: u64 =
        text.lines().find_map(|l| l.strip_prefix(key))?.split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<Guards, GuardError> {
        Guards::from_file(toml::from_str(t).unwrap(), 1 << 34)
    }

    #[test]
    fn reads_the_guards_table() {
        let g = parse("node_psi_memory_above = 40\nmin_available_memory = \"512MiB\"\n").unwrap();
        assert_eq!(g.pressure, vec![(Resource::Memory, 40.0)]);
        assert_eq!(g.min_available_memory, Some(512 << 20));
        assert_eq!(g.summary(), "node psi.memory>40, available memory<512MiB");
        assert_eq!(
            parse("min_available_memory = \"25%\"\n").unwrap().min_available_memory,
            Some(1 << 32)
        );
        assert!(
            parse("node_psi_cpu_above = 100\n")
                .unwrap_err()
                .1
                .contains("guards.node_psi_cpu_above")
        );
        assert!(
            parse("min_available_memory = \"lots\"\n")
                .unwrap_err()
                .1
                .contains("min_available_memory")
        );
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn meminfo() {
        let t = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(meminfo_field(t, "MemAvailable:"), Some(2 << 20));
        assert!(available_memory(Path::new("/proc/meminfo")).unwrap() > 0);
    }
}
