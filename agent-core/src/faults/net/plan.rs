//! The network family's FaultDriver: plans what each fault needs besides its rule (the
//! devices its packets leave or arrive by, fq on them, an ifb for ingress, the namespace's DNS
//! responder), then installs the rule through the datapath (`NetDriver`).

use std::sync::Arc;

use faultline_common::net::{ACTION_CORRUPT, ACTION_DUPLICATE, ACTION_REJECT};

use super::{Extras, NetDriver, devices::Device, dns, fq, ifb, rules};
use crate::{
    engine::{
        driver::{FaultDriver, FaultHandle},
        error::{Error, Result},
        model::{
            Direction, FaultSpec, NetMangle, NetReject, PacketFilter, Plan, PlanStep, Resolved,
            ResolvedCgroup,
        },
    },
    kernel::{netns::Netns, rtnl::Netlink},
};

/// Every network fault: the datapath (or why it failed to load) and the shared objects some
/// faults hold while they last.
pub struct NetFaults {
    pub net: std::result::Result<Arc<NetDriver>, String>,
    /// fq on egress devices for delay and bandwidth, with its journal.
    pub fq: Arc<fq::FqManager>,
    pub dns: dns::Responders,
    /// ifb devices for ingress delay and pacing, with their journal.
    pub ifbs: Arc<ifb::Ifbs>,
}

const DNS_BACKEND: &str = "cgroup_sock_addr+responder";

/// A DNS fault: the steering rule plus its place in the namespace's responder.
struct DnsHandle {
    // Field order matters: the rule goes first, then the responder registration.
    rule: Box<dyn FaultHandle>,
    reg: dns::Registration,
}

impl FaultHandle for DnsHandle {
    fn backend(&self) -> &'static str {
        DNS_BACKEND
    }

    fn counters(&self) -> crate::engine::model::Counters {
        use std::sync::atomic::Ordering;
        let mut c = self.rule.counters();
        c.calls_seen = self.reg.fault.seen.load(Ordering::Relaxed);
        c.calls_failed = self.reg.fault.faulted.load(Ordering::Relaxed);
        c
    }
}

/// The devices a cgroup target's packets leave by, in its network namespace: those named,
/// else those routing the filter's CIDRs, else every device that is up.
fn egress_devices(
    target: &ResolvedCgroup,
    filter: &PacketFilter,
    names: &[String],
    field: &str,
) -> Result<(Netns, Vec<Device>)> {
    let netns = Netns::of_cgroup(&target.fs_path())
        .map_err(|e| Error::internal("opening the target's network namespace", e))?;
    let mut nl = Netlink::open_in(&netns.file)
        .map_err(|e| Error::internal("netlink in the target's network namespace", e))?;
    let links = nl.links().map_err(|e| Error::internal("listing devices", e))?;
    let mut picked = Vec::new();
    if !names.is_empty() {
        for (i, name) in names.iter().enumerate() {
            let Some(l) = links.iter().find(|l| &l.name == name) else {
                let have: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
                return Err(Error::invalid(
                    format!("{field}.devices[{i}]"),
                    format!(
                        "no device {name} in the target's network namespace (it has {})",
                        have.join(", ")
                    ),
                ));
            };
            picked.push(l.clone());
        }
    } else if !filter.remote.is_empty() {
        for net in &filter.remote {
            let oif =
                nl.route_oif(net.network()).map_err(|e| Error::internal("route lookup", e))?;
            picked.extend(links.iter().filter(|l| Some(l.ifindex) == oif).cloned());
        }
    } else {
        picked = links.iter().filter(|l| l.up).cloned().collect();
    }
    picked.sort_by_key(|l| l.ifindex);
    picked.dedup_by_key(|l| l.ifindex);
    if picked.is_empty() {
        return Err(Error::FailedPrecondition(format!(
            "{field}: no egress device found in the target's network namespace; name one in devices"
        )));
    }
    let devices = picked
        .into_iter()
        .map(|l| Device {
            netns_path: netns_reopen_path(&netns, target),
            netns_ino: netns.ino,
            ifindex: l.ifindex,
            name: l.name.clone(),
            l2_len: l.l2_len(),
            ifb: 0,
        })
        .collect();
    Ok((netns, devices))
}

/// A path that opens the cgroup's namespace again (through one of its processes), or the
/// agent's own.
fn netns_reopen_path(netns: &Netns, target: &ResolvedCgroup) -> std::path::PathBuf {
    let own = Netns::own().map(|n| n.ino).unwrap_or(0);
    if netns.ino == own {
        return std::path::PathBuf::from(format!("/proc/{}/ns/net", std::process::id()));
    }
    Netns::pid_in_cgroup(&target.fs_path())
        .map(|pid| std::path::PathBuf::from(format!("/proc/{pid}/ns/net")))
        .unwrap_or_else(|| std::path::PathBuf::from("/proc/self/ns/net"))
}

