//! Reading a Chaos Mesh resource: its kind, metadata and spec, field by field. Every field a
//! kind reads is marked used; whatever is left unread when the kind is done is refused with
//! its path (`spec.bandwidth.peakrate: not supported`), so nothing in a manifest is silently
//! ignored.

use std::{cell::RefCell, collections::BTreeSet, time::Duration};

use serde_yaml::{Mapping, Value};

/// Why a document cannot be run: where in it, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub path: String,
    pub why: String,
}

impl Refusal {
    pub fn at(path: impl Into<String>, why: impl Into<String>) -> Self {
        Refusal { path: path.into(), why: why.into() }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.why)
    }
}

pub type Result<T> = std::result::Result<T, Refusal>;

/// One YAML document of the file.
#[derive(Debug)]
pub struct Doc {
    pub kind: String,
    pub name: String,
    pub namespace: String,
    pub spec: Value,
}

pub const API_VERSION: &str = "chaos-mesh.org/v1alpha1";

/// The documents of a file (`---` separated; empty ones skipped), or the first one that is
/// not a Chaos Mesh resource (its index, from 1, and why).
pub fn documents(text: &str) -> std::result::Result<Vec<Doc>, (usize, Refusal)> {
    let mut out = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let v = serde::Deserialize::deserialize(de)
            .map_err(|e: serde_yaml::Error| (i + 1, Refusal::at("(document)", e.to_string())))?;
        let v: Value = v;
        if v.is_null() {
            continue;
        }
        out.push(doc(&v).map_err(|r| (i + 1, r))?);
    }
    Ok(out)
}

fn doc(v: &Value) -> Result<Doc> {
    let top = Node::root(v, "")?;
    let api = top.string("apiVersion")?.unwrap_or_default();
    if api != API_VERSION {
        return Err(Refusal::at("apiVersion", format!("must be {API_VERSION}, got {api:?}")));
    }
    let kind = top.string("kind")?.ok_or_else(|| Refusal::at("kind", "required"))?;
    let meta = top.node("metadata")?.ok_or_else(|| Refusal::at("metadata", "required"))?;
    let name = meta.string("name")?.ok_or_else(|| Refusal::at("metadata.name", "required"))?;
    let namespace = meta.string("namespace")?.unwrap_or_else(|| "default".into());
    // Labels and annotations of the resource itself are bookkeeping: accepted, not used.
    for k in ["labels", "annotations", "uid", "generation", "resourceVersion", "creationTimestamp"]
    {
        meta.skip(k);
    }
    meta.finish()?;
    let spec = v.get("spec").cloned().ok_or_else(|| Refusal::at("spec", "required"))?;
    top.skip("spec");
    top.skip("status");
    top.finish()?;
    Ok(Doc { kind, name, namespace, spec })
}

/// A mapping of the document at `path`, read field by field.
pub struct Node<'a> {
    map: &'a Mapping,
    path: String,
    used: RefCell<BTreeSet<String>>,
}

impl<'a> Node<'a> {
    pub fn root(v: &'a Value, path: &str) -> Result<Node<'a>> {
        let map = v.as_mapping().ok_or_else(|| Refusal::at(path_or(path), "must be a mapping"))?;
        Ok(Node { map, path: path.to_string(), used: RefCell::new(BTreeSet::new()) })
    }

    /// The path of a field of this mapping.
    pub fn path_of(&self, key: &str) -> String {
        if self.path.is_empty() { key.to_string() } else { format!("{}.{key}", self.path) }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.used.borrow_mut().insert(key.to_string());
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// Marks a field as read without reading it (accepted and not needed).
    pub fn skip(&self, key: &str) {
        self.used.borrow_mut().insert(key.to_string());
    }

    /// Whether the field is there (not read).
    pub fn has(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|v| !v.is_null())
    }

    pub fn node(&self, key: &str) -> Result<Option<Node<'a>>> {
        self.get(key).map(|v| Node::root(v, &self.path_of(key))).transpose()
    }

    /// A string, or a number or bool written without quotes (YAML users write `loss: 50`).
    pub fn string(&self, key: &str) -> Result<Option<String>> {
        let Some(v) = self.get(key) else { return Ok(None) };
        match v {
            Value::String(s) => Ok(Some(s.clone())),
            Value::Number(n) => Ok(Some(n.to_string())),
            Value::Bool(b) => Ok(Some(b.to_string())),
            _ => Err(Refusal::at(self.path_of(key), "must be a string")),
        }
    }

    /// A number, written as one or as a string ("50", "0.5").
    pub fn number(&self, key: &str) -> Result<Option<f64>> {
        let Some(s) = self.string(key)? else { return Ok(None) };
        s.trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .map(Some)
            .ok_or_else(|| Refusal::at(self.path_of(key), format!("{s:?} is not a number")))
    }

