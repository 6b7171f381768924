//! fq on egress devices, only while a delay or bandwidth fault needs it.
//!
//! EDT faults set `skb->tstamp`; only the fq qdisc holds packets until then. Before fq
//! replaces what a device had, the original is written (fsync'd) to a journal file in the
//! state dir; when the last fault using the device ends it is put back and the file removed.
//! A journal file found at start means the agent died with fq installed: `recover` restores
//! the original then. Multi-queue devices keep their mq root and get one fq per TX queue, as
//! Cilium's bandwidth manager does, rather than one root fq serialising every queue.

use std::{
    collections::HashMap,
    fs::File,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::kernel::rtnl::{self, Netlink, Qdisc, TC_H_ROOT};
use crate::{
    engine::{
        error::{Error, Result},
        model::PlanStep,
    },
    kernel::netns::Netns,
    store::{self, BoxFuture, Recover, Store},
};

/// fq sized so a delay does not turn into loss: per-flow and total packet limits far above
/// fq's defaults (100 per flow), and a 60 s horizon that caps rather than drops.
pub const FQ_LIMIT: u32 = 100_000;
pub const FQ_FLOW_LIMIT: u32 = 10_000;
pub const FQ_HORIZON_US: u32 = 60_000_000;

/// Roots faultline will not replace: their classes and filters could not be put back.
const CLASSFUL: &[&str] =
    &["htb", "hfsc", "prio", "cbq", "drr", "qfq", "ets", "multiq", "mqprio", "taprio"];

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Saved {
    pub parent: u32,
    pub handle: u32,
    pub kind: String,
    /// Raw TCA_OPTIONS, hex.
    pub options: String,
}

/// What a device had before fq.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Original {
    /// The kernel's default root (handle 0:, e.g. noqueue on lo): deleting ours brings it back.
    Default,
    /// A root someone configured: put back with its kind and options.
    Root(Saved),
    /// mq with one child per TX queue: each child is put back.
    Mq { children: Vec<Saved> },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    pub netns_ino: u64,
    /// How the namespace was opened (tried first at recovery, then a scan of /proc).
    #[serde(default)]
    pub netns_path: PathBuf,
    pub ifindex: i32,
    pub ifname: String,
    pub original: Original,
}

impl store::Record for Record {
    const KIND: &'static str = "qdisc";
    const VERSION: u32 = 1;

    fn key(&self) -> String {
        key_of((self.netns_ino, self.ifindex))
    }

    fn encode(&self) -> std::result::Result<Vec<u8>, String> {
        store::json::encode(self)
    }

    fn decode(_version: u32, payload: &[u8]) -> std::result::Result<Self, String> {
        store::json::decode(payload)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2).filter_map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()).collect()
}

fn saved(q: &Qdisc) -> Saved {
    Saved { parent: q.parent, handle: q.handle, kind: q.kind.clone(), options: hex(&q.options) }
}

/// Whether this kernel takes our fq as a root qdisc: added to `lo` of a scratch namespace
/// and deleted (the namespace goes with the probe's thread). The error is the kernel's, as
/// adding it to a real device would give it.
fn probe_fq() -> std::result::Result<(), String> {
    let r = crate::kernel::netns::in_scratch_netns(|| -> std::io::Result<()> {
        let mut nl = Netlink::open()?;
        nl.add_qdisc(&fq(1, TC_H_ROOT), true)?;
        if let Some(root) = nl.qdiscs(1)?.into_iter().find(|q| q.parent == TC_H_ROOT) {
            nl.del_qdisc(1, root.handle, TC_H_ROOT)?;
        }
        Ok(())
    });
    r.and_then(|r| r.map_err(|e| e.to_string()))
}

fn fq(ifindex: i32, parent: u32) -> Qdisc {
    Qdisc {
        ifindex,
        handle: 0,
        parent,
        kind: "fq".into(),
        options: rtnl::fq_options(FQ_LIMIT, FQ_FLOW_LIMIT, FQ_HORIZON_US),
    }
}

