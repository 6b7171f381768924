//! `faultline apply -f FILE`: Chaos Mesh resources (`chaos-mesh.org/v1alpha1`) run as they
//! are. Each document becomes one experiment per pod (or per container, for the kinds scoped
//! to containers) that its selector and mode pick, labelled with the resource, so `ls
//! --label` and `cancel --label` act on the whole plan. The whole file is checked first,
//! here (every field read or refused with its path) and by the agent (a dry run of every
//! experiment: target, policy, kernel), and only then applied; if applying one fails, those
//! applied before it are cancelled. Nothing of a file is half-applied.
//!
//! `manifest` reads documents field by field, `selector` turns `selector`/`mode` into
//! targets, and one file per kind maps its actions to faultline's faults.

mod dns;
mod io;
mod manifest;
mod network;
mod pod;
mod selector;
mod stress;
mod time;

use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use faultline_core::wire::convert;
use faultline_proto::v1 as pb;

use self::{
    manifest::{Doc, Node, Refusal},
    selector::Placement,
};
use super::{
    Output,
    client::{self, status},
    display,
    output::{eprint_line, println},
};

/// The label every experiment of a resource carries: "NAMESPACE/NAME".
pub const RESOURCE_LABEL: &str = "chaos-mesh.org/resource";
/// And its kind ("NetworkChaos").
pub const KIND_LABEL: &str = "chaos-mesh.org/kind";

#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// The manifest: a file of one or more YAML documents (`---`), or - for standard input.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: String,
    /// Check the whole file (here and by the agent) and print what would run, applying nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Replace every document's selector with this cgroup (relative to the cgroup2 mount).
    #[arg(long, conflicts_with_all = ["pod", "container"])]
    pub cgroup: Option<String>,
    /// Replace every document's selector with this pod (NAMESPACE/NAME or uid).
    #[arg(long, value_name = "NAMESPACE/NAME|UID")]
    pub pod: Option<String>,
    /// Replace every document's selector with this container (id or a unique prefix; with
    /// --pod, a container of that pod).
    #[arg(long)]
    pub container: Option<String>,
}

impl ApplyArgs {
    fn target(&self) -> Option<pb::Target> {
        super::args::target_pb(
            self.cgroup.as_deref(),
            self.container.as_deref(),
            self.pod.as_deref(),
            None,
        )
    }
}

/// What one kind makes of a document's spec: the faults, and the containers they are scoped
/// to (empty: the whole pod).
pub struct Translated {
    pub faults: Vec<pb::fault::Kind>,
    pub containers: Vec<String>,
}

/// A kind's translation of a spec written as YAML, every field read (the kinds' unit tests).
#[cfg(test)]
pub fn translate_yaml(
    translate: fn(&Node) -> manifest::Result<Translated>,
    yaml: &str,
) -> manifest::Result<Translated> {
    let v: serde_yaml::Value =
        serde_yaml::from_str(yaml).map_err(|e| Refusal::at("spec", e.to_string()))?;
    let n = Node::root(&v, "spec")?;
    let t = translate(&n)?;
    n.finish()?;
    Ok(t)
}

/// One experiment the file asks for.
#[derive(Debug)]
pub struct Planned {
    /// 1-based, in the file.
    pub doc: usize,
    /// "NetworkChaos shop/redis-delay".
    pub resource: String,
    pub placement: Placement,
    pub request: pb::InjectRequest,
}

/// Maps one document to its experiments.
fn translate(
    index: usize,
    doc: &Doc,
    overridden: Option<&pb::Target>,
    random: &mut impl FnMut() -> f64,
) -> Result<Vec<Planned>, Refusal> {
    let spec = Node::root(&doc.spec, "spec")?;
    let (_, duration) = match spec.duration("duration", false)? {
        Some(d) => d,
        // Kills are one-shot in Chaos Mesh: no duration needed.
        None if doc.kind == "PodChaos" && pod::one_shot(&spec) => (false, pod::ONE_SHOT),
        None => {
            return Err(Refusal::at(
                "spec.duration",
                "required: faultline never runs a fault without an end",
            ));
        }
    };
    if duration.is_zero() {
        return Err(Refusal::at("spec.duration", "must be more than 0"));
    }
    let t = match doc.kind.as_str() {
        "NetworkChaos" => network::translate(&spec)?,
        "DNSChaos" => dns::translate(&spec)?,
        "StressChaos" => stress::translate(&spec)?,
        "IOChaos" => io::translate(&spec)?,
        "TimeChaos" => time::translate(&spec)?,
        "PodChaos" => pod::translate(&spec)?,
        other => {
            return Err(Refusal::at(
                "kind",
                format!(
                    "{other} is not one faultline runs (NetworkChaos, StressChaos, IOChaos, TimeChaos, PodChaos, DNSChaos)"
                ),
            ));
        }
    };
    let placements =
        selector::placements(&spec, &doc.namespace, &t.containers, overridden, random)?;
    spec.finish()?;
    let labels = [
        (RESOURCE_LABEL.to_string(), format!("{}/{}", doc.namespace, doc.name)),
        (KIND_LABEL.to_string(), doc.kind.clone()),
    ];
    let mut out = Vec::new();
    for p in placements {
        for f in &t.faults {
            out.push(Planned {
                doc: index,
                resource: format!("{} {}/{}", doc.kind, doc.namespace, doc.name),
                placement: p.clone(),
                request: pb::InjectRequest {
                    target: Some(p.target.clone()),
                    fault: Some(pb::Fault { kind: Some(f.clone()) }),
                    duration: Some(convert::duration(duration)),
                    labels: labels.iter().cloned().collect(),
                    ..Default::default()
                },
            });
        }
    }
    Ok(out)
}

