//! `faultline caps`: what the agent's kernel supports, as tables or JSON.

use faultline_proto::v1 as pb;
use serde_json::{Value, json};

use super::table;

pub fn caps_table(c: &pb::CapabilitiesResponse) -> String {
    let mut out = format!(
        "kernel {}  cgroup2 {}  btf {}  agent {}\n\n",
        c.kernel_release,
        c.cgroup2_mount,
        if c.btf { "yes" } else { "no" },
        c.agent_version
    );
    let yes = |b: bool| if b { "yes" } else { "no" }.to_string();
    let probes: Vec<Vec<String>> =
        c.probes.iter().map(|p| vec![p.name.clone(), yes(p.supported), p.detail.clone()]).collect();
    out += &table(&["PROBE", "SUPPORTED", "DETAIL"], &probes);
    out += "\n";
    let faults: Vec<Vec<String>> = c
        .faults
        .iter()
        .map(|f| vec![f.fault.clone(), yes(f.supported), f.backend.clone(), f.reason.clone()])
        .collect();
    out += &table(&["FAULT", "SUPPORTED", "BACKEND", "REASON"], &faults);
    out
}

pub fn caps_json(c: &pb::CapabilitiesResponse) -> Value {
    json!({
        "agent_version": c.agent_version,
        "kernel_release": c.kernel_release,
        "cgroup2_mount": c.cgroup2_mount,
        "btf": c.btf,
        "probes": c.probes.iter().map(|p| json!({"name": p.name, "supported": p.supported, "detail": p.detail})).collect::<Vec<_>>(),
        "faults": c.faults.iter().map(|f| json!({"fault": f.fault, "supported": f.supported, "backend": f.backend, "reason": f.reason})).collect::<Vec<_>>(),
    })
}
