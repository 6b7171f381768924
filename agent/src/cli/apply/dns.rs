//! DNSChaos: `action: error` for the names `patterns` match. Chaos Mesh answers from its own
//! CoreDNS (the k8s_dns_chaos plugin), which fails a chaos pod's matching queries with
//! SERVFAIL; faultline steers the pod's queries to any resolver on port 53 (Chaos Mesh has no
//! resolver field: it rewrites the cluster's DNS) to its responder, which answers matching
//! names with SERVFAIL and forwards the others.

use faultline_proto::v1 as pb;

use super::{
    Translated,
    manifest::{Node, Refusal, Result},
};

/// faultline's limit on name patterns (agent-core's validation).
const MAX_NAMES: usize = 64;

pub fn translate(spec: &Node) -> Result<Translated> {
    match spec.string("action")?.as_deref() {
        // Chaos Mesh's default is error.
        None | Some("error") => {}
        Some("random") => {
            return Err(Refusal::at(
                "spec.action",
                "random (answers with random addresses) is not one faultline runs: error only",
            ));
        }
        Some(other) => {
            return Err(Refusal::at("spec.action", format!("{other:?}: error or random")));
        }
    }
    let patterns = spec.strings("patterns")?.unwrap_or_default();
    if patterns.len() > MAX_NAMES {
        return Err(Refusal::at(
            spec.path_of("patterns"),
            format!("at most {MAX_NAMES} patterns, got {}", patterns.len()),
        ));
    }
    let mut names = Vec::new();
    for (i, p) in patterns.iter().enumerate() {
        names.push(pattern(p).map_err(|why| Refusal::at(format!("spec.patterns[{i}]"), why))?);
    }
    // No patterns: every name, as in Chaos Mesh.
    if names.is_empty() {
        names.push("*".to_string());
    }
    let containers = spec.strings("containerNames")?.unwrap_or_default();
    Ok(Translated {
        faults: vec![pb::fault::Kind::NetDns(pb::NetDns {
            names,
            answer: pb::DnsAnswer::Servfail as i32,
            percent: None,
            // Any resolver, port 53 (faultline's defaults).
            filter: None,
        })],
        containers,
    })
}

/// A Chaos Mesh pattern as a faultline name pattern: "google.com" (that name), "github.*"
/// (a wildcard, which Chaos Mesh allows at the end only), "chaos-mes?.org" (one character).
/// faultline's globs read * and ? the same way.
pub fn pattern(p: &str) -> std::result::Result<String, String> {
    let t = p.trim().trim_end_matches('.');
    if t.is_empty() {
        return Err("an empty pattern".into());
    }
    if let Some(i) = t.find('*')
        && i + 1 != t.len()
    {
        return Err(format!(
            "{p:?}: Chaos Mesh allows the wildcard * at the end of a pattern only"
        ));
    }
    if let Some(bad) =
        t.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '*' | '?')))
    {
        return Err(format!("{p:?}: {bad:?} is not allowed in a name pattern"));
    }
    if t.split('.').any(|l| l.is_empty() || l.len() > 63) {
        return Err(format!("{p:?}: labels must be 1-63 characters"));
    }
    Ok(t.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chaos_mesh_patterns() {
        assert_eq!(pattern("google.com").unwrap(), "google.com");
        assert_eq!(pattern("github.*").unwrap(), "github.*");
        assert_eq!(pattern("Chaos-Mes?.org.").unwrap(), "chaos-mes?.org");
        assert!(pattern("chaos-*.org").unwrap_err().contains("at the end"));
        assert!(pattern("a b").is_err());
        assert!(pattern("a..b").is_err());
    }

    fn plan(spec: &str, over: bool) -> anyhow::Result<Vec<super::super::Planned>> {
        let text = format!(
            "apiVersion: chaos-mesh.org/v1alpha1\nkind: DNSChaos\nmetadata: {{name: d, namespace: shop}}\nspec:\n  duration: 30s\n  mode: all\n{spec}"
        );
        let t = pb::Target { kind: Some(pb::target::Kind::CgroupPath("/x".into())) };
        super::super::plan_file(&text, over.then_some(&t), &mut || 0.0)
    }

    fn dns(p: &super::super::Planned) -> pb::NetDns {
        match p.request.fault.as_ref().unwrap().kind.as_ref().unwrap() {
            pb::fault::Kind::NetDns(d) => d.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn error_with_patterns_is_servfail_for_those_names() {
        let p =
            plan("  action: error\n  patterns: [google.com, \"github.*\", chaos-mes?.org]\n", true)
                .unwrap();
        let d = dns(&p[0]);
        assert_eq!(d.names, ["google.com", "github.*", "chaos-mes?.org"]);
        assert_eq!(d.answer, pb::DnsAnswer::Servfail as i32);
        assert_eq!((d.percent, d.filter), (None, None), "every query, any resolver on port 53");
        // No patterns: every name.
        assert_eq!(dns(&plan("  action: error\n", true).unwrap()[0]).names, ["*"]);
        // The containers of the named pods.
        let p = plan(
            "  action: error\n  patterns: [a.test]\n  selector: {pods: {shop: [web-0, web-1]}}\n  containerNames: [app]\n",
            false,
        )
        .unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].placement.describe, "container app of pod shop/web-1");
    }

    #[test]
    fn refusals_name_the_field() {
        for (spec, want) in [
            ("  action: random\n", "spec.action: random"),
            ("  action: delay\n", "spec.action: \"delay\""),
            ("  action: error\n  patterns: [ok.test, \"chaos-*.org\"]\n", "spec.patterns[1]: "),
            ("  action: error\n  patterns: [\"bad name\"]\n", "spec.patterns[0]: "),
            ("  action: error\n  scope: all\n", "spec.scope: not supported"),
        ] {
            let e = plan(spec, true).unwrap_err().to_string();
            assert!(e.contains(&format!("): {want}")), "{spec}: {e}");
        }
        let many: Vec<String> = (0..65).map(|i| format!("n{i}.test")).collect();
        let e = plan(&format!("  patterns: [{}]\n", many.join(", ")), true).unwrap_err();
        assert!(e.to_string().contains("spec.patterns: at most 64"), "{e}");
    }
}
