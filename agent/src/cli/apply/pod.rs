//! PodChaos on the node, without an API server: `pod-kill` sends SIGKILL to every process of
//! the pod (Kubernetes would delete the pod and its controller make a new one; here the
//! containers die and the kubelet restarts them in the same pod), `container-kill` sends
//! SIGKILL to every process of each container in `containerNames` (as Chaos Mesh's kill
//! through the runtime: the kubelet restarts it), and `pod-failure` freezes the pod's
//! processes for the duration (Chaos Mesh swaps the containers' images for a pause image, so
//! they restart with a fresh state; frozen processes keep theirs and run on when thawed).
//! Kills are one-shot, as in Chaos Mesh: `duration` may be left out. `gracePeriod` above 0
//! (SIGTERM, then SIGKILL after the period) is refused: faultline sends one signal per kill.

use std::time::Duration;

use faultline_proto::v1 as pb;

use super::{
    Translated,
    manifest::{Node, Refusal, Result},
};

/// How long a one-shot kill's experiment lasts when the manifest gives no duration: the kill
/// is at its start, so only long enough to be listed.
pub const ONE_SHOT: Duration = Duration::from_secs(5);

/// Whether the document is a kill (one-shot: no duration needed).
pub fn one_shot(spec: &Node) -> bool {
    matches!(
        spec.value("action").and_then(|v| v.as_str()),
        None | Some("pod-kill" | "container-kill")
    )
}

pub fn translate(spec: &Node) -> Result<Translated> {
    // Chaos Mesh's default action: pod-kill.
    let action = spec.string("action")?.unwrap_or_else(|| "pod-kill".into());
    let grace = spec.number("gracePeriod")?.unwrap_or(0.0);
    if grace != 0.0 {
        return Err(Refusal::at(
            "spec.gracePeriod",
            if action == "pod-kill" {
                format!(
                    "{grace}: faultline kills with one signal (SIGKILL at once, as gracePeriod 0); \
                     SIGTERM then SIGKILL after a grace period is not supported"
                )
            } else {
                "applies to pod-kill only".to_string()
            },
        ));
    }
    let names = spec.strings("containerNames")?.unwrap_or_default();
    let kill = || {
        pb::fault::Kind::ProcessKill(pb::ProcessKill {
            signal: "SIGKILL".into(),
            mode: pb::KillMode::All as i32,
            interval: None,
        })
    };
    let (fault, containers) = match action.as_str() {
        "pod-kill" | "pod-failure" => {
            if !names.is_empty() {
                return Err(Refusal::at(
                    "spec.containerNames",
                    format!(
                        "{action} acts on the whole pod: containerNames goes with container-kill"
                    ),
                ));
            }
            let f = if action == "pod-kill" {
                kill()
            } else {
                pb::fault::Kind::ProcessPause(pb::ProcessPause {})
            };
            (f, Vec::new())
        }
        "container-kill" => {
            if names.is_empty() {
                return Err(Refusal::at(
                    "spec.containerNames",
                    "required with container-kill: the containers to kill",
                ));
            }
            (kill(), names)
        }
        other => {
            return Err(Refusal::at(
                "spec.action",
                format!("{other:?}: pod-kill, pod-failure or container-kill"),
            ));
        }
    };
    Ok(Translated { faults: vec![fault], containers })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(yaml: &str) -> Result<Translated> {
        crate::cli::apply::translate_yaml(translate, yaml)
    }

    fn sigkill() -> pb::fault::Kind {
        pb::fault::Kind::ProcessKill(pb::ProcessKill {
            signal: "SIGKILL".into(),
            mode: pb::KillMode::All as i32,
            interval: None,
        })
    }

    #[test]
    fn kills_and_pause() {
        let t = run("action: pod-kill\ngracePeriod: 0").unwrap();
        assert_eq!((t.faults, t.containers.len()), (vec![sigkill()], 0));
        let t = run("action: container-kill\ncontainerNames: [app, envoy]").unwrap();
        assert_eq!((t.faults, t.containers), (vec![sigkill()], vec!["app".into(), "envoy".into()]));
        let t = run("action: pod-failure").unwrap();
        assert_eq!(t.faults, vec![pb::fault::Kind::ProcessPause(pb::ProcessPause {})]);
        // No action: Chaos Mesh's default, pod-kill.
        assert_eq!(run("{}").unwrap().faults, vec![sigkill()]);
    }

    #[test]
    fn one_shot_kills_need_no_duration() {
        for (yaml, want) in [
            ("action: pod-kill", true),
            ("action: container-kill", true),
            ("{}", true),
            ("action: pod-failure", false),
        ] {
            let v: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
            assert_eq!(one_shot(&Node::root(&v, "spec").unwrap()), want, "{yaml}");
        }
    }

    #[test]
    fn refusals_name_their_path() {
        for (yaml, path) in [
            ("action: pod-kill\ngracePeriod: 30", "spec.gracePeriod"),
            ("action: pod-failure\ngracePeriod: 30", "spec.gracePeriod"),
            ("action: container-kill", "spec.containerNames"),
            ("action: pod-kill\ncontainerNames: [app]", "spec.containerNames"),
            ("action: pod-failure\ncontainerNames: [app]", "spec.containerNames"),
            ("action: pod-restart", "spec.action"),
        ] {
            let r = run(yaml).err().unwrap_or_else(|| panic!("{yaml} was accepted"));
            assert_eq!(r.path, path, "{yaml}: {r}");
        }
    }

    /// Whole files: a kill without a duration plans a short experiment, a pause without one is
    /// refused, and a refused document refuses the file, naming it and the field.
    #[test]
    fn files_of_several_kinds() {
        let head = |kind: &str, name: &str| {
            format!(
                "apiVersion: chaos-mesh.org/v1alpha1\nkind: {kind}\nmetadata: {{name: {name}, namespace: shop}}\n"
            )
        };
        let sel = "  mode: all\n  selector: {pods: {shop: [web-0, web-1]}}\n";
        let kill = format!(
            "{}spec:\n  action: container-kill\n  containerNames: [app]\n{sel}",
            head("PodChaos", "k")
        );
        let p = super::super::plan_file(&kill, None, &mut || 0.0).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].placement.describe, "container app of pod shop/web-0");
        assert_eq!(p[0].request.duration.unwrap().seconds, ONE_SHOT.as_secs() as i64);
        let pause = format!("{}spec:\n  action: pod-failure\n{sel}", head("PodChaos", "p"));
        let e = super::super::plan_file(&pause, None, &mut || 0.0).unwrap_err().to_string();
        assert!(e.contains("spec.duration: required"), "{e}");
        let file = format!(
            "{kill}---\n{}spec:\n  duration: 30s\n  timeOffset: 1m\n  clockIds: [CLOCK_MONOTONIC]\n{sel}---\n{}spec:\n  duration: 30s\n  stressors: {{cpu: {{workers: 1, load: 20}}}}\n{sel}",
            head("TimeChaos", "t"),
            head("StressChaos", "s")
        );
        let e = super::super::plan_file(&file, None, &mut || 0.0).unwrap_err().to_string();
        assert!(e.starts_with("document 2 (TimeChaos shop/t): spec.clockIds[0]"), "{e}");
        let ok = file.replace("CLOCK_MONOTONIC", "CLOCK_REALTIME");
        let p = super::super::plan_file(&ok, None, &mut || 0.0).unwrap();
        assert_eq!(p.len(), 6, "two pods for each of three documents");
        assert_eq!(p[5].request.labels["chaos-mesh.org/resource"], "shop/s");
        assert_eq!(p[5].request.labels["chaos-mesh.org/kind"], "StressChaos");
    }
}