/// Every experiment of the file, or the first document refused, in one line.
pub fn plan_file(
    text: &str,
    overridden: Option<&pb::Target>,
    random: &mut impl FnMut() -> f64,
) -> anyhow::Result<Vec<Planned>> {
    let docs = manifest::documents(text).map_err(|(i, r)| anyhow::anyhow!("document {i}: {r}"))?;
    if docs.is_empty() {
        bail!("no Chaos Mesh resource in the file");
    }
    let mut all = Vec::new();
    for (i, d) in docs.iter().enumerate() {
        let planned = translate(i + 1, d, overridden, random).map_err(|r| {
            anyhow::anyhow!("document {} ({} {}/{}): {r}", i + 1, d.kind, d.namespace, d.name)
        })?;
        all.extend(planned);
    }
    Ok(all)
}

/// Numbers in [0, 1) from the kernel's random pool (mode's picks).
fn random() -> f64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most b.len() bytes into b, a live local.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        let t =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        b = (t.as_nanos() as u64).to_le_bytes();
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

pub async fn run(endpoint: &str, output: Output, a: ApplyArgs) -> anyhow::Result<()> {
    let text = if a.file == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the manifest from stdin")?
    } else {
        std::fs::read_to_string(&a.file).with_context(|| format!("reading {}", a.file))?
    };
    let planned = plan_file(&text, a.target().as_ref(), &mut random)?;
    let mut c = client::connect(endpoint).await?;
    // The agent checks every experiment first (target, policy, kernel): all or nothing.
    let mut plans = Vec::new();
    for p in &planned {
        let req = pb::InjectRequest { dry_run: true, ..p.request.clone() };
        let plan = c.inject(req).await.map_err(|s| {
            anyhow::anyhow!(
                "document {} ({}), {}: {}",
                p.doc,
                p.resource,
                p.placement.describe,
                status(s)
            )
        })?;
        plans.push(plan.into_inner().plan.unwrap_or_default());
    }
    if a.dry_run {
        return print_plans(output, &planned, &plans);
    }
    let mut applied: Vec<pb::Experiment> = Vec::new();
    for p in &planned {
        match c.inject(p.request.clone()).await {
            Ok(r) => applied.extend(r.into_inner().experiment),
            Err(s) => {
                // Nothing of the file stays: those applied before are cancelled.
                for e in &applied {
                    let _ = c.cancel(pb::CancelRequest { id: e.id.clone() }).await;
                }
                bail!(
                    "document {} ({}), {}: {} ({} applied before it cancelled)",
                    p.doc,
                    p.resource,
                    p.placement.describe,
                    status(s),
                    applied.len()
                );
            }
        }
    }
    if output == Output::Table {
        eprint_line(&format!(
            "applied {} experiment{} from {} resource{}; `faultline cancel --label {RESOURCE_LABEL}=NAMESPACE/NAME` ends one resource's",
            applied.len(),
            if applied.len() == 1 { "" } else { "s" },
            planned.iter().map(|p| p.doc).collect::<std::collections::BTreeSet<_>>().len(),
            if planned.len() == 1 { "" } else { "s" },
        ));
    }
    display::print_experiments(output, &applied)
}

fn print_plans(output: Output, planned: &[Planned], plans: &[pb::Plan]) -> anyhow::Result<()> {
    match output {
        Output::Json => {
            let v: Vec<serde_json::Value> = planned
                .iter()
                .zip(plans)
                .map(|(p, plan)| {
                    serde_json::json!({
                        "document": p.doc,
                        "resource": p.resource,
                        "placement": p.placement.describe,
                        "fault": convert::fault_kind(p.request.fault.as_ref()),
                        "duration_ms": p.request.duration.map(|d| Duration::new(d.seconds as u64, d.nanos as u32).as_millis()),
                        "plan": display::plan::plan_json(plan),
                    })
                })
                .collect();
            println(&serde_json::to_string_pretty(&v)?)
        }
        Output::Table => {
            let mut out = String::new();
            for (p, plan) in planned.iter().zip(plans) {
                out += &format!(
                    "document {} {} -> {}: {}\n",
                    p.doc,
                    p.resource,
                    p.placement.describe,
                    display::summary::fault_summary(p.request.fault.as_ref())
                );
                out += &display::plan::plan_text(plan);
            }
            super::output::print(&out)
        }
    }
}
