//! Who a resource is for. Chaos Mesh picks pods with `spec.selector` and then some of them
//! with `spec.mode`/`spec.value`; faultline resolves on the node, from the kubelet's pod
//! directories, so the selector must name its pods (`pods: {NAMESPACE: [NAME, ...]}`):
//! labels, fields, annotations and node selectors are not kept on the node and are refused,
//! unless a target given on the command line (`--pod`, `--container`, `--cgroup`) replaces
//! the selector.

use faultline_proto::v1 as pb;
use serde_yaml::Value;

use super::manifest::{Node, Refusal, Result};

/// One place a resource's fault goes: a pod (or one container of it), or the target the
/// command line named.
#[derive(Clone, Debug, PartialEq)]
pub struct Placement {
    pub target: pb::Target,
    /// For the plan and errors: "pod shop/redis-0", "container app of pod shop/web-1".
    pub describe: String,
}

/// How a resource picks among the pods its selector found.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    One,
    All,
    Fixed(usize),
    FixedPercent(f64),
    RandomMaxPercent(f64),
}

impl Mode {
    pub fn read(spec: &Node) -> Result<Mode> {
        let mode = spec.string("mode")?.unwrap_or_else(|| "all".into());
        let value = || -> Result<f64> {
            spec.number("value")?.ok_or_else(|| {
                Refusal::at(spec.path_of("value"), format!("required with mode {mode}"))
            })
        };
        Ok(match mode.as_str() {
            "one" => Mode::One,
            "all" => Mode::All,
            "fixed" => {
                let v = value()?;
                if v < 1.0 || v.fract() != 0.0 {
                    return Err(Refusal::at(
                        spec.path_of("value"),
                        format!("must be a whole number of pods, at least 1, got {v}"),
                    ));
                }
                Mode::Fixed(v as usize)
            }
            "fixed-percent" | "random-max-percent" => {
                let v = value()?;
                if !(v > 0.0 && v <= 100.0) {
                    return Err(Refusal::at(
                        spec.path_of("value"),
                        format!("must be above 0 and at most 100, got {v}"),
                    ));
                }
                if mode == "fixed-percent" {
                    Mode::FixedPercent(v)
                } else {
                    Mode::RandomMaxPercent(v)
                }
            }
            other => {
                return Err(Refusal::at(
                    spec.path_of("mode"),
                    format!("{other:?}: one, all, fixed, fixed-percent or random-max-percent"),
                ));
            }
        })
    }

    /// Which of `n` candidates: indexes, in order. `random` gives numbers in [0, 1).
    pub fn pick(
        self,
        n: usize,
        random: &mut impl FnMut() -> f64,
    ) -> std::result::Result<Vec<usize>, String> {
        let count = match self {
            Mode::One => 1,
            Mode::All => n,
            Mode::Fixed(k) => k.min(n),
            Mode::FixedPercent(p) => (n as f64 * p / 100.0).floor() as usize,
            Mode::RandomMaxPercent(p) => {
                (n as f64 * (random() * p) / 100.0).floor().max(1.0) as usize
            }
        };
        if count == 0 || n == 0 {
            return Err(format!("selects no pod of the {n} the selector found"));
        }
        // A partial Fisher-Yates shuffle: `count` distinct picks.
        let mut idx: Vec<usize> = (0..n).collect();
        for i in 0..count {
            let j = i + ((random() * (n - i) as f64) as usize).min(n - i - 1);
            idx.swap(i, j);
        }
        let mut chosen = idx[..count].to_vec();
        chosen.sort_unstable();
        Ok(chosen)
    }
}

/// The pods the selector names, as (namespace, name).
fn selected_pods(spec: &Node, ns: &str) -> Result<Vec<(String, String)>> {
    let sel = spec.node("selector")?.ok_or_else(|| {
        Refusal::at(
            spec.path_of("selector"),
            "required (or name the target on the command line: --pod, --container, --cgroup)",
        )
    })?;
    for unsupported in [
        "labelSelectors",
        "expressionSelectors",
        "annotationSelectors",
        "fieldSelectors",
        "nodeSelectors",
        "nodes",
        "podPhaseSelectors",
    ] {
        if sel.has(unsupported) {
            return Err(Refusal::at(
                sel.path_of(unsupported),
                "the node keeps no pod labels, annotations or fields (faultline asks no API \
                 server): name the pods in spec.selector.pods, or give the target on the command \
                 line (--pod NAMESPACE/NAME, --container ID, --cgroup PATH)",
            ));
        }
    }
    let namespaces = sel.strings("namespaces")?.unwrap_or_default();
    let mut pods = Vec::new();
    match sel.value("pods") {
        None => {
            return Err(Refusal::at(
                sel.path_of("pods"),
                format!(
                    "required: the pods to fault by name ({}), or give the target on the command line",
                    if namespaces.is_empty() {
                        format!("e.g. pods: {{{ns}: [NAME]}}")
                    } else {
                        "every pod of a namespace is not listed on the node".into()
                    }
                ),
            ));
        }
        Some(Value::Mapping(m)) => {
            for (k, v) in m {
                let pod_ns = k
                    .as_str()
                    .ok_or_else(|| Refusal::at(sel.path_of("pods"), "keys are namespaces"))?;
                let names = v.as_sequence().ok_or_else(|| {
                    Refusal::at(
                        format!("{}.{pod_ns}", sel.path_of("pods")),
                        "must be a list of pod names",
                    )
                })?;
                for (i, n) in names.iter().enumerate() {
                    let name = n.as_str().ok_or_else(|| {
                        Refusal::at(
                            format!("{}.{pod_ns}[{i}]", sel.path_of("pods")),
                            "must be a pod name",
                        )
                    })?;
                    pods.push((pod_ns.to_string(), name.to_string()));
                }
            }
        }
        Some(_) => {
            return Err(Refusal::at(
                sel.path_of("pods"),
                "must map namespaces to lists of pod names",
            ));
        }
    }
    // `namespaces` narrows the pods to those namespaces, as in Chaos Mesh.
    if !namespaces.is_empty() {
        pods.retain(|(n, _)| namespaces.contains(n));
    }
    sel.finish()?;
    Ok(pods)
}

