//! OpenAPI v3 (and v2) documents of the served resources, for kubectl apply, explain and validation.
//!
//! Shaped like kube-apiserver's: one v3 document per group-version with `components.schemas`
//! keyed by definition name and a path per resource operation. kubectl relies on details of it:
//! `explain` finds a kind by `x-kubernetes-group-version-kind`, client-side apply needs the
//! strategic-merge content type on PATCH and the patch extensions on fields, and `apply`
//! checks for server-side field validation by looking for a `fieldValidation` query parameter
//! on a PATCH operation carrying the kind's group-version-kind.

use crate::registry::{RESOURCES, ResourceDef, group_versions};
use crate::schema::{PATCH, REF_PREFIX, definitions};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha512};
use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock};

const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
const API_RESOURCE_LIST: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList";
const WATCH_EVENT: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent";
const SCALE: &str = "io.k8s.api.autoscaling.v1.Scale";

/// One built document, kept with its serialized form and digest.
struct Document {
    group: &'static str,
    version: &'static str,
    value: Value,
    bytes: Arc<Vec<u8>>,
    hash: String,
}

static V3: LazyLock<Vec<Document>> = LazyLock::new(|| {
    group_versions()
        .into_iter()
        .map(|(group, version)| {
            let value = build_group_version(group, version);
            let bytes = serde_json::to_vec(&value).unwrap_or_default();
            let hash = digest(&bytes);
            Document {
                group,
                version,
                value,
                bytes: Arc::new(bytes),
                hash,
            }
        })
        .collect()
});

fn digest(bytes: &[u8]) -> String {
    hex::encode_upper(Sha512::digest(bytes))
}

fn document(group: &str, version: &str) -> Option<&'static Document> {
    V3.iter().find(|d| d.group == group && d.version == version)
}

/// `api/v1` or `apis/<group>/<version>`: the key of a group-version in the v3 index.
pub fn group_version_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `GET /openapi/v3`: the index of group-version documents.
pub fn v3_root() -> Value {
    let mut paths = Map::new();
    for doc in V3.iter() {
        let path = group_version_path(doc.group, doc.version);
        let url = format!("/openapi/v3/{path}?hash={}", doc.hash);
        paths.insert(path, json!({ "serverRelativeURL": url }));
    }
    json!({ "paths": paths })
}

/// `GET /openapi/v3/api/v1` or `/openapi/v3/apis/<group>/<version>`.
pub fn v3_group_version(group: &str, version: &str) -> Option<Value> {
    document(group, version).map(|d| d.value.clone())
}

/// The same document, serialized once.
pub fn v3_group_version_bytes(group: &str, version: &str) -> Option<Arc<Vec<u8>>> {
    document(group, version).map(|d| d.bytes.clone())
}

/// The digest that the index's `serverRelativeURL` carries (usable as an ETag).
pub fn v3_group_version_hash(group: &str, version: &str) -> Option<&'static str> {
    document(group, version).map(|d| d.hash.as_str())
}

// ---------------------------------------------------------------------------------------------
// One group-version document.
// ---------------------------------------------------------------------------------------------

fn build_group_version(group: &'static str, version: &'static str) -> Value {
    let resources: Vec<&ResourceDef> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    let mut paths = Map::new();
    let prefix = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    let ids = OperationIds::new(group, version);
    paths.insert(
        format!("{prefix}/"),
        json!({ "get": {
            "tags": [ids.tag],
            "description": "get available resources",
            "operationId": format!("get{}{}APIResources", ids.group, ids.version),
            "responses": {
                "200": ok_response("OK", API_RESOURCE_LIST, false),
                "401": { "description": "Unauthorized" },
            },
        }}),
    );
    let mut roots: BTreeSet<String> = [
        DELETE_OPTIONS,
        STATUS,
        PATCH,
        API_RESOURCE_LIST,
        WATCH_EVENT,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for def in &resources {
        roots.insert(def.schema_name.to_string());
        roots.insert(format!("{}List", def.schema_name));
        if def.scale {
            roots.insert(SCALE.to_string());
        }
        resource_paths(&mut paths, &prefix, &ids, def);
    }

    let mut sorted: Vec<(String, Value)> = paths.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let paths: Map<String, Value> = sorted.into_iter().collect();

    let defs = definitions();
    let needed = closure(defs, roots);
    let schemas: Map<String, Value> = defs
        .iter()
        .filter(|(name, _)| needed.contains(name.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();

    json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": crate::KUBE_GIT_VERSION },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "BearerToken": {
                    "type": "apiKey",
                    "description": "Bearer Token authentication",
                    "name": "authorization",
                    "in": "header",
                },
            },
        },
        "security": [{ "BearerToken": [] }],
    })
}

