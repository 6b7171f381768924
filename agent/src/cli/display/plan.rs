//! What `--dry-run` prints: the target as it resolved, the mechanism, and each kernel object
//! or process the fault would attach, create or act on. Nothing was applied.

use faultline_proto::v1 as pb;
use serde_json::{Value, json};

/// "dry run: nothing applied", the target, then one "action  on" line per step.
pub fn plan_text(p: &pb::Plan) -> String {
    let mut out = String::from("dry run: nothing applied\n");
    if let Some(r) = &p.resolved_target {
        out += &format!("target   {}\n", resolved(r));
    }
    out += &format!("backend  {}\n", p.backend);
    let w = p.steps.iter().map(|s| s.action.chars().count()).max().unwrap_or(0);
    for s in &p.steps {
        out += &format!("  {:<w$}  {}\n", s.action, s.on);
    }
    out
}

pub fn plan_json(p: &pb::Plan) -> Value {
    json!({
        "dry_run": true,
        "target": p.resolved_target.as_ref().map(resolved),
        "cgroup_id": p.resolved_target.as_ref().filter(|r| r.interface.is_empty()).map(|r| r.cgroup_id),
        "backend": p.backend,
        "steps": p.steps.iter().map(|s| json!({ "action": s.action, "on": s.on })).collect::<Vec<_>>(),
    })
}

fn resolved(r: &pb::ResolvedTarget) -> String {
    if !r.interface.is_empty() {
        return if r.netns.is_empty() {
            r.interface.clone()
        } else {
            format!("{}@{}", r.interface, r.netns)
        };
    }
    let mut s = format!("cgroup {} (id {})", r.cgroup_path, r.cgroup_id);
    if !r.container_id.is_empty() {
        s += &format!(", container {}", &r.container_id[..r.container_id.len().min(12)]);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_in_words() {
        let p = pb::Plan {
            resolved_target: Some(pb::ResolvedTarget {
                cgroup_path: "/shop".into(),
                cgroup_id: 42,
                ..Default::default()
            }),
            backend: "cgroup_skb".into(),
            steps: vec![
                pb::PlanStep {
                    action: "attach cgroup_skb/egress".into(),
                    on: "cgroup /shop".into(),
                },
                pb::PlanStep { action: "add rule".into(), on: "loss map".into() },
            ],
        };
        assert_eq!(
            plan_text(&p),
            "dry run: nothing applied\ntarget   cgroup /shop (id 42)\nbackend  cgroup_skb\n  \
             attach cgroup_skb/egress  cgroup /shop\n  add rule                  loss map\n"
        );
        assert_eq!(plan_json(&p)["steps"][1]["on"], "loss map");
    }
}
