//! The experiment journal: one record per experiment in effect, written (and fsync'd) before
//! the fault is applied and removed once it is reverted. What a killed agent leaves here is
//! what the next start resumes, or records as ended.
//!
//! A record is the experiment in its wire form (the proto is the one stable encoding the
//! project keeps), in the store's framing (crate::store).

use std::sync::Arc;

use faultline_proto::v1 as pb;
use prost::Message as _;
use tracing::info;

use super::Engine;
use crate::store::{self, BoxFuture, Record, Recover, Store};

pub type Journal = Store<pb::Experiment>;

/// The experiments' step at start, after every driver undid what a killed agent left in the
/// kernel: each journaled experiment is resumed for what remains of it (or, without
/// `resume`, recorded as cancelled), or recorded as expired.
pub struct Resume {
    pub engine: Arc<Engine>,
    pub resume: bool,
}

impl Recover for Resume {
    type Record = pb::Experiment;

    fn recover(&self, records: Vec<pb::Experiment>) -> BoxFuture<'_> {
        Box::pin(async move {
            let r = self.engine.recover(records, self.resume).await;
            if r != Default::default() {
                info!(
                    resumed = r.resumed,
                    expired = r.expired,
                    not_resumed = r.not_resumed,
                    failed = r.failed,
                    invalid = r.corrupt,
                    "journal recovered"
                );
            }
        })
    }
}

impl Record for pb::Experiment {
    const KIND: &'static str = "experiments";
    const VERSION: u32 = 1;

    fn key(&self) -> String {
        self.id.clone()
    }

    fn encode(&self) -> Result<Vec<u8>, String> {
        Ok(self.encode_to_vec())
    }

    fn decode(_version: u32, payload: &[u8]) -> Result<Self, String> {
        let e = <pb::Experiment as prost::Message>::decode(payload).map_err(|e| e.to_string())?;
        if e.id.is_empty() || !e.id.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("bad experiment id {:?}", e.id));
        }
        Ok(e)
    }
}

/// The request a journaled experiment is re-validated from at start.
pub fn request_of(e: &pb::Experiment) -> pb::InjectRequest {
    pb::InjectRequest {
        target: e.target.clone(),
        fault: e.fault.clone(),
        duration: e.duration,
        labels: e.labels.clone(),
        lease: e.lease,
        stop_conditions: e.stop_conditions.clone(),
        dry_run: false,
        expect_hit_within: e.expect_hit_within,
        follow: e.follow,
    }
}

/// A journaled timestamp as wall-clock time; None when unset or out of range.
pub fn time_of(t: &Option<prost_types::Timestamp>) -> Option<std::time::SystemTime> {
    crate::wire::convert::system_time(t.as_ref())
}

/// The journal file of `e`.
pub fn encode(e: &pb::Experiment) -> Vec<u8> {
    // The protobuf encoding cannot fail, and no experiment nears the size limit.
    store::encode(e).unwrap_or_default()
}

/// Reads one journal file; never panics, whatever the bytes.
pub fn decode(b: &[u8]) -> Result<pb::Experiment, String> {
    store::decode(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    /// Every experiment an earlier release journaled is read, and its request is one this
    /// release still accepts (a resumed experiment is validated as a new one is).
    #[test]
    fn reads_the_journals_of_earlier_releases_and_accepts_their_requests() {
        let all = crate::store::fixtures::<pb::Experiment>();
        let mut faults = std::collections::BTreeSet::new();
        for (release, e) in &all {
            assert_eq!(e.labels.get("fixture"), Some(release), "{e:?}");
            let req = request_of(e);
            let spec = crate::wire::validate::inject(&req, &Default::default())
                .unwrap_or_else(|err| panic!("release {release}, {}: {err}", e.id));
            faults
                .insert(format!("{:?}", spec.fault).split(['(', ' ']).next().unwrap().to_string());
        }
        // The families whose records carry state beyond the agent's descriptors, at least.
        for f in ["NetLoss", "NetDelay", "NetCorrupt", "CpuStress", "ProcessPause", "SyscallDelay"]
        {
            assert!(faults.contains(f), "no {f} experiment in the fixtures: {faults:?}");
        }
    }

    fn exp(id: &str) -> pb::Experiment {
        pb::Experiment { id: id.into(), reason: "r".into(), ..Default::default() }
    }

    #[test]
    fn round_trip_and_every_damage_is_caught() {
        let e = exp("0a1b2c3d4e5f");
        let b = encode(&e);
        assert_eq!(decode(&b).unwrap(), e);
        for cut in 0..b.len() {
            assert!(decode(&b[..cut]).is_err(), "truncated at {cut} accepted");
        }
        for i in 0..b.len() {
            let mut x = b.clone();
            x[i] ^= 0x40;
            assert!(decode(&x).is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn ids_that_are_not_hex_are_refused() {
        for id in ["", "../x", "zz"] {
            let b = store::encode(&exp(id)).unwrap();
            assert!(decode(&b).unwrap_err().contains("bad experiment id"), "{id:?}");
        }
    }

    #[test]
    fn replay_moves_corrupt_entries_aside_and_keeps_the_rest() {
        let d = TempDir::new();
        let j = Journal::new(d.path());
        j.put(&exp("aaaa")).unwrap();
        j.put(&exp("bbbb")).unwrap();
        let bad = j.dir().join("bbbb.rec");
        let len = std::fs::metadata(&bad).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&bad).unwrap().set_len(len - 3).unwrap();
        let r = j.replay();
        assert_eq!(r.records.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["aaaa"]);
        assert_eq!(r.aside.len(), 1);
        assert!(r.aside[0].path.ends_with("experiments/bbbb.corrupt"));
        assert!(r.aside[0].why.contains("truncated"), "{}", r.aside[0].why);
        j.remove("aaaa");
        assert_eq!(j.replay().records.len(), 0);
    }
}