/// Every definition reachable from `roots` through `$ref`s.
fn closure(defs: &Map<String, Value>, roots: BTreeSet<String>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut pending: Vec<String> = roots.into_iter().collect();
    while let Some(name) = pending.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(schema) = defs.get(&name) {
            collect_refs(schema, &mut pending);
        }
    }
    seen
}

fn collect_refs(schema: &Value, out: &mut Vec<String>) {
    match schema {
        Value::Object(map) => {
            if let Some(name) = map
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix(REF_PREFIX))
            {
                out.push(name.to_string());
            }
            map.values().for_each(|v| collect_refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// The pieces of kube-apiserver's operation ids and tags for one group-version.
struct OperationIds {
    /// `apps_v1`, `core_v1`, `coordination_v1`.
    tag: String,
    /// `Apps`, `Core`, `Coordination`.
    group: String,
    /// `V1`, `V2`.
    version: String,
}

impl OperationIds {
    fn new(group: &str, version: &str) -> Self {
        let short = if group.is_empty() {
            "core"
        } else {
            group.split('.').next().unwrap_or(group)
        };
        OperationIds {
            tag: format!("{short}_{version}"),
            group: capitalize(short),
            version: capitalize(version),
        }
    }

    fn id(&self, verb: &str, middle: &str, kind: &str, suffix: &str) -> String {
        format!("{verb}{}{}{middle}{kind}{suffix}", self.group, self.version)
    }
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("{REF_PREFIX}{name}") })
}

fn ok_response(description: &str, schema: &str, watchable: bool) -> Value {
    let mut content = Map::new();
    let mut types = vec![
        "application/json",
        "application/yaml",
        "application/vnd.kubernetes.protobuf",
    ];
    if watchable {
        types.extend([
            "application/json;stream=watch",
            "application/vnd.kubernetes.protobuf;stream=watch",
        ]);
    }
    for t in types {
        content.insert(t.to_string(), json!({ "schema": schema_ref(schema) }));
    }
    json!({ "description": description, "content": content })
}

fn query(name: &str, description: &str, schema: Value) -> Value {
    json!({ "name": name, "in": "query", "description": description, "schema": schema })
}

fn string_query(name: &str, description: &str) -> Value {
    query(
        name,
        description,
        json!({ "type": "string", "uniqueItems": true }),
    )
}

fn path_param(name: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": "path",
        "description": description,
        "required": true,
        "schema": { "type": "string", "uniqueItems": true },
    })
}

fn pretty() -> Value {
    string_query("pretty", "If 'true', then the output is pretty printed.")
}

fn dry_run() -> Value {
    string_query(
        "dryRun",
        "When present, indicates that modifications should not be persisted. The only valid value is All: all dry run stages are processed, nothing is stored.",
    )
}

fn field_manager() -> Value {
    string_query(
        "fieldManager",
        "fieldManager is a name associated with the actor or entity that is making these changes. At most 128 printable characters.",
    )
}

fn field_validation() -> Value {
    string_query(
        "fieldValidation",
        "fieldValidation tells the server what to do with objects in the request (POST/PUT/PATCH) that contain unknown or duplicate fields. Ignore: drop unknown fields silently and keep the last duplicate. Warn: the same, and send a warning header for each such field. Strict: fail the request with BadRequest naming every unknown or duplicate field.",
    )
}

fn force() -> Value {
    query(
        "force",
        "Force is going to \"force\" Apply requests: the request re-acquires conflicting fields owned by other managers. Must be unset for non-apply patch requests.",
        json!({ "type": "boolean", "uniqueItems": true }),
    )
}

