//! faultline's tc programs on network devices: for interface targets, and for cgroup faults
//! that change or copy packets (corrupt, duplicate).
//!
//! tcx links (kernel 6.6+) detach when the agent's file descriptors close, like the cgroup
//! links. Older kernels get clsact + a cls_bpf filter over netlink, which outlive the agent:
//! those are journaled (and clsact removed if we added it) and cleaned at the next start,
//! and the programs act only while the agent's heartbeat is fresh, so a dead agent's faults
//! stop within `HEARTBEAT_TIMEOUT_NS`.

use std::{
    collections::HashMap,
    fs::File,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData},
    programs::{
        SchedClassifier, TcAttachType,
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions},
    },
};
use faultline_common::net::{DEV_F_NETLINK, DevInfo, PROG_TC_EGRESS, PROG_TC_INGRESS};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::{
    engine::error::{Error, Result, chain},
    kernel::{
        netns::{Netns, in_netns},
        rtnl::Netlink,
    },
    store::{self, BoxFuture, Recover, Store},
};

/// clsact's handle and parent.
const CLSACT_HANDLE: u32 = 0xFFFF_0000;
const TC_H_CLSACT: u32 = 0xFFFF_FFF1;

/// A device an experiment needs the tc programs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub netns_path: PathBuf,
    pub netns_ino: u64,
    pub ifindex: i32,
    pub name: String,
    pub l2_len: u32,
    /// The namespace's ifb, when the fault delays or paces packets at ingress.
    pub ifb: u32,
}

/// A tc attachment; netlink ones must be detached from inside their namespace.
struct TcLink {
    link: Option<SchedClassifierLink>,
    netns: Option<File>,
}

impl Drop for TcLink {
    fn drop(&mut self) {
        let Some(link) = self.link.take() else { return };
        match self.netns.take() {
            // A tcx link detaches on close wherever it is dropped.
            None => drop(link),
            Some(ns) => {
                if let Err(e) = in_netns(&ns, move || drop(link)) {
                    warn!(error = %e, "detaching a tc filter");
                }
            }
        }
    }
}

struct Dev {
    netns_ino: u64,
    netns: File,
    name: String,
    refs: usize,
    _egress: TcLink,
    _ingress: TcLink,
    netlink: bool,
    added_clsact: bool,
}

/// Journal entry of a netlink attachment.
#[derive(Debug, Serialize, Deserialize)]
pub struct Record {
    netns_ino: u64,
    /// How the namespace was opened (tried first at recovery, then a scan of /proc).
    netns_path: PathBuf,
    ifindex: i32,
    name: String,
    added_clsact: bool,
}

impl store::Record for Record {
    const KIND: &'static str = "tc";
    const VERSION: u32 = 1;

    fn key(&self) -> String {
        key_of(self.netns_ino, self.ifindex)
    }

    fn encode(&self) -> std::result::Result<Vec<u8>, String> {
        store::json::encode(self)
    }

    fn decode(_version: u32, payload: &[u8]) -> std::result::Result<Self, String> {
        store::json::decode(payload)
    }
}

pub struct Devices {
    by_ifindex: HashMap<i32, Dev>,
    journal: Store<Record>,
}

fn key_of(netns_ino: u64, ifindex: i32) -> String {
    format!("{netns_ino}-{ifindex}")
}

impl Devices {
    pub fn new(state_dir: &Path) -> Self {
        Devices { by_ifindex: HashMap::new(), journal: Store::new(state_dir) }
    }

    /// Whether some device uses netlink attachments (the heartbeat matters then).
    pub fn any_netlink(&self) -> bool {
        self.by_ifindex.values().any(|d| d.netlink)
    }