impl NetFaults {
    fn net(&self) -> Result<&Arc<NetDriver>> {
        self.net.as_ref().map_err(|why| Error::FailedPrecondition(format!("unsupported: {why}")))
    }

    /// The target's device as the tc programs need it.
    fn interface_device(i: &crate::engine::model::ResolvedInterface) -> Device {
        Device {
            netns_path: i.netns_path.clone(),
            netns_ino: i.netns_ino,
            ifindex: i.ifindex,
            name: i.name.clone(),
            l2_len: i.l2_len,
            ifb: 0,
        }
    }

    /// What a delay or pacing fault checks first, in order: ingress support, then the
    /// devices its packets leave by (cgroup targets) or the target device, in its namespace.
    fn edt_devices(
        &self,
        target: &Resolved,
        filter: &PacketFilter,
        names: &[String],
        field: &str,
    ) -> Result<(Netns, Vec<Device>)> {
        let ingress = filter.direction != Direction::Egress;
        let net = self.net()?;
        if ingress {
            let missing = if !net.has_set_tstamp {
                Some("bpf_skb_set_tstamp in tc programs (kernel 5.18+)".to_string())
            } else if !net.has_tc_sk_storage {
                Some("bpf_sk_storage_get in tc programs".to_string())
            } else {
                net.ifb_redirect().as_ref().err().map(|e| format!("a working ifb redirect: {e}"))
            };
            if let Some(missing) = missing {
                return Err(Error::FailedPrecondition(format!(
                    "unsupported: delaying or pacing received packets needs {missing}; \
                     on this kernel use direction EGRESS"
                )));
            }
        }
        Ok(match target {
            Resolved::Cgroup(cg) => egress_devices(cg, filter, names, field)?,
            Resolved::Interface(i) => {
                let netns = Netns::open(&i.netns_path)
                    .map_err(|e| Error::internal("opening the namespace", e))?;
                (netns, vec![Self::interface_device(i)])
            }
        })
    }

    /// What a delay or pacing fault holds: fq on the devices packets leave by (egress), and
    /// for ingress an ifb with fq plus the tc programs on the devices packets arrive by.
    /// Interface targets: that device for both.
    fn edt(
        &self,
        target: &Resolved,
        filter: &PacketFilter,
        names: &[String],
        field: &str,
    ) -> Result<Extras> {
        let egress = filter.direction != Direction::Ingress;
        let ingress = filter.direction != Direction::Egress;
        let (netns, mut devices) = self.edt_devices(target, filter, names, field)?;
        let mut extras = Extras::default();
        if egress {
            let ifindexes: Vec<i32> = devices.iter().map(|d| d.ifindex).collect();
            extras.fq = Some(self.fq.acquire(&netns, &ifindexes)?);
        }
        if ingress {
            let ifb = self.ifbs.acquire(&netns)?;
            for d in &mut devices {
                d.ifb = ifb.ifindex as u32;
            }
            extras.ifb = Some(ifb);
        }
        // Cgroup targets need the tc programs only for ingress; interfaces always.
        if ingress || matches!(target, Resolved::Interface(_)) {
            extras.devices = devices;
        }
        Ok(extras)
    }

    /// The action of a corrupt or duplicate fault and the devices its tc programs go on.
    fn mangle_devices(
        target: &Resolved,
        fault: &FaultSpec,
        m: &NetMangle,
    ) -> Result<(u32, Vec<Device>)> {
        let (action, field) = match fault {
            FaultSpec::NetCorrupt(_) => (ACTION_CORRUPT, "fault.net_corrupt"),
            _ => (ACTION_DUPLICATE, "fault.net_duplicate"),
        };
        let devices = match target {
            Resolved::Cgroup(cg) => {
                // Validation refuses this first (wire::validate_net::mangle_direction).
                if m.filter.direction != Direction::Egress {
                    return Err(Error::invalid(
                        format!("{field}.filter.direction"),
                        "on a cgroup target only egress: use an interface target for ingress",
                    ));
                }
                egress_devices(cg, &m.filter, &m.devices, field)?.1
            }
            Resolved::Interface(i) => vec![Self::interface_device(i)],
        };
        Ok((action, devices))
    }