fn list_params() -> Vec<Value> {
    let int = json!({ "type": "integer", "uniqueItems": true });
    let boolean = json!({ "type": "boolean", "uniqueItems": true });
    vec![
        query(
            "allowWatchBookmarks",
            "allowWatchBookmarks requests watch events with type \"BOOKMARK\".",
            boolean.clone(),
        ),
        string_query(
            "continue",
            "The continue option should be set when retrieving more results from the server: its value is the continue token of the previous page.",
        ),
        string_query(
            "fieldSelector",
            "A selector to restrict the list of returned objects by their fields. Defaults to everything.",
        ),
        string_query(
            "labelSelector",
            "A selector to restrict the list of returned objects by their labels. Defaults to everything.",
        ),
        query(
            "limit",
            "limit is a maximum number of responses to return for a list call; a continue token is returned when more remain.",
            int.clone(),
        ),
        string_query(
            "resourceVersion",
            "resourceVersion sets a constraint on what resource versions a request may be served from.",
        ),
        string_query(
            "resourceVersionMatch",
            "resourceVersionMatch determines how resourceVersion is applied to list calls.",
        ),
        query(
            "sendInitialEvents",
            "`sendInitialEvents=true` may be set together with `watch=true`: the watch starts with synthetic events for the current state.",
            boolean.clone(),
        ),
        query(
            "timeoutSeconds",
            "Timeout for the list/watch call, regardless of any activity or inactivity.",
            int,
        ),
        query(
            "watch",
            "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications.",
            boolean,
        ),
    ]
}

fn delete_params() -> Vec<Value> {
    vec![
        dry_run(),
        query(
            "gracePeriodSeconds",
            "The duration in seconds before the object should be deleted. Zero means delete immediately.",
            json!({ "type": "integer", "uniqueItems": true }),
        ),
        query(
            "ignoreStoreReadErrorWithClusterBreakingPotential",
            "if set to true, an unreadable (corrupt) object is deleted without running the normal deletion flow.",
            json!({ "type": "boolean", "uniqueItems": true }),
        ),
        query(
            "orphanDependents",
            "Deprecated: please use the PropagationPolicy, this field will be deprecated in 1.7.",
            json!({ "type": "boolean", "uniqueItems": true }),
        ),
        string_query(
            "propagationPolicy",
            "Whether and how garbage collection will be performed: 'Orphan', 'Background' or 'Foreground'.",
        ),
    ]
}

fn body(schema: &str) -> Value {
    json!({ "content": { "*/*": { "schema": schema_ref(schema) } }, "required": true })
}

fn patch_body() -> Value {
    let mut content = Map::new();
    for t in [
        "application/apply-patch+yaml",
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
    ] {
        content.insert(t.to_string(), json!({ "schema": schema_ref(PATCH) }));
    }
    json!({ "content": content, "required": true })
}

/// The common parts of one operation.
struct Op<'a> {
    ids: &'a OperationIds,
    action: &'static str,
    gvk: Value,
    description: String,
    operation_id: String,
}

impl Op<'_> {
    fn build(self, parameters: Vec<Value>, request_body: Option<Value>, responses: Value) -> Value {
        let mut op = json!({
            "tags": [self.ids.tag],
            "description": self.description,
            "operationId": self.operation_id,
        });
        if !parameters.is_empty() {
            op["parameters"] = Value::Array(parameters);
        }
        if let Some(b) = request_body {
            op["requestBody"] = b;
        }
        op["responses"] = responses;
        op["x-kubernetes-action"] = json!(self.action);
        op["x-kubernetes-group-version-kind"] = self.gvk;
        op
    }
}

fn unauthorized(mut responses: Value) -> Value {
    responses["401"] = json!({ "description": "Unauthorized" });
    responses
}

