//! The audit log: one JSON line per Inject, Cancel and refusal (who, what, when, result),
//! appended to a file that only root can read.

use std::{
    fs::File, io::Write as _, os::unix::fs::OpenOptionsExt as _, path::Path, sync::Mutex,
    time::SystemTime,
};

use serde_json::json;
use tracing::warn;

pub struct Audit {
    file: Mutex<File>,
}

impl Audit {
    pub fn open(path: &Path) -> anyhow::Result<Audit> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| anyhow::anyhow!("opening audit log {}: {e}", path.display()))?;
        Ok(Audit { file: Mutex::new(file) })
    }

    /// `result` is "ok" or the refusal ("InvalidArgument: fault.net_loss.percent: ...").
    pub fn record(&self, who: &str, what: &str, result: &str) {
        let line = json!({
            "time": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            "who": who,
            "what": what,
            "result": result,
        });
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        // One write per line: O_APPEND keeps lines whole even with other writers.
        if let Err(e) = f.write_all(format!("{line}\n").as_bytes()) {
            warn!(error = %e, "writing the audit log");
        }
    }
}

/// How a refusal reads in the log.
pub fn refusal(s: &tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}