    /// What a reject refuses before its rule: an interface target, an errno this kernel
    /// cannot fail connect() with.
    fn reject_checks(&self, target: &Resolved, r: &NetReject) -> Result<&Arc<NetDriver>> {
        if matches!(target, Resolved::Interface(_)) {
            return Err(Error::invalid(
                "target",
                "net_reject acts on connect() calls: use a cgroup or pid target",
            ));
        }
        let net = self.net()?;
        if r.errno != libc::EPERM && !net.has_set_retval {
            return Err(Error::FailedPrecondition(format!(
                "unsupported: failing connect() with {} needs bpf_set_retval in cgroup sock_addr \
                 programs (kernel 5.18+); this kernel can only fail it with EPERM",
                crate::errno::name(r.errno)
            )));
        }
        Ok(net)
    }

    /// `edt`'s dry run: the fq and ifb it would set up, checked as `acquire` checks them, and
    /// the devices that would carry the tc programs.
    fn edt_plan(
        &self,
        target: &Resolved,
        filter: &PacketFilter,
        names: &[String],
        field: &str,
    ) -> Result<(Vec<PlanStep>, Vec<Device>)> {
        let egress = filter.direction != Direction::Ingress;
        let ingress = filter.direction != Direction::Egress;
        let (netns, devices) = self.edt_devices(target, filter, names, field)?;
        let mut steps = Vec::new();
        if egress {
            let ifindexes: Vec<i32> = devices.iter().map(|d| d.ifindex).collect();
            steps.extend(self.fq.plan(&netns, &ifindexes)?);
        }
        if ingress {
            steps.push(self.ifbs.plan(&netns));
        }
        let tc = ingress || matches!(target, Resolved::Interface(_));
        Ok((steps, if tc { devices } else { Vec::new() }))
    }

    /// A rule's dry run after `steps`: what the datapath checks and would attach, and the
    /// backend the rule's handle would report.
    fn rule_plan(
        &self,
        target: &Resolved,
        compiled: &rules::CompiledRule,
        devices: &[Device],
        mut steps: Vec<PlanStep>,
    ) -> Result<Plan> {
        steps.extend(self.net()?.plan(target, compiled, devices)?);
        let backend = super::backend(
            matches!(target, Resolved::Interface(_)),
            !devices.is_empty(),
            compiled.rule.action == ACTION_REJECT,
        );
        Ok(Plan { resolved: None, backend: backend.into(), steps })
    }
}

impl FaultDriver for NetFaults {
    fn apply(
        &self,
        target: &Resolved,
        fault: &FaultSpec,
        expires: u64,
    ) -> Result<Box<dyn FaultHandle>> {
        // Cgroup targets: cgroup programs only. Interface targets: the device's tc programs.
        let iface_devices = || match target {
            Resolved::Interface(i) => vec![Self::interface_device(i)],
            Resolved::Cgroup(_) => Vec::new(),
        };
        match fault {
            FaultSpec::NetLoss(loss) => self.net()?.apply(
                target,
                expires,
                |s, e| rules::compile_loss(loss, s, e),
                Extras { devices: iface_devices(), ..Default::default() },
            ),
            FaultSpec::NetPartition(f) => self.net()?.apply(
                target,
                expires,
                |s, e| rules::compile_partition(f, s, e),
                Extras { devices: iface_devices(), ..Default::default() },
            ),
            FaultSpec::NetDelay(d) => {
                let net = self.net()?;
                let extras = self.edt(target, &d.filter, &d.devices, "fault.net_delay")?;
                net.apply(target, expires, |s, e| rules::compile_delay(d, s, e), extras)
            }
            FaultSpec::NetBandwidth(b) => {
                let net = self.net()?;
                let extras = self.edt(target, &b.filter, &b.devices, "fault.net_bandwidth")?;
                net.apply(target, expires, |s, e| rules::compile_rate(b, s, e), extras)
            }
            FaultSpec::NetCorrupt(m) | FaultSpec::NetDuplicate(m) => {
                let net = self.net()?;
                let (action, devices) = Self::mangle_devices(target, fault, m)?;
                net.apply(
                    target,
                    expires,
                    |s, e| rules::compile_mangle(m, action, s, e),
                    Extras { devices, ..Default::default() },
                )
            }
            FaultSpec::NetDns(d) => {
                let cg = target
                    .cgroup("net_dns acts on the target's queries: use a cgroup or pid target")?;
                let net = self.net()?;
                let netns = Netns::of_cgroup(&cg.fs_path())
                    .map_err(|e| Error::internal("opening the target's network namespace", e))?;
                let responder = self.dns.get(&netns, net)?;
                let slot = std::cell::Cell::new(0);
                let rule = net.apply(
                    target,
                    expires,
                    |s, e| {
                        slot.set(s);
                        rules::compile_dns(d, responder.port4, responder.port6, s, e)
                    },
                    Extras::default(),
                )?;
                let fault = dns::DnsFault {
                    names: d.names.clone(),
                    answer: d.answer,
                    share: d.percent / 100.0,
                    seen: Default::default(),
                    faulted: Default::default(),
                };
                let reg = responder.register(slot.get(), fault);
                Ok(Box::new(DnsHandle { rule, reg }))
            }
            FaultSpec::NetReject(r) => {
                let net = self.reject_checks(target, r)?;
                net.apply(target, expires, |s, e| rules::compile_reject(r, s, e), Extras::default())
            }
            other => {
                Err(Error::Internal(format!("the network family was handed {}", other.kind())))
            }
        }
    }