/// Adds the collection, item, `/status` and `/scale` paths of one resource.
fn resource_paths(
    paths: &mut Map<String, Value>,
    prefix: &str,
    ids: &OperationIds,
    def: &ResourceDef,
) {
    let kind = def.kind;
    let gvk = json!({ "group": def.group, "kind": kind, "version": def.version });
    let namespaced = if def.namespaced { "Namespaced" } else { "" };
    let base = if def.namespaced {
        format!("{prefix}/namespaces/{{namespace}}/{}", def.plural)
    } else {
        format!("{prefix}/{}", def.plural)
    };
    let list_schema = format!("{}List", def.schema_name);
    let op = |action: &'static str, description: String, operation_id: String| Op {
        ids,
        action,
        gvk: gvk.clone(),
        description,
        operation_id,
    };
    let namespace_param = path_param(
        "namespace",
        "object name and auth scope, such as for teams and projects",
    );
    let name_param = path_param("name", &format!("name of the {kind}"));

    // The collection: list, create, delete collection.
    let mut collection = Map::new();
    collection.insert(
        "get".into(),
        op(
            "list",
            format!("list or watch objects of kind {kind}"),
            ids.id("list", namespaced, kind, ""),
        )
        .build(
            list_params(),
            None,
            unauthorized(json!({ "200": ok_response("OK", &list_schema, true) })),
        ),
    );
    collection.insert(
        "post".into(),
        op(
            "post",
            format!("create a {kind}"),
            ids.id("create", namespaced, kind, ""),
        )
        .build(
            vec![dry_run(), field_manager(), field_validation()],
            Some(body(def.schema_name)),
            unauthorized(json!({
                "200": ok_response("OK", def.schema_name, false),
                "201": ok_response("Created", def.schema_name, false),
                "202": ok_response("Accepted", def.schema_name, false),
            })),
        ),
    );
    let mut deletecollection_params = list_params();
    deletecollection_params.extend(delete_params());
    deletecollection_params.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    collection.insert(
        "delete".into(),
        op(
            "deletecollection",
            format!("delete collection of {kind}"),
            ids.id("delete", &format!("Collection{namespaced}"), kind, ""),
        )
        .build(
            deletecollection_params,
            Some(json!({ "content": { "*/*": { "schema": schema_ref(DELETE_OPTIONS) } } })),
            unauthorized(json!({ "200": ok_response("OK", STATUS, false) })),
        ),
    );
    let mut path_params = Vec::new();
    if def.namespaced {
        path_params.push(namespace_param.clone());
    }
    path_params.push(pretty());
    collection.insert("parameters".into(), Value::Array(path_params));
    paths.insert(base.clone(), Value::Object(collection));

    // One object: read, replace, patch, delete.
    let item_params = || {
        let mut p = vec![name_param.clone()];
        if def.namespaced {
            p.push(namespace_param.clone());
        }
        p.push(pretty());
        Value::Array(p)
    };
    let mut item = Map::new();
    item.insert(
        "get".into(),
        op(
            "get",
            format!("read the specified {kind}"),
            ids.id("read", namespaced, kind, ""),
        )
        .build(
            Vec::new(),
            None,
            unauthorized(json!({ "200": ok_response("OK", def.schema_name, false) })),
        ),
    );
    item.insert(
        "put".into(),
        op(
            "put",
            format!("replace the specified {kind}"),
            ids.id("replace", namespaced, kind, ""),
        )
        .build(
            vec![dry_run(), field_manager(), field_validation()],
            Some(body(def.schema_name)),
            unauthorized(json!({
                "200": ok_response("OK", def.schema_name, false),
                "201": ok_response("Created", def.schema_name, false),
            })),
        ),
    );
    item.insert(
        "patch".into(),
        op(
            "patch",
            format!("partially update the specified {kind}"),
            ids.id("patch", namespaced, kind, ""),
        )
        .build(
            vec![dry_run(), field_manager(), field_validation(), force()],
            Some(patch_body()),
            unauthorized(json!({
                "200": ok_response("OK", def.schema_name, false),
                "201": ok_response("Created", def.schema_name, false),
            })),
        ),
    );
    item.insert(
        "delete".into(),
        op(
            "delete",
            format!("delete a {kind}"),
            ids.id("delete", namespaced, kind, ""),
        )
        .build(
            delete_params(),
            Some(json!({ "content": { "*/*": { "schema": schema_ref(DELETE_OPTIONS) } } })),
            unauthorized(json!({
                "200": ok_response("OK", STATUS, false),
                "202": ok_response("Accepted", STATUS, false),
            })),
        ),
    );
    item.insert("parameters".into(), item_params());
    paths.insert(format!("{base}/{{name}}"), Value::Object(item));

    // Subresources: `/status` is the same kind, `/scale` is autoscaling/v1 Scale.
    let mut subresources: Vec<(&str, &str, Value)> = Vec::new();
    if def.status {
        subresources.push(("status", def.schema_name, gvk.clone()));
    }
    if def.scale {
        subresources.push((
            "scale",
            SCALE,
            json!({ "group": "autoscaling", "kind": "Scale", "version": "v1" }),
        ));
    }
    for (sub, schema, sub_gvk) in subresources {
        let suffix = capitalize(sub);
        let sub_op = |action: &'static str, description: String, operation_id: String| Op {
            ids,
            action,
            gvk: sub_gvk.clone(),
            description,
            operation_id,
        };
        let mut path = Map::new();
        path.insert(
            "get".into(),
            sub_op(
                "get",
                format!("read {sub} of the specified {kind}"),
                ids.id("read", namespaced, kind, &suffix),
            )
            .build(
                Vec::new(),
                None,
                unauthorized(json!({ "200": ok_response("OK", schema, false) })),
            ),
        );
        path.insert(
            "put".into(),
            sub_op(
                "put",
                format!("replace {sub} of the specified {kind}"),
                ids.id("replace", namespaced, kind, &suffix),
            )
            .build(
                vec![dry_run(), field_manager(), field_validation()],
                Some(body(schema)),
                unauthorized(json!({
                    "200": ok_response("OK", schema, false),
                    "201": ok_response("Created", schema, false),
                })),
            ),
        );
        path.insert(
            "patch".into(),
            sub_op(
                "patch",
                format!("partially update {sub} of the specified {kind}"),
                ids.id("patch", namespaced, kind, &suffix),
            )
            .build(
                vec![dry_run(), field_manager(), field_validation(), force()],
                Some(patch_body()),
                unauthorized(json!({
                    "200": ok_response("OK", schema, false),
                    "201": ok_response("Created", schema, false),
                })),
            ),
        );
        path.insert("parameters".into(), item_params());
        paths.insert(format!("{base}/{{name}}/{sub}"), Value::Object(path));
    }

    // Namespaced resources can also be listed across all namespaces.
    if def.namespaced {
        let mut all = Map::new();
        all.insert(
            "get".into(),
            op(
                "list",
                format!("list or watch objects of kind {kind}"),
                ids.id("list", "", kind, "ForAllNamespaces"),
            )
            .build(
                Vec::new(),
                None,
                unauthorized(json!({ "200": ok_response("OK", &list_schema, true) })),
            ),
        );
        let mut params = list_params();
        params.push(pretty());
        params.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        all.insert("parameters".into(), Value::Array(params));
        paths.insert(format!("{prefix}/{}", def.plural), Value::Object(all));
    }
}