/// Decides what to save from a device's qdisc list (pure, unit-tested).
pub fn classify(ifname: &str, qdiscs: &[Qdisc]) -> Result<Original> {
    let Some(root) = qdiscs.iter().find(|q| q.parent == TC_H_ROOT) else {
        return Ok(Original::Default);
    };
    if CLASSFUL.contains(&root.kind.as_str()) {
        return Err(Error::FailedPrecondition(format!(
            "device {ifname} has a classful root qdisc ({} {:x}:) that faultline will not replace; \
             choose other devices",
            root.kind,
            root.handle >> 16
        )));
    }
    if root.kind == "mq" {
        let major = root.handle & 0xFFFF_0000;
        let children: Vec<Saved> = qdiscs
            .iter()
            .filter(|q| q.parent != TC_H_ROOT && q.parent & 0xFFFF_0000 == major)
            .map(saved)
            .collect();
        if let Some(c) = children.iter().find(|c| CLASSFUL.contains(&c.kind.as_str())) {
            return Err(Error::FailedPrecondition(format!(
                "device {ifname} has a classful qdisc ({}) under mq that faultline will not replace",
                c.kind
            )));
        }
        return Ok(Original::Mq { children });
    }
    if root.handle >> 16 == 0 {
        return Ok(Original::Default);
    }
    Ok(Original::Root(saved(root)))
}

struct Device {
    refs: usize,
    record: Record,
    netns: File,
}

pub struct FqManager {
    journal: Store<Record>,
    devices: Mutex<HashMap<(u64, i32), Device>>,
    /// Whether this kernel takes an fq qdisc, learned on a scratch device at the first dry
    /// run that needs to know (a real apply learns it on the device itself).
    sch_fq: std::sync::OnceLock<std::result::Result<(), String>>,
}

/// fq held on some devices; dropping it releases them (the last user restores each).
pub struct FqLease {
    mgr: Arc<FqManager>,
    keys: Vec<(u64, i32)>,
}

impl Drop for FqLease {
    fn drop(&mut self) {
        for key in &self.keys {
            self.mgr.release(*key);
        }
    }
}

fn key_of(key: (u64, i32)) -> String {
    format!("{}-{}", key.0, key.1)
}

fn nl_err(what: String) -> impl Fn(std::io::Error) -> Error {
    move |e| Error::FailedPrecondition(format!("{what}: {e}"))
}