    /// Attaches the tc programs to `dev` (or counts one more user).
    pub fn acquire(
        &mut self,
        ebpf: &mut Ebpf,
        infos: &mut BpfHashMap<MapData, u32, DevInfo>,
        dev: &Device,
    ) -> Result<()> {
        if let Some(d) = self.by_ifindex.get_mut(&dev.ifindex) {
            if d.netns_ino != dev.netns_ino {
                return Err(other_netns(dev, &d.name));
            }
            d.refs += 1;
            if dev.ifb != 0 {
                set_ifb(infos, dev)?;
            }
            return Ok(());
        }
        let ns = open_netns(dev)?;
        let name = dev.name.clone();
        let attached = attach_both(ebpf, &ns.file, &name)?;
        let (egress, ingress, netlink, added_clsact) = attached;
        if netlink {
            self.journal(&Record {
                netns_ino: dev.netns_ino,
                netns_path: dev.netns_path.clone(),
                ifindex: dev.ifindex,
                name: name.clone(),
                added_clsact,
            })?;
        }
        let flags = if netlink { DEV_F_NETLINK } else { 0 };
        infos
            .insert(
                dev.ifindex as u32,
                DevInfo { l2_len: dev.l2_len, flags, ifb: dev.ifb, _pad: 0 },
                0,
            )
            .map_err(|e| Error::internal("registering the device", chain(&e)))?;
        let netns = ns.file.try_clone().map_err(|e| Error::internal("netns fd", e))?;
        let link_ns = |l| TcLink {
            link: Some(l),
            netns: if netlink { ns.file.try_clone().ok() } else { None },
        };
        info!(device = %name, mode = if netlink { "clsact/cls_bpf" } else { "tcx" }, "tc programs attached");
        self.by_ifindex.insert(
            dev.ifindex,
            Dev {
                netns_ino: dev.netns_ino,
                netns,
                name,
                refs: 1,
                _egress: link_ns(egress),
                _ingress: link_ns(ingress),
                netlink,
                added_clsact,
            },
        );
        Ok(())
    }

    /// Whether `dev` carries the tc programs already (another fault's), checked as `acquire`
    /// checks it, attaching nothing.
    pub fn plan(&self, dev: &Device) -> Result<bool> {
        if let Some(d) = self.by_ifindex.get(&dev.ifindex) {
            if d.netns_ino != dev.netns_ino {
                return Err(other_netns(dev, &d.name));
            }
            return Ok(true);
        }
        open_netns(dev)?;
        Ok(false)
    }

    pub fn release(&mut self, infos: &mut BpfHashMap<MapData, u32, DevInfo>, ifindex: i32) {
        let Some(d) = self.by_ifindex.get_mut(&ifindex) else { return };
        d.refs -= 1;
        if d.refs > 0 {
            return;
        }
        let Some(d) = self.by_ifindex.remove(&ifindex) else { return };
        let _ = infos.remove(&(ifindex as u32));
        let (netns, added_clsact, netns_ino, name) =
            (d.netns.try_clone().ok(), d.added_clsact, d.netns_ino, d.name.clone());
        // Links detach here (in their namespace when netlink).
        drop(d);
        if added_clsact
            && let Some(ns) = netns
            && let Err(e) = Netlink::open_in(&ns)
                .and_then(|mut nl| nl.del_qdisc(ifindex, CLSACT_HANDLE, TC_H_CLSACT))
        {
            warn!(device = %name, error = %e, "removing the clsact qdisc we added");
        }
        self.journal.remove(&key_of(netns_ino, ifindex));
    }

    fn journal(&self, r: &Record) -> Result<()> {
        self.journal.put(r).map_err(|e| Error::journal("the tc filter it attaches", &e))
    }
}

fn other_netns(dev: &Device, holder: &str) -> Error {
    Error::FailedPrecondition(format!(
        "device index {} is already used by a fault in another network namespace ({holder}); \
         faultline's tc programs tell devices apart by interface index alone, so one index \
         carries them in one namespace at a time: end that fault first",
        dev.ifindex
    ))
}

fn open_netns(dev: &Device) -> Result<Netns> {
    Netns::open(&dev.netns_path).map_err(|e| {
        Error::NotFound(format!("network namespace {}: {e}", dev.netns_path.display()))
    })
}

/// What a previous agent attached over netlink: its filters (and the clsact qdiscs it added)
/// outlive it.
pub struct Leftovers {
    journal: Store<Record>,
}

impl Leftovers {
    pub fn new(state_dir: &Path) -> Self {
        Leftovers { journal: Store::new(state_dir) }
    }
}

impl Recover for Leftovers {
    type Record = Record;