// ---------------------------------------------------------------------------------------------
// Swagger 2.0 (`/openapi/v2`), derived from the v3 documents for older clients.
// ---------------------------------------------------------------------------------------------

/// `GET /openapi/v2`: one Swagger 2.0 document of every served group-version, serialized once.
pub fn v2() -> Arc<Vec<u8>> {
    static V2: LazyLock<Arc<Vec<u8>>> =
        LazyLock::new(|| Arc::new(serde_json::to_vec(&build_v2()).unwrap_or_default()));
    V2.clone()
}

fn build_v2() -> Value {
    let mut paths: Vec<(String, Value)> = Vec::new();
    for doc in V3.iter() {
        if let Some(p) = doc.value["paths"].as_object() {
            paths.extend(p.iter().map(|(k, item)| (k.clone(), v2_path_item(item))));
        }
    }
    paths.sort_by(|a, b| a.0.cmp(&b.0));
    let definitions: Map<String, Value> = definitions()
        .iter()
        .map(|(name, schema)| (name.clone(), v2_schema(name, schema)))
        .collect();
    json!({
        "swagger": "2.0",
        "info": { "title": "Kubernetes", "version": crate::KUBE_GIT_VERSION },
        "paths": paths.into_iter().collect::<Map<String, Value>>(),
        "definitions": definitions,
        "securityDefinitions": {
            "BearerToken": {
                "description": "Bearer Token authentication",
                "type": "apiKey",
                "name": "authorization",
                "in": "header",
            },
        },
        "security": [{ "BearerToken": [] }],
    })
}