/// Where the resource's faults go: the command line's target as given, or the selected pods
/// picked by `mode` — each pod whole, or each of `containers` in it (container-scoped kinds).
pub fn placements(
    spec: &Node,
    ns: &str,
    containers: &[String],
    overridden: Option<&pb::Target>,
    random: &mut impl FnMut() -> f64,
) -> Result<Vec<Placement>> {
    let mode = Mode::read(spec)?;
    if let Some(t) = overridden {
        // The selector is replaced, not read.
        spec.skip("selector");
        return Ok(vec![Placement {
            target: t.clone(),
            describe: "the target given on the command line".into(),
        }]);
    }
    let pods = selected_pods(spec, ns)?;
    let chosen =
        mode.pick(pods.len(), random).map_err(|why| Refusal::at(spec.path_of("mode"), why))?;
    let mut out = Vec::new();
    for i in chosen {
        let (pod_ns, name) = &pods[i];
        let pod = |container: &str| pb::Target {
            kind: Some(pb::target::Kind::Pod(pb::Pod {
                namespace: pod_ns.clone(),
                name: name.clone(),
                container_name: container.to_string(),
                ..Default::default()
            })),
        };
        if containers.is_empty() {
            out.push(Placement { target: pod(""), describe: format!("pod {pod_ns}/{name}") });
        }
        for c in containers {
            out.push(Placement {
                target: pod(c),
                describe: format!("container {c} of pod {pod_ns}/{name}"),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> Value {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn modes_pick_among_the_named_pods() {
        let mut r = || 0.5;
        assert_eq!(Mode::One.pick(4, &mut r).unwrap().len(), 1);
        assert_eq!(Mode::All.pick(4, &mut r).unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(Mode::Fixed(2).pick(4, &mut r).unwrap().len(), 2);
        assert_eq!(Mode::Fixed(9).pick(4, &mut r).unwrap().len(), 4);
        assert_eq!(Mode::FixedPercent(50.0).pick(4, &mut r).unwrap().len(), 2);
        assert!(Mode::FixedPercent(10.0).pick(4, &mut r).is_err());
        assert_eq!(Mode::RandomMaxPercent(100.0).pick(4, &mut r).unwrap().len(), 2);
        let picks = Mode::Fixed(3).pick(5, &mut r).unwrap();
        let mut d = picks.clone();
        d.dedup();
        assert_eq!(d, picks, "distinct");
    }

    #[test]
    fn pods_by_name_and_refusals() {
        let v =
            spec("selector: {namespaces: [shop], pods: {shop: [a, b], other: [c]}}\nmode: all\n");
        let n = Node::root(&v, "spec").unwrap();
        let p = placements(&n, "shop", &["app".into()], None, &mut || 0.0).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].describe, "container app of pod shop/b");
        let v = spec("selector: {labelSelectors: {app: web}}\nmode: one\n");
        let n = Node::root(&v, "spec").unwrap();
        let e = placements(&n, "shop", &[], None, &mut || 0.0).unwrap_err();
        assert_eq!(e.path, "spec.selector.labelSelectors");
        let t = pb::Target { kind: Some(pb::target::Kind::CgroupPath("/x".into())) };
        let p = placements(&n, "shop", &[], Some(&t), &mut || 0.0).unwrap();
        assert_eq!(p[0].target, t);
        assert_eq!(n.finish(), Ok(()));
        let v = spec("selector: {pods: {shop: [a]}}\nmode: fixed\n");
        let n = Node::root(&v, "spec").unwrap();
        assert_eq!(placements(&n, "shop", &[], None, &mut || 0.0).unwrap_err().path, "spec.value");
    }
}
