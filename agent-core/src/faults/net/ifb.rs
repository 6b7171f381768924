//! Ingress delay and pacing: an ifb device per network namespace, with fq as its root.
//!
//! A packet's departure time only means something on an egress queue. So at ingress the tc
//! program sets it and redirects the packet to an ifb device; the ifb's fq holds it until
//! then, and the ifb hands it back to the receive path of the device it came from (where the
//! program recognises it by its ingress index and lets it pass). The ifb is created with the
//! first ingress fault in a namespace, journaled (it outlives the agent), and deleted with
//! the last, or at the next start after a crash.

use std::{
    collections::HashMap,
    fs::File,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::fq::{FQ_FLOW_LIMIT, FQ_HORIZON_US, FQ_LIMIT};
use crate::{
    engine::{
        error::{Error, Result},
        model::PlanStep,
    },
    kernel::{
        netns::Netns,
        rtnl::{self, Netlink, Qdisc, TC_H_ROOT},
    },
    store::{self, BoxFuture, Recover, Store},
};

#[derive(Debug, Serialize, Deserialize)]
pub struct Record {
    netns_ino: u64,
    netns_path: PathBuf,
    name: String,
    ifindex: i32,
}

impl store::Record for Record {
    const KIND: &'static str = "ifb";
    const VERSION: u32 = 1;

    fn key(&self) -> String {
        self.netns_ino.to_string()
    }

    fn encode(&self) -> std::result::Result<Vec<u8>, String> {
        store::json::encode(self)
    }

    fn decode(_version: u32, payload: &[u8]) -> std::result::Result<Self, String> {
        store::json::decode(payload)
    }
}

struct Ifb {
    refs: usize,
    record: Record,
    netns: File,
}

pub struct Ifbs {
    journal: Store<Record>,
    by_netns: Mutex<HashMap<u64, Ifb>>,
}

/// An ifb held for one experiment.
pub struct IfbLease {
    mgr: Arc<Ifbs>,
    netns_ino: u64,
    pub ifindex: i32,
}

impl Drop for IfbLease {
    fn drop(&mut self) {
        self.mgr.release(self.netns_ino);
    }
}

impl Ifbs {
    pub fn new(state_dir: &Path) -> Self {
        Ifbs { journal: Store::new(state_dir), by_netns: Mutex::new(HashMap::new()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Ifb>> {
        self.by_netns.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn acquire(self: &Arc<Self>, netns: &Netns) -> Result<IfbLease> {
        let mut map = self.lock();
        if let Some(i) = map.get_mut(&netns.ino) {
            i.refs += 1;
            return Ok(IfbLease {
                mgr: self.clone(),
                netns_ino: netns.ino,
                ifindex: i.record.ifindex,
            });
        }
        let name = format!("flifb{}", netns.ino % 1_000_000_000);
        let mut nl = Netlink::open_in(&netns.file)
            .map_err(|e| Error::internal("netlink in the namespace", e))?;
        // Journal first: the device outlives the agent.
        let mut record = Record {
            netns_ino: netns.ino,
            netns_path: netns.path.clone(),
            name: name.clone(),
            ifindex: 0,
        };
        self.journal(&record)?;
        let created = nl.add_link(&name, "ifb").and_then(|ifindex| {
            let fq = Qdisc {
                ifindex,
                handle: 0,
                parent: TC_H_ROOT,
                kind: "fq".into(),
                options: rtnl::fq_options(FQ_LIMIT, FQ_FLOW_LIMIT, FQ_HORIZON_US),
            };
            nl.add_qdisc(&fq, true).map(|()| ifindex)
        });
        let ifindex = match created {
            Ok(i) => i,
            Err(e) => {
                if let Some(l) =
                    nl.links().ok().and_then(|ls| ls.into_iter().find(|l| l.name == name))
                {
                    let _ = nl.del_link(l.ifindex);
                }
                self.journal.remove(&netns.ino.to_string());
                return Err(Error::FailedPrecondition(format!(
                    "unsupported: ingress delay needs an ifb device with an fq qdisc: {e} (ifb or sch_fq missing?)"
                )));
            }
        };
        record.ifindex = ifindex;
        self.journal(&record)?;
        info!(device = %name, "ifb created for ingress delay");
        let file = netns.file.try_clone().map_err(|e| Error::internal("netns fd", e))?;
        map.insert(netns.ino, Ifb { refs: 1, record, netns: file });
        Ok(IfbLease { mgr: self.clone(), netns_ino: netns.ino, ifindex })
    }

    /// What `acquire` would do in `netns`, creating nothing.
    pub fn plan(&self, netns: &Netns) -> PlanStep {
        let on = format!("network namespace {}", netns.ino);
        match self.lock().get(&netns.ino) {
            Some(i) => PlanStep::new(
                format!("none to create: ifb {} is there (another fault's)", i.record.name),
                on,
            ),
            None => PlanStep::new(
                format!(
                    "create ifb device flifb{} with an fq root qdisc, received packets \
                     redirected through it; deleted at the end",
                    netns.ino % 1_000_000_000
                ),
                on,
            ),
        }
    }

    fn release(&self, ino: u64) {
        let mut map = self.lock();
        let Some(i) = map.get_mut(&ino) else { return };
        i.refs -= 1;
        if i.refs > 0 {
            return;
        }
        let Some(i) = map.remove(&ino) else { return };
        drop(map);
        if let Err(e) = Netlink::open_in(&i.netns).and_then(|mut nl| nl.del_link(i.record.ifindex))
        {
            warn!(device = %i.record.name, error = %e, "deleting the ifb");
        }
        self.journal.remove(&ino.to_string());
    }

    fn journal(&self, r: &Record) -> Result<()> {
        self.journal.put(r).map_err(|e| Error::journal("the ifb device it makes", &e))
    }
}

impl Recover for Ifbs {
    type Record = Record;

    /// Deletes the ifb devices a previous agent left.
    fn recover(&self, records: Vec<Record>) -> BoxFuture<'_> {
        for r in records {
            if let Some(ns) = Netns::find(r.netns_ino, &r.netns_path)
                && let Ok(mut nl) = Netlink::open_in(&ns.file)
                && let Some(l) =
                    nl.links().ok().and_then(|ls| ls.into_iter().find(|l| l.name == r.name))
            {
                match nl.del_link(l.ifindex) {
                    Ok(()) => info!(device = %r.name, "deleted the ifb a previous agent left"),
                    Err(err) => {
                        warn!(device = %r.name, error = %err, "could not delete a journaled ifb")
                    }
                }
            }
            self.journal.remove(&r.netns_ino.to_string());
        }
        Box::pin(std::future::ready(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_journals_of_earlier_releases() {
        for (release, r) in store::fixtures::<Record>() {
            assert!(
                r.name.starts_with("flifb") && r.ifindex > 0 && r.netns_ino > 0,
                "{release}: {r:?}"
            );
        }
    }
}