/// A definition in Swagger 2.0 form: `#/definitions/` references with their siblings kept
/// beside them (as kube-apiserver's v2 has it), and the two one-of types as strings.
fn v2_schema(name: &str, schema: &Value) -> Value {
    match name {
        crate::schema::QUANTITY => {
            return json!({ "description": schema["description"], "type": "string" });
        }
        crate::schema::INT_OR_STRING => {
            return json!({ "description": schema["description"], "type": "string", "format": "int-or-string" });
        }
        _ => {}
    }
    let mut out = schema.clone();
    v2_refs(&mut out);
    out
}

fn v2_refs(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            let single_ref = match map
                .get("allOf")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
            {
                Some([only]) => only.get("$ref").cloned(),
                _ => None,
            };
            if let Some(r) = single_ref {
                let rest = std::mem::take(map);
                map.insert("$ref".into(), r);
                map.extend(rest.into_iter().filter(|(k, _)| k != "allOf"));
            }
            if let Some(Value::String(r)) = map.get_mut("$ref")
                && let Some(name) = r.strip_prefix(REF_PREFIX)
            {
                *r = format!("#/definitions/{name}");
            }
            map.values_mut().for_each(v2_refs);
        }
        Value::Array(items) => items.iter_mut().for_each(v2_refs),
        _ => {}
    }
}

fn v2_path_item(item: &Value) -> Value {
    let mut out = Map::new();
    if let Some(map) = item.as_object() {
        for (key, value) in map {
            let converted = if key == "parameters" {
                v2_parameters(value)
            } else {
                v2_operation(value)
            };
            out.insert(key.clone(), converted);
        }
    }
    Value::Object(out)
}

/// Swagger 2.0 parameters carry their type inline instead of in a `schema`.
fn v2_parameters(params: &Value) -> Value {
    let converted = params.as_array().map(|list| {
        list.iter()
            .map(|p| {
                let mut out = Map::new();
                for key in [
                    "uniqueItems",
                    "type",
                    "name",
                    "in",
                    "description",
                    "required",
                ] {
                    let value = if key == "type" || key == "uniqueItems" {
                        &p["schema"][key]
                    } else {
                        &p[key]
                    };
                    if !value.is_null() {
                        out.insert(key.to_string(), value.clone());
                    }
                }
                Value::Object(out)
            })
            .collect::<Vec<_>>()
    });
    Value::Array(converted.unwrap_or_default())
}

