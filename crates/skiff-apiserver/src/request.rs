//! Request parsing: resource paths, query parameters, content negotiation and body decoding.

use serde_json::Value;
use skiff_api::ApiError;
use skiff_api::registry::{self, ResourceDef};
use std::collections::HashMap;

/// What a `/api/...` or `/apis/...` path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `/api/v1` or `/apis/<group>/<version>`: the resource list of a group version.
    GroupVersion {
        group: String,
        version: String,
    },
    /// `/apis/<group>`: one API group.
    Group {
        group: String,
    },
    Resource(ResourcePath),
}

/// A resource request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourcePath {
    pub def: &'static ResourceDef,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

pub fn parse_path(path: &str) -> Result<Target, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group] => {
            return Ok(Target::Group {
                group: group.to_string(),
            });
        }
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(ApiError::NoRoute),
    };
    if !registry::group_versions().contains(&(group, version)) {
        return Err(ApiError::NoRoute);
    }
    if rest.is_empty() {
        return Ok(Target::GroupVersion {
            group: group.into(),
            version: version.into(),
        });
    }
    let find = |plural: &str| registry::lookup(group, version, plural).ok_or(ApiError::NoRoute);
    let segment = |s: &str| -> Result<String, ApiError> {
        let decoded = percent_decode(s);
        if decoded.is_empty() || decoded == "." || decoded == ".." || decoded.contains('/') {
            return Err(ApiError::NoRoute);
        }
        Ok(decoded)
    };
    // `namespaces/<ns>/<resource>/...` is a namespaced request unless the third segment is a
    // namespace subresource (`status`, `finalize`).
    if rest.len() >= 3 && rest[0] == "namespaces" && !matches!(rest[2], "status" | "finalize") {
        let def = find(rest[2])?;
        if !def.namespaced {
            return Err(ApiError::NoRoute);
        }
        let ns = segment(rest[1])?;
        return Ok(Target::Resource(ResourcePath {
            def,
            namespace: Some(ns),
            name: rest.get(3).map(|s| segment(s)).transpose()?,
            subresource: sub(rest.get(4..))?,
        }));
    }
    let def = find(rest[0])?;
    Ok(Target::Resource(ResourcePath {
        def,
        namespace: None,
        name: rest.get(1).map(|s| segment(s)).transpose()?,
        subresource: sub(rest.get(2..))?,
    }))
}

fn sub(rest: Option<&[&str]>) -> Result<Option<String>, ApiError> {
    match rest {
        None | Some([]) => Ok(None),
        Some([s]) => Ok(Some(s.to_string())),
        // pods/<name>/proxy/<path> and similar are not served.
        Some(_) => Err(ApiError::NoRoute),
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Query parameters.
#[derive(Debug, Clone, Default)]
pub struct Query(pub HashMap<String, String>);

impl Query {
    pub fn parse(q: Option<&str>) -> Self {
        Query(
            url::form_urlencoded::parse(q.unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
        )
    }
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|v| !v.is_empty())
    }
    /// A boolean parameter, parsed like Go's strconv.ParseBool (clients send `true`, `True`, `1`).
    pub fn flag(&self, k: &str) -> bool {
        matches!(
            self.get(k),
            Some("1" | "t" | "T" | "true" | "TRUE" | "True")
        )
    }
    pub fn int(&self, k: &str) -> Result<Option<i64>, ApiError> {
        self.get(k)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| ApiError::bad_request(format!("invalid value for {k}: {v:?}")))
            })
            .transpose()
    }
    pub fn dry_run(&self) -> bool {
        self.0.get("dryRun").is_some_and(|v| v == "All")
    }
}

/// How the client wants objects rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Json,
    /// `meta.k8s.io` Table, with `includeObject` (None|Metadata|Object).
    Table(IncludeObject),
    /// `PartialObjectMetadata[List]`.
    Metadata,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

/// Picks the first acceptable representation from an `Accept` header.
pub fn negotiate(accept: Option<&str>, query: &Query) -> Output {
    let Some(accept) = accept else {
        return Output::Json;
    };
    for part in accept.split(',') {
        let params: HashMap<String, String> = part
            .split(';')
            .skip(1)
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let media = part.split(';').next().unwrap_or_default().trim();
        let json_like = matches!(
            media,
            "application/json" | "*/*" | "application/*" | "application/yaml"
        );
        match params.get("as").map(String::as_str) {
            Some("Table")
                if params.get("g").map(String::as_str) == Some("meta.k8s.io") && json_like =>
            {
                let inc = match query.get("includeObject") {
                    Some("None") => IncludeObject::None,
                    Some("Object") => IncludeObject::Object,
                    _ => IncludeObject::Metadata,
                };
                return Output::Table(inc);
            }
            Some("PartialObjectMetadata" | "PartialObjectMetadataList")
                if params.get("g").map(String::as_str) == Some("meta.k8s.io") && json_like =>
            {
                return Output::Metadata;
            }
            Some(_) => continue,
            None if json_like || media.starts_with("application/vnd.kubernetes.protobuf") => {
                return Output::Json;
            }
            None => continue,
        }
    }
    Output::Json
}

/// Decodes a request body by content type (JSON, YAML, Kubernetes protobuf).
pub fn decode_body(content_type: Option<&str>, body: &[u8]) -> Result<Value, ApiError> {
    let media = content_type
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or_default()
        .trim();
    if body.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    match media {
        "application/vnd.kubernetes.protobuf" => skiff_api::protobuf::decode(body),
        "application/yaml" | "application/apply-patch+yaml" | "application/apply-patch+yml" => {
            let v: serde_yaml::Value = serde_yaml::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
            serde_json::to_value(v)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
        }
        _ => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("error decoding request body as JSON: {e}"))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let Target::Resource(r) =
            parse_path("/apis/apps/v1/namespaces/default/deployments/web/scale").unwrap()
        else {
            panic!()
        };
        assert_eq!(r.def.kind, "Deployment");
        assert_eq!(r.namespace.as_deref(), Some("default"));
        assert_eq!(r.name.as_deref(), Some("web"));
        assert_eq!(r.subresource.as_deref(), Some("scale"));
        let Target::Resource(r) = parse_path("/api/v1/namespaces/kube-system/status").unwrap()
        else {
            panic!()
        };
        assert_eq!(r.def.kind, "Namespace");
        assert_eq!(r.name.as_deref(), Some("kube-system"));
        let Target::Resource(r) = parse_path("/api/v1/namespaces/x").unwrap() else {
            panic!()
        };
        assert_eq!((r.def.kind, r.name.as_deref()), ("Namespace", Some("x")));
        let Target::Resource(r) = parse_path("/api/v1/pods").unwrap() else {
            panic!()
        };
        assert!(r.namespace.is_none() && r.name.is_none());
        assert!(parse_path("/api/v1/namespaces/x/nodes").is_err());
        assert!(parse_path("/apis/nope/v1/things").is_err());
        assert_eq!(
            parse_path("/apis/apps/v1").unwrap(),
            Target::GroupVersion {
                group: "apps".into(),
                version: "v1".into()
            }
        );
    }

    #[test]
    fn accept() {
        let q = Query::default();
        assert_eq!(
            negotiate(
                Some(
                    "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
                ),
                &q
            ),
            Output::Table(IncludeObject::Metadata)
        );
        assert_eq!(
            negotiate(Some("application/vnd.kubernetes.protobuf, */*"), &q),
            Output::Json
        );
        assert_eq!(negotiate(None, &q), Output::Json);
    }
}