    /// Each fault checked as `apply` checks it, in the same order, with what it would set
    /// up; the rule is compiled as `apply` compiles it (its slot and deadline aside).
    fn plan(&self, target: &Resolved, fault: &FaultSpec) -> Result<Plan> {
        let iface_devices = || match target {
            Resolved::Interface(i) => vec![Self::interface_device(i)],
            Resolved::Cgroup(_) => Vec::new(),
        };
        match fault {
            FaultSpec::NetLoss(loss) => {
                self.rule_plan(target, &rules::compile_loss(loss, 0, 0), &iface_devices(), vec![])
            }
            FaultSpec::NetPartition(f) => {
                self.rule_plan(target, &rules::compile_partition(f, 0, 0), &iface_devices(), vec![])
            }
            FaultSpec::NetDelay(d) => {
                self.net()?;
                let (steps, devices) =
                    self.edt_plan(target, &d.filter, &d.devices, "fault.net_delay")?;
                self.rule_plan(target, &rules::compile_delay(d, 0, 0), &devices, steps)
            }
            FaultSpec::NetBandwidth(b) => {
                self.net()?;
                let (steps, devices) =
                    self.edt_plan(target, &b.filter, &b.devices, "fault.net_bandwidth")?;
                self.rule_plan(target, &rules::compile_rate(b, 0, 0), &devices, steps)
            }
            FaultSpec::NetCorrupt(m) | FaultSpec::NetDuplicate(m) => {
                self.net()?;
                let (action, devices) = Self::mangle_devices(target, fault, m)?;
                let compiled = rules::compile_mangle(m, action, 0, 0);
                self.rule_plan(target, &compiled, &devices, vec![])
            }
            FaultSpec::NetDns(d) => {
                let cg = target
                    .cgroup("net_dns acts on the target's queries: use a cgroup or pid target")?;
                self.net()?;
                let netns = Netns::of_cgroup(&cg.fs_path())
                    .map_err(|e| Error::internal("opening the target's network namespace", e))?;
                let responder = if self.dns.running(&netns) {
                    "none to start: the namespace's DNS responder runs (another fault's); \
                     register the fault's names with it"
                } else {
                    "start a DNS responder on 127.0.0.1 and ::1 (UDP) in the namespace and \
                     register the fault's names with it"
                };
                let steps =
                    vec![PlanStep::new(responder, format!("network namespace {}", netns.ino))];
                let compiled = rules::compile_dns(d, 0, 0, 0, 0);
                let mut plan = self.rule_plan(target, &compiled, &[], steps)?;
                plan.backend = DNS_BACKEND.into();
                Ok(plan)
            }
            FaultSpec::NetReject(r) => {
                self.reject_checks(target, r)?;
                self.rule_plan(target, &rules::compile_reject(r, 0, 0), &[], vec![])
            }
            other => {
                Err(Error::Internal(format!("the network family was handed {}", other.kind())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use faultline_common::net::{ACTION_DNS, ACTION_DROP};

    use super::super::{BACKEND, BACKEND_SOCK_ADDR, BACKEND_TC, backend, rules::action_name};

    #[test]
    fn a_plan_reports_the_backend_its_handle_would() {
        assert_eq!(backend(false, false, false), BACKEND);
        assert_eq!(backend(false, false, true), BACKEND_SOCK_ADDR);
        // tc wins: an interface target, or devices the rule needs the tc programs on.
        assert_eq!(backend(true, false, false), BACKEND_TC);
        assert_eq!(backend(false, true, true), BACKEND_TC);
        assert_eq!(action_name(ACTION_DROP), "drop");
        assert_eq!(action_name(ACTION_DNS), "dns");
        assert_eq!(action_name(999), "unknown");
    }
}