fn v2_operation(op: &Value) -> Value {
    let Some(map) = op.as_object() else {
        return op.clone();
    };
    let mut out = Map::new();
    let mut produces: Vec<String> = Vec::new();
    let mut responses = Map::new();
    if let Some(codes) = map.get("responses").and_then(Value::as_object) {
        for (code, response) in codes {
            let mut r = json!({ "description": response["description"] });
            if let Some(content) = response.get("content").and_then(Value::as_object) {
                for t in content.keys() {
                    if !produces.contains(t) {
                        produces.push(t.clone());
                    }
                }
                if let Some(first) = content.values().next() {
                    let mut schema = first["schema"].clone();
                    v2_refs(&mut schema);
                    r["schema"] = schema;
                }
            }
            responses.insert(code.clone(), r);
        }
    }
    let consumes: Vec<String> = map
        .get("requestBody")
        .and_then(|b| b.get("content"))
        .and_then(Value::as_object)
        .map(|c| c.keys().cloned().collect())
        .unwrap_or_default();
    for (key, value) in map {
        match key.as_str() {
            "parameters" | "requestBody" | "responses" => {}
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    if !consumes.is_empty() {
        out.insert("consumes".into(), json!(consumes));
    }
    out.insert("produces".into(), json!(produces));
    out.insert("schemes".into(), json!(["https"]));
    let mut parameters = match map.get("parameters") {
        Some(p) => v2_parameters(p).as_array().cloned().unwrap_or_default(),
        None => Vec::new(),
    };
    if let Some(body) = map.get("requestBody") {
        let mut schema = body["content"]
            .as_object()
            .and_then(|c| c.values().next())
            .map(|m| m["schema"].clone())
            .unwrap_or(Value::Null);
        v2_refs(&mut schema);
        let mut param = json!({ "name": "body", "in": "body", "schema": schema });
        if body["required"] == Value::Bool(true) {
            param["required"] = json!(true);
        }
        parameters.insert(0, param);
    }
    if !parameters.is_empty() {
        out.insert("parameters".into(), Value::Array(parameters));
    }
    out.insert("responses".into(), Value::Object(responses));
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gv_doc(group: &str, version: &str) -> Value {
        v3_group_version(group, version).expect("served group-version")
    }

    #[test]
    fn root_lists_every_group_version_with_a_stable_hash() {
        let root = v3_root();
        let paths = root["paths"].as_object().expect("paths");
        assert_eq!(paths.len(), group_versions().len());
        let url = paths["apis/apps/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap_or_default();
        let hash = v3_group_version_hash("apps", "v1").unwrap_or_default();
        assert_eq!(url, format!("/openapi/v3/apis/apps/v1?hash={hash}"));
        assert_eq!(
            hash,
            digest(&v3_group_version_bytes("apps", "v1").unwrap_or_default())
        );
        assert!(
            paths["api/v1"]["serverRelativeURL"]
                .as_str()
                .unwrap_or_default()
                .starts_with("/openapi/v3/api/v1?hash=")
        );
        assert!(v3_group_version("apps", "v9").is_none());
    }

    #[test]
    fn kinds_carry_their_group_version_kind_and_patch_metadata() {
        let doc = gv_doc("apps", "v1");
        let schemas = &doc["components"]["schemas"];
        assert_eq!(
            schemas["io.k8s.api.apps.v1.Deployment"]["x-kubernetes-group-version-kind"],
            json!([{ "group": "apps", "kind": "Deployment", "version": "v1" }])
        );
        assert_eq!(
            schemas["io.k8s.api.apps.v1.DeploymentList"]["x-kubernetes-group-version-kind"][0]["kind"],
            "DeploymentList"
        );
        let containers = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(
            schemas["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["strategy"]["x-kubernetes-patch-strategy"],
            "retainKeys"
        );
        assert!(schemas["io.k8s.api.autoscaling.v1.Scale"].is_object());
        assert!(
            schemas["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["description"].is_string()
        );
        // Only this group-version's kinds and what they use.
        assert!(schemas.get("io.k8s.api.batch.v1.Job").is_none());
    }

    #[test]
    fn every_reference_resolves_inside_its_document() {
        for (group, version) in group_versions() {
            let doc = gv_doc(group, version);
            let mut refs = Vec::new();
            collect_refs(&doc, &mut refs);
            for name in refs {
                assert!(
                    doc["components"]["schemas"].get(&name).is_some(),
                    "{group}/{version}: {name} missing"
                );
            }
        }
    }

    /// What kubectl's query-param verifier does: some PATCH operation with the kind's GVK
    /// extension must list `fieldValidation` as a query parameter. Every PATCH of the kind must
    /// (Go iterates the paths in random order and stops at the first match).
    #[test]
    fn every_patch_of_every_kind_accepts_field_validation() {
        for def in RESOURCES {
            let doc = gv_doc(def.group, def.version);
            let gvk = json!({ "group": def.group, "kind": def.kind, "version": def.version });
            let patches: Vec<&Value> = doc["paths"]
                .as_object()
                .map(|p| {
                    p.values()
                        .filter_map(|item| item.get("patch"))
                        .filter(|op| op["x-kubernetes-group-version-kind"] == gvk)
                        .collect()
                })
                .unwrap_or_default();
            assert!(!patches.is_empty(), "no PATCH for {}", def.kind);
            for op in patches {
                let params = op["parameters"].as_array().cloned().unwrap_or_default();
                assert!(
                    params
                        .iter()
                        .any(|p| p["name"] == "fieldValidation" && p["in"] == "query"),
                    "{}",
                    def.kind
                );
                assert!(
                    op["requestBody"]["content"]["application/strategic-merge-patch+json"]
                        .is_object()
                );
                assert_eq!(op["x-kubernetes-action"], "patch");
            }
        }
    }

    #[test]
    fn paths_follow_kube_apiserver() {
        let doc = gv_doc("apps", "v1");
        let paths = &doc["paths"];
        let item = &paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"];
        for verb in ["get", "put", "patch", "delete"] {
            assert_eq!(
                item[verb]["x-kubernetes-group-version-kind"]["kind"], "Deployment",
                "{verb}"
            );
        }
        assert_eq!(item["get"]["operationId"], "readAppsV1NamespacedDeployment");
        let collection = &paths["/apis/apps/v1/namespaces/{namespace}/deployments"];
        assert_eq!(collection["get"]["x-kubernetes-action"], "list");
        assert_eq!(
            collection["delete"]["x-kubernetes-action"],
            "deletecollection"
        );
        assert!(
            collection["post"]["parameters"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["name"] == "fieldValidation"))
        );
        assert_eq!(
            paths["/apis/apps/v1/deployments"]["get"]["operationId"],
            "listAppsV1DeploymentForAllNamespaces"
        );
        let scale = &paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"];
        assert_eq!(
            scale["patch"]["x-kubernetes-group-version-kind"]["kind"],
            "Scale"
        );
        assert!(
            paths
                .get("/apis/apps/v1/namespaces/{namespace}/daemonsets/{name}/scale")
                .is_none()
        );
        assert!(
            paths["/apis/apps/v1/namespaces/{namespace}/daemonsets/{name}/status"]["patch"]
                .is_object()
        );

        let core = gv_doc("", "v1");
        let namespace = &core["paths"]["/api/v1/namespaces/{name}"];
        assert_eq!(namespace["get"]["operationId"], "readCoreV1Namespace");
        assert!(
            core["paths"]
                .get("/api/v1/namespaces/{namespace}/namespaces")
                .is_none()
        );
        assert!(
            core["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/status"]["put"].is_object()
        );
    }

    #[test]
    fn v2_has_definitions_paths_and_extensions() {
        let doc: Value = serde_json::from_slice(&v2()).unwrap_or_default();
        assert_eq!(doc["swagger"], "2.0");
        let defs = &doc["definitions"];
        let dep = &defs["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            dep["x-kubernetes-group-version-kind"][0]["kind"],
            "Deployment"
        );
        assert_eq!(
            dep["properties"]["spec"]["$ref"],
            "#/definitions/io.k8s.api.apps.v1.DeploymentSpec"
        );
        assert!(dep["properties"]["spec"].get("allOf").is_none());
        assert_eq!(
            defs["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]["x-kubernetes-patch-merge-key"],
            "name"
        );
        assert_eq!(
            defs["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["format"],
            "int-or-string"
        );
        let text = String::from_utf8_lossy(&v2()).to_string();
        assert!(!text.contains("#/components/"));
        let patch =
            &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "Deployment"
        );
        assert!(
            patch["consumes"]
                .as_array()
                .is_some_and(|c| c.contains(&json!("application/strategic-merge-patch+json")))
        );
        let params = patch["parameters"].as_array().cloned().unwrap_or_default();
        assert_eq!(params[0]["in"], "body");
        assert!(params.iter().any(|p| p["name"] == "fieldValidation"
            && p["in"] == "query"
            && p["type"] == "string"));
        assert!(
            doc["paths"]["/api/v1/namespaces/{namespace}/pods"]["get"]["responses"]["200"]["schema"]
                ["$ref"]
                == "#/definitions/io.k8s.api.core.v1.PodList"
        );
    }

    #[test]
    fn serialized_document_matches_the_value() {
        for (group, version) in group_versions() {
            let bytes = v3_group_version_bytes(group, version).unwrap_or_default();
            let parsed: Value = serde_json::from_slice(&bytes).unwrap_or_default();
            assert_eq!(parsed, gv_doc(group, version));
        }
    }
}