impl FqManager {
    pub fn new(state_dir: &Path) -> Self {
        FqManager {
            journal: Store::new(state_dir),
            devices: Mutex::new(HashMap::new()),
            sch_fq: std::sync::OnceLock::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(u64, i32), Device>> {
        self.devices.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// fq on each device of `ifindexes` in `netns`, for as long as the lease lives.
    pub fn acquire(self: &Arc<Self>, netns: &Netns, ifindexes: &[i32]) -> Result<FqLease> {
        let mut lease = FqLease { mgr: self.clone(), keys: Vec::new() };
        for &ifindex in ifindexes {
            let key = (netns.ino, ifindex);
            let mut devices = self.lock();
            if let Some(d) = devices.get_mut(&key) {
                d.refs += 1;
            } else {
                let dev = self.install(netns, ifindex)?;
                devices.insert(key, dev);
            }
            lease.keys.push(key);
        }
        Ok(lease)
    }

    /// What `acquire` would do to each device, checked as `install` checks it (the qdiscs
    /// there now, and whether the kernel takes fq: probed on a scratch device), changing none.
    pub fn plan(&self, netns: &Netns, ifindexes: &[i32]) -> Result<Vec<PlanStep>> {
        let mut nl = Netlink::open_in(&netns.file)
            .map_err(nl_err("netlink in the target's namespace".into()))?;
        let links = nl.links().map_err(nl_err("listing devices".into()))?;
        let mut steps = Vec::new();
        for &ifindex in ifindexes {
            let ifname = links
                .iter()
                .find(|l| l.ifindex == ifindex)
                .map(|l| l.name.clone())
                .ok_or_else(|| Error::NotFound(format!("no device with index {ifindex}")))?;
            let on = crate::faults::plan::on_device(&ifname, ifindex, netns.ino);
            if self.lock().contains_key(&(netns.ino, ifindex)) {
                steps.push(PlanStep::new("none to add: fq is there (another fault's)", on));
                continue;
            }
            let qdiscs =
                nl.qdiscs(ifindex).map_err(nl_err(format!("listing qdiscs of {ifname}")))?;
            let original = classify(&ifname, &qdiscs)?;
            if let Err(e) = self.sch_fq.get_or_init(probe_fq) {
                return Err(Error::FailedPrecondition(format!(
                    "unsupported: adding the fq qdisc to {ifname}: {e} (sch_fq missing from this kernel?)"
                )));
            }
            let fq = format!(
                "fq (limit {FQ_LIMIT}, flow_limit {FQ_FLOW_LIMIT}, horizon {}s, capped)",
                FQ_HORIZON_US / 1_000_000
            );
            let root = qdiscs.iter().find(|q| q.parent == TC_H_ROOT);
            let action = match &original {
                Original::Default => format!(
                    "replace the default root qdisc ({}) with {fq}; deleted again at the end",
                    root.map_or("none listed", |q| q.kind.as_str())
                ),
                Original::Root(saved) => format!(
                    "replace the root qdisc {} {:x}: with {fq}; it is journaled and put back at \
                     the end",
                    saved.kind,
                    saved.handle >> 16
                ),
                Original::Mq { children } => format!(
                    "replace the qdisc of each of the {} queues under mq ({}) with {fq}; they \
                     are journaled and put back at the end",
                    children.len(),
                    children.iter().map(|c| c.kind.as_str()).collect::<Vec<_>>().join(", ")
                ),
            };
            steps.push(PlanStep::new(action, on));
        }
        Ok(steps)
    }

    fn install(&self, netns: &Netns, ifindex: i32) -> Result<Device> {
        let mut nl = Netlink::open_in(&netns.file)
            .map_err(nl_err("netlink in the target's namespace".into()))?;
        let ifname = nl
            .links()
            .map_err(nl_err("listing devices".into()))?
            .into_iter()
            .find(|l| l.ifindex == ifindex)
            .map(|l| l.name)
            .ok_or_else(|| Error::NotFound(format!("no device with index {ifindex}")))?;
        let qdiscs = nl.qdiscs(ifindex).map_err(nl_err(format!("listing qdiscs of {ifname}")))?;
        let original = classify(&ifname, &qdiscs)?;
        let record = Record {
            netns_ino: netns.ino,
            netns_path: netns.path.clone(),
            ifindex,
            ifname: ifname.clone(),
            original,
        };
        self.journal(&record)?;
        let installed = match &record.original {
            Original::Mq { children } => {
                children.iter().try_for_each(|c| nl.add_qdisc(&fq(ifindex, c.parent), true))
            }
            _ => nl.add_qdisc(&fq(ifindex, TC_H_ROOT), true),
        };
        if let Err(e) = installed {
            let _ = restore(&mut nl, &record);
            self.journal.remove(&key_of((netns.ino, ifindex)));
            return Err(Error::FailedPrecondition(format!(
                "unsupported: adding the fq qdisc to {ifname}: {e} (sch_fq missing from this kernel?)"
            )));
        }
        info!(device = %ifname, original = ?record.original, "fq installed for EDT faults");
        let netns = netns.file.try_clone().map_err(|e| Error::internal("netns fd", e))?;
        Ok(Device { refs: 1, record, netns })
    }

    /// Written and fsync'd before the device is touched.
    fn journal(&self, record: &Record) -> Result<()> {
        self.journal.put(record).map_err(|e| Error::journal("the qdisc it replaces", &e))
    }

    fn release(&self, key: (u64, i32)) {
        let mut devices = self.lock();
        let Some(d) = devices.get_mut(&key) else { return };
        d.refs -= 1;
        if d.refs > 0 {
            return;
        }
        let Some(d) = devices.remove(&key) else { return };
        drop(devices);
        match Netlink::open_in(&d.netns).and_then(|mut nl| restore(&mut nl, &d.record)) {
            Ok(()) => info!(device = %d.record.ifname, "original qdisc restored"),
            Err(e) => warn!(device = %d.record.ifname, error = %e, "restoring the original qdisc"),
        }
        self.journal.remove(&key_of(key));
    }
}

impl Recover for FqManager {
    type Record = Record;

    /// Restores what a previous agent left in the journal (it died with fq installed).
    fn recover(&self, records: Vec<Record>) -> BoxFuture<'_> {
        for r in records {
            match Netns::find(r.netns_ino, &r.netns_path) {
                Some(ns) => {
                    match Netlink::open_in(&ns.file).and_then(|mut nl| restore(&mut nl, &r)) {
                        Ok(()) => {
                            info!(device = %r.ifname, "restored the qdisc a previous agent replaced")
                        }
                        Err(err) => {
                            warn!(device = %r.ifname, error = %err, "could not restore a journaled qdisc")
                        }
                    }
                }
                None => {
                    info!(device = %r.ifname, "journaled namespace is gone, and its qdiscs with it")
                }
            }
            self.journal.remove(&key_of((r.netns_ino, r.ifindex)));
        }
        Box::pin(std::future::ready(()))
    }
}

/// Puts back what `record` saved, if the device still has our fq.
fn restore(nl: &mut Netlink, record: &Record) -> std::io::Result<()> {
    let ifindex = record.ifindex;
    let current = nl.qdiscs(ifindex)?;
    match &record.original {
        Original::Default => {
            if let Some(root) = current.iter().find(|q| q.parent == TC_H_ROOT && q.kind == "fq") {
                nl.del_qdisc(ifindex, root.handle, TC_H_ROOT)?;
            }
        }
        Original::Root(s) => {
            if current.iter().any(|q| q.parent == TC_H_ROOT && q.kind == "fq") {
                let q = Qdisc {
                    ifindex,
                    handle: s.handle,
                    parent: TC_H_ROOT,
                    kind: s.kind.clone(),
                    options: unhex(&s.options),
                };
                nl.add_qdisc(&q, true)?;
            }
        }
        Original::Mq { children } => {
            for c in children {
                if current.iter().any(|q| q.parent == c.parent && q.kind == "fq") {
                    let q = Qdisc {
                        ifindex,
                        handle: 0,
                        parent: c.parent,
                        kind: c.kind.clone(),
                        options: unhex(&c.options),
                    };
                    nl.add_qdisc(&q, true)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_journals_of_earlier_releases() {
        for (release, r) in store::fixtures::<Record>() {
            assert!(!r.ifname.is_empty() && r.ifindex > 0 && r.netns_ino > 0, "{release}: {r:?}");
        }
    }

    fn q(parent: u32, handle: u32, kind: &str) -> Qdisc {
        Qdisc { ifindex: 2, handle, parent, kind: kind.into(), options: vec![1, 2] }
    }

    #[test]
    fn default_roots_are_restored_by_deleting_ours() {
        assert_eq!(classify("lo", &[q(TC_H_ROOT, 0, "noqueue")]).unwrap(), Original::Default);
        assert_eq!(classify("eth0", &[q(TC_H_ROOT, 0, "fq_codel")]).unwrap(), Original::Default);
        assert_eq!(classify("eth0", &[]).unwrap(), Original::Default);
    }

    #[test]
    fn configured_roots_are_saved_with_options() {
        let o = classify("eth0", &[q(TC_H_ROOT, 0x8001_0000, "tbf")]).unwrap();
        assert_eq!(
            o,
            Original::Root(Saved {
                parent: TC_H_ROOT,
                handle: 0x8001_0000,
                kind: "tbf".into(),
                options: "0102".into()
            })
        );
        assert_eq!(unhex("0102ff"), vec![1, 2, 255]);
    }

    #[test]
    fn mq_keeps_its_root_and_saves_each_queue() {
        let list = [
            q(TC_H_ROOT, 0, "mq"),
            q(1, 0, "fq_codel"),
            q(2, 0, "fq_codel"),
            q(0xFFFF_FFF1, 0xFFFF_0000, "clsact"),
        ];
        let Original::Mq { children } = classify("eth0", &list).unwrap() else { panic!() };
        assert_eq!(children.iter().map(|c| c.parent).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn classful_roots_are_refused() {
        let err = classify("eth0", &[q(TC_H_ROOT, 0x0001_0000, "htb")]).unwrap_err();
        assert!(
            matches!(err, Error::FailedPrecondition(ref m) if m.contains("eth0") && m.contains("htb 1:")),
            "{err}"
        );
    }
}
