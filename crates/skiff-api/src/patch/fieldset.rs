//! Field sets: the field paths a manager owns, and their FieldsV1 encoding (`f:`, `k:`, `v:`, `i:`).

use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// One step of a field path. The derived order (fields, then keys, values,
/// indexes) is the order FieldsV1 is written in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElement {
    /// A field of a map: `f:replicas`.
    Field(String),
    /// An element of an associative list named by its key fields (sorted by
    /// name, values as JSON text): `k:{"name":"web"}`.
    Key(Vec<(String, String)>),
    /// An element of a set-like list, by its value as JSON text: `v:"example.com/protect"`.
    Value(String),
    /// An element of a list by position: `i:0`.
    Index(usize),
}

impl PathElement {
    pub fn field(name: &str) -> Self {
        PathElement::Field(name.to_string())
    }

    /// The FieldsV1 key of this element.
    fn encode(&self) -> String {
        match self {
            PathElement::Field(name) => format!("f:{name}"),
            PathElement::Key(fields) => {
                let mut s = String::from("k:{");
                for (i, (name, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        s.push(',');
                    }
                    s.push_str(&Value::String(name.clone()).to_string());
                    s.push(':');
                    s.push_str(value);
                }
                s.push('}');
                s
            }
            PathElement::Value(v) => format!("v:{v}"),
            PathElement::Index(i) => format!("i:{i}"),
        }
    }

    fn decode(s: &str) -> Result<Self, String> {
        let (kind, rest) = s
            .split_at_checked(2)
            .ok_or_else(|| format!("invalid path element {s:?}"))?;
        match kind {
            "f:" => Ok(PathElement::Field(rest.to_string())),
            "v:" => {
                let v: Value = serde_json::from_str(rest)
                    .map_err(|e| format!("invalid value in {s:?}: {e}"))?;
                Ok(PathElement::Value(v.to_string()))
            }
            "k:" => {
                let v: Value =
                    serde_json::from_str(rest).map_err(|e| format!("invalid key in {s:?}: {e}"))?;
                let Value::Object(fields) = v else {
                    return Err(format!("key {s:?} is not an object"));
                };
                Ok(key_element(fields.iter().map(|(k, v)| (k.as_str(), v))))
            }
            "i:" => rest
                .parse()
                .map(PathElement::Index)
                .map_err(|e| format!("invalid index in {s:?}: {e}")),
            _ => Err(format!("unknown path element type in {s:?}")),
        }
    }
}

/// The `k:` element for an associative-list entry with these key fields.
pub(crate) fn key_element<'a>(fields: impl Iterator<Item = (&'a str, &'a Value)>) -> PathElement {
    let mut fields: Vec<(String, String)> = fields
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    fields.sort();
    PathElement::Key(fields)
}

impl std::fmt::Display for PathElement {
    /// Kubernetes' rendering in conflict messages: `.spec`, `[name="web"]`, `[="x"]`, `[0]`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathElement::Field(name) => write!(f, ".{name}"),
            PathElement::Key(fields) => {
                let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(f, "[{}]", parts.join(","))
            }
            PathElement::Value(v) => write!(f, "[={v}]"),
            PathElement::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// `.spec.template.spec.containers[name="web"].image`.
pub fn path_string(path: &[PathElement]) -> String {
    let mut s = String::new();
    for pe in path {
        let _ = write!(s, "{pe}");
    }
    s
}

/// A set of field paths, as a tree: `members` end here, `children` go deeper.
/// A path can be both a member and have children (FieldsV1 writes that `.`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    members: BTreeSet<PathElement>,
    children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    pub fn new() -> Self {
        FieldSet::default()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.is_empty()
    }