    /// A number in [0, 100] (Chaos Mesh's percents and correlations).
    pub fn percent(&self, key: &str) -> Result<Option<f64>> {
        let v = self.number(key)?;
        if let Some(p) = v
            && !(0.0..=100.0).contains(&p)
        {
            return Err(Refusal::at(self.path_of(key), format!("must be 0 to 100, got {p}")));
        }
        Ok(v)
    }

    /// A Go duration as Chaos Mesh writes them ("30s", "1m30s", "100ms", "-10m" where signed
    /// is allowed: `signed`); returns (negative, magnitude).
    pub fn duration(&self, key: &str, signed: bool) -> Result<Option<(bool, Duration)>> {
        let Some(s) = self.string(key)? else { return Ok(None) };
        let t = s.trim();
        let (neg, rest) = match t.strip_prefix('-') {
            Some(r) if signed => (true, r),
            Some(_) => {
                return Err(Refusal::at(self.path_of(key), format!("{s:?}: must not be negative")));
            }
            None => (false, t.strip_prefix('+').unwrap_or(t)),
        };
        go_duration(rest).map(|d| Some((neg, d))).ok_or_else(|| {
            Refusal::at(
                self.path_of(key),
                format!("{s:?} is not a duration (e.g. 30s, 1m30s, 100ms)"),
            )
        })
    }

    pub fn strings(&self, key: &str) -> Result<Option<Vec<String>>> {
        let Some(v) = self.get(key) else { return Ok(None) };
        let seq =
            v.as_sequence().ok_or_else(|| Refusal::at(self.path_of(key), "must be a list"))?;
        seq.iter()
            .enumerate()
            .map(|(i, x)| match x {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                _ => Err(Refusal::at(format!("{}[{i}]", self.path_of(key)), "must be a string")),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// The raw value, for shapes a kind reads itself (the selector's `pods` map).
    pub fn value(&self, key: &str) -> Option<&'a Value> {
        self.get(key)
    }

    /// Refuses whatever field was not read, naming the first; an empty value counts as absent.
    pub fn finish(&self) -> Result<()> {
        let used = self.used.borrow();
        for (k, v) in self.map {
            let key = match k {
                Value::String(s) => s.clone(),
                other => format!("{other:?}"),
            };
            if used.contains(&key) || is_empty(v) {
                continue;
            }
            return Err(Refusal::at(self.path_of(&key), "not supported by faultline"));
        }
        Ok(())
    }
}

fn path_or(p: &str) -> &str {
    if p.is_empty() { "(document)" } else { p }
}

/// Absent in effect: null, "", an empty list or mapping, 0 or "0" (Chaos Mesh's defaults).
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty() || s == "0",
        Value::Sequence(s) => s.is_empty(),
        Value::Mapping(m) => m.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
        _ => false,
    }
}

/// "1h30m", "100ms", "2.5s", "90s", "1us": Go's time.ParseDuration units.
pub fn go_duration(s: &str) -> Option<Duration> {
    if s.is_empty() {
        return None;
    }
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let n = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if n == 0 {
            return None;
        }
        let num: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let secs = match &rest[..u] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += num * secs;
        rest = &rest[u..];
    }
    Some(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(go_duration("100ms"), Some(Duration::from_millis(100)));
        assert_eq!(go_duration("2.5s"), Some(Duration::from_millis(2500)));
        assert_eq!(go_duration("1m0.5s"), Some(Duration::from_millis(60_500)));
        for bad in ["", "5", "s", "1d", "1h-5m", "abc"] {
            assert_eq!(go_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn documents_and_unread_fields() {
        let text = "apiVersion: chaos-mesh.org/v1alpha1\nkind: NetworkChaos\nmetadata:\n  name: a\n  namespace: shop\nspec:\n  action: loss\n---\n---\napiVersion: chaos-mesh.org/v1alpha1\nkind: PodChaos\nmetadata: {name: b}\nspec: {action: pod-kill}\n";
        let docs = documents(text).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!((docs[0].kind.as_str(), docs[0].namespace.as_str()), ("NetworkChaos", "shop"));
        assert_eq!(docs[1].namespace, "default");
        let spec = Node::root(&docs[0].spec, "spec").unwrap();
        assert_eq!(spec.finish(), Err(Refusal::at("spec.action", "not supported by faultline")));
        assert_eq!(spec.string("action").unwrap().as_deref(), Some("loss"));
        assert_eq!(spec.finish(), Ok(()));
        let (i, r) =
            documents("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {}\n").unwrap_err();
        assert_eq!((i, r.path.as_str()), (1, "apiVersion"));
    }
}