    /// Removes the netlink filters (and the clsact qdiscs we added) a previous agent left.
    fn recover(&self, records: Vec<Record>) -> BoxFuture<'_> {
        for r in records {
            if let Some(ns) = Netns::find(r.netns_ino, &r.netns_path) {
                let name = r.name.clone();
                let detached = in_netns(&ns.file, move || {
                    for (ty, prog) in [
                        (TcAttachType::Egress, PROG_TC_EGRESS),
                        (TcAttachType::Ingress, PROG_TC_INGRESS),
                    ] {
                        let _ = tc::qdisc_detach_program(&name, ty, prog);
                    }
                });
                if r.added_clsact {
                    let _ = Netlink::open_in(&ns.file)
                        .and_then(|mut nl| nl.del_qdisc(r.ifindex, CLSACT_HANDLE, TC_H_CLSACT));
                }
                match detached {
                    Ok(()) => info!(device = %r.name, "removed tc filters a previous agent left"),
                    Err(e) => {
                        warn!(device = %r.name, error = %e, "could not clean a journaled device")
                    }
                }
            }
            self.journal.remove(&key_of(r.netns_ino, r.ifindex));
        }
        Box::pin(std::future::ready(()))
    }
}

/// Points a device already carrying the programs at the namespace's (current) ifb.
fn set_ifb(infos: &mut BpfHashMap<MapData, u32, DevInfo>, dev: &Device) -> Result<()> {
    let key = dev.ifindex as u32;
    let mut info =
        infos.get(&key, 0).map_err(|e| Error::internal("reading the device entry", chain(&e)))?;
    info.ifb = dev.ifb;
    infos.insert(key, info, 0).map_err(|e| Error::internal("updating the device entry", chain(&e)))
}

type Attached = (SchedClassifierLink, SchedClassifierLink, bool, bool);

/// Attaches egress and ingress programs inside the device's namespace: tcx when the kernel
/// has it, else clsact (added if missing) + cls_bpf. Returns the links, whether netlink was
/// used, and whether we added clsact.
fn attach_both(ebpf: &mut Ebpf, netns: &File, dev: &str) -> Result<Attached> {
    let dev = dev.to_string();
    let r = in_netns(netns, move || -> Result<Attached> {
        let mut one = |prog_name: &str,
                       ty: TcAttachType,
                       opts: TcAttachOptions|
         -> Result<SchedClassifierLink> {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(prog_name)
                .ok_or_else(|| Error::Internal(format!("program {prog_name} missing")))?
                .try_into()
                .map_err(|e| Error::internal(prog_name, e))?;
            // Loaded with its first attachment (not at the agent's start).
            if prog.fd().is_err() {
                prog.load().map_err(|e| {
                    Error::FailedPrecondition(format!(
                        "unsupported: tc program {prog_name} refused by the kernel: {}",
                        chain(&e)
                    ))
                })?;
            }
            let id = prog.attach_with_options(&dev, ty, opts).map_err(|e| {
                Error::FailedPrecondition(format!(
                    "unsupported: attaching {prog_name} to {dev}: {}",
                    chain(&e)
                ))
            })?;
            prog.take_link(id).map_err(|e| Error::internal("taking link", e))
        };
        let tcx = || TcAttachOptions::TcxOrder(Default::default());
        if let Ok(e) = one(PROG_TC_EGRESS, TcAttachType::Egress, tcx()) {
            let i = one(PROG_TC_INGRESS, TcAttachType::Ingress, tcx())?;
            return Ok((e, i, false, false));
        }
        // No tcx: clsact + cls_bpf, direct action.
        let added = match tc::qdisc_add_clsact(&dev) {
            Ok(()) => true,
            Err(e) if chain(&e).contains("exists") => false,
            Err(e) => {
                return Err(Error::FailedPrecondition(format!(
                    "unsupported: adding clsact to {dev}: {}",
                    chain(&e)
                )));
            }
        };
        let nl = || TcAttachOptions::Netlink(NlOptions::default());
        let e = one(PROG_TC_EGRESS, TcAttachType::Egress, nl());
        let i = e.and_then(|e| one(PROG_TC_INGRESS, TcAttachType::Ingress, nl()).map(|i| (e, i)));
        match i {
            Ok((e, i)) => Ok((e, i, true, added)),
            Err(err) => {
                if added {
                    let _ = Netlink::open().and_then(|mut n| {
                        let idx = n
                            .links()?
                            .into_iter()
                            .find(|l| l.name == dev)
                            .map(|l| l.ifindex)
                            .unwrap_or(0);
                        n.del_qdisc(idx, CLSACT_HANDLE, TC_H_CLSACT)
                    });
                }
                Err(err)
            }
        }
    });
    r.map_err(|e| Error::internal("entering the device's network namespace", e))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_journals_of_earlier_releases() {
        for (release, r) in store::fixtures::<Record>() {
            assert!(!r.name.is_empty() && r.ifindex > 0 && r.netns_ino > 0, "{release}: {r:?}");
        }
    }
}