    pub fn insert(&mut self, path: &[PathElement]) {
        match path {
            [] => {}
            [last] => {
                self.members.insert(last.clone());
            }
            [first, rest @ ..] => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    pub fn has(&self, path: &[PathElement]) -> bool {
        match path {
            [] => false,
            [last] => self.members.contains(last),
            [first, rest @ ..] => self.children.get(first).is_some_and(|c| c.has(rest)),
        }
    }

    /// Whether some path strictly below `path` is in the set.
    pub fn has_below(&self, path: &[PathElement]) -> bool {
        match path {
            [] => !self.is_empty(),
            [first, rest @ ..] => self.children.get(first).is_some_and(|c| c.has_below(rest)),
        }
    }

    /// The paths below `pe`, relative to it.
    pub fn child(&self, pe: &PathElement) -> Option<&FieldSet> {
        self.children.get(pe)
    }

    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.members.extend(other.members.iter().cloned());
        for (pe, child) in &other.children {
            let merged = match out.children.get(pe) {
                Some(mine) => mine.union(child),
                None => child.clone(),
            };
            out.children.insert(pe.clone(), merged);
        }
        out
    }

    /// The paths of `self` that are not paths of `other` (descendants of a path
    /// in `other` stay unless they are in `other` themselves).
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let members = self.members.difference(&other.members).cloned().collect();
        let children = self
            .children
            .iter()
            .filter_map(|(pe, child)| {
                let rest = match other.children.get(pe) {
                    Some(o) => child.difference(o),
                    None => child.clone(),
                };
                (!rest.is_empty()).then(|| (pe.clone(), rest))
            })
            .collect();
        FieldSet { members, children }
    }

    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let members = self.members.intersection(&other.members).cloned().collect();
        let children = self
            .children
            .iter()
            .filter_map(|(pe, child)| {
                let both = child.intersection(other.children.get(pe)?);
                (!both.is_empty()).then(|| (pe.clone(), both))
            })
            .collect();
        FieldSet { members, children }
    }

    /// Every path in the set, in FieldsV1 order.
    pub fn paths(&self) -> Vec<Vec<PathElement>> {
        let mut out = Vec::new();
        self.collect_paths(&mut Vec::new(), &mut out);
        out
    }

    fn collect_paths(&self, prefix: &mut Vec<PathElement>, out: &mut Vec<Vec<PathElement>>) {
        let mut keys: BTreeSet<&PathElement> = self.members.iter().collect();
        keys.extend(self.children.keys());
        for pe in keys {
            prefix.push(pe.clone());
            if self.members.contains(pe) {
                out.push(prefix.clone());
            }
            if let Some(child) = self.children.get(pe) {
                child.collect_paths(prefix, out);
            }
            prefix.pop();
        }
    }

    /// The FieldsV1 JSON of this set, as `metadata.managedFields[].fieldsV1` holds it.
    pub fn to_fields_v1(&self) -> Value {
        Value::Object(self.encode(false))
    }

    fn encode(&self, include_self: bool) -> Map<String, Value> {
        let mut out = Map::new();
        if include_self {
            out.insert(".".into(), Value::Object(Map::new()));
        }
        let mut keys: BTreeSet<&PathElement> = self.members.iter().collect();
        keys.extend(self.children.keys());
        for pe in keys {
            let body = match self.children.get(pe) {
                Some(child) => child.encode(self.members.contains(pe)),
                None => Map::new(),
            };
            out.insert(pe.encode(), Value::Object(body));
        }
        out
    }

    /// Parses FieldsV1 JSON.
    pub fn from_fields_v1(v: &Value) -> Result<FieldSet, String> {
        let Value::Object(map) = v else {
            return Err("fieldsV1 is not an object".into());
        };
        let mut set = FieldSet::new();
        for (key, body) in map {
            if key == "." {
                continue;
            }
            let pe = PathElement::decode(key)?;
            let Value::Object(inner) = body else {
                return Err(format!("fieldsV1 entry {key:?} is not an object"));
            };
            let only_self = inner.keys().all(|k| k == ".");
            if only_self || inner.contains_key(".") {
                set.members.insert(pe.clone());
            }
            if !only_self {
                let child = FieldSet::from_fields_v1(body)?;
                if !child.is_empty() {
                    set.children.insert(pe, child);
                }
            }
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(name: &str) -> PathElement {
        PathElement::field(name)
    }

    #[test]
    fn fields_v1_round_trips_with_self_markers() {
        let v = json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}},
                    "k:{\"name\":\"side\"}": {}
                }}}
            },
            "f:metadata2": {"v:\"a\"": {}, "i:3": {}}
        });
        let set = FieldSet::from_fields_v1(&v).unwrap();
        assert!(set.has(&[f("spec"), f("replicas")]));
        assert!(set.has(&[f("metadata"), f("labels")]));
        assert!(!set.has(&[f("spec")]));
        let web = key_element([("name", &json!("web"))].into_iter());
        let path = [
            f("spec"),
            f("template"),
            f("spec"),
            f("containers"),
            web.clone(),
            f("image"),
        ];
        assert!(set.has(&path));
        assert_eq!(
            path_string(&path),
            ".spec.template.spec.containers[name=\"web\"].image"
        );
        assert!(set.has(&[f("spec"), f("template"), f("spec"), f("containers"), web]));
        assert_eq!(set.to_fields_v1(), v);
        assert_eq!(FieldSet::from_fields_v1(&set.to_fields_v1()).unwrap(), set);
    }

    #[test]
    fn keys_are_sorted_and_rendered_like_kubernetes() {
        let pe =
            key_element([("protocol", &json!("TCP")), ("containerPort", &json!(80))].into_iter());
        assert_eq!(pe.encode(), "k:{\"containerPort\":80,\"protocol\":\"TCP\"}");
        assert_eq!(pe.to_string(), "[containerPort=80,protocol=\"TCP\"]");
        assert_eq!(PathElement::decode(&pe.encode()).unwrap(), pe);
        assert_eq!(PathElement::Value("\"x\"".into()).to_string(), "[=\"x\"]");
    }

    #[test]
    fn set_algebra() {
        let mut a = FieldSet::new();
        a.insert(&[f("spec"), f("replicas")]);
        a.insert(&[f("spec"), f("paused")]);
        let mut b = FieldSet::new();
        b.insert(&[f("spec"), f("replicas")]);
        b.insert(&[f("metadata"), f("labels"), f("app")]);
        assert_eq!(
            a.intersection(&b).paths(),
            vec![vec![f("spec"), f("replicas")]]
        );
        assert_eq!(a.difference(&b).paths(), vec![vec![f("spec"), f("paused")]]);
        assert_eq!(a.union(&b).paths().len(), 3);
        assert!(b.has_below(&[f("metadata")]));
        assert!(!b.has_below(&[f("spec"), f("replicas")]));
        assert!(a.difference(&a).is_empty());
    }

    #[test]
    fn malformed_fields_v1_is_an_error() {
        assert!(FieldSet::from_fields_v1(&json!({"x:y": {}})).is_err());
        assert!(FieldSet::from_fields_v1(&json!({"k:[1]": {}})).is_err());
        assert!(FieldSet::from_fields_v1(&json!([])).is_err());
        assert!(FieldSet::from_fields_v1(&json!({"f:a": 1})).is_err());
    }
}
