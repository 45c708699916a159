//! Validation tests: each rule with its exact field path and wording.

use super::validate;
use crate::defaults;
use crate::registry::lookup_kind;
use serde_json::{Value, json};

/// Defaults then validates a create, returning the Kubernetes messages.
fn create(api_version: &str, kind: &str, mut obj: Value) -> Vec<String> {
    let def = lookup_kind(api_version, kind).expect("served kind");
    defaults::apply(def, &mut obj);
    validate(def, &obj, None)
        .iter()
        .map(|e| e.message())
        .collect()
}

/// Defaults both and validates `new` as an update of `old`.
fn update(api_version: &str, kind: &str, mut old: Value, mut new: Value) -> Vec<String> {
    let def = lookup_kind(api_version, kind).expect("served kind");
    defaults::apply(def, &mut old);
    defaults::apply(def, &mut new);
    validate(def, &new, Some(&old))
        .iter()
        .map(|e| e.message())
        .collect()
}

#[track_caller]
fn assert_has(errs: &[String], want: &str) {
    assert!(
        errs.iter().any(|e| e == want),
        "missing {want:?} in {errs:#?}"
    );
}

#[track_caller]
fn assert_has_prefix(errs: &[String], want: &str) {
    assert!(
        errs.iter().any(|e| e.starts_with(want)),
        "missing {want:?}… in {errs:#?}"
    );
}

#[track_caller]
fn assert_clean(errs: &[String]) {
    assert!(errs.is_empty(), "unexpected errors: {errs:#?}");
}

fn meta(name: &str) -> Value {
    json!({ "name": name, "namespace": "default", "uid": "11111111-2222-3333-4444-555555555555" })
}

fn deployment(containers: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("web"),
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "web" } },
            "template": { "metadata": { "labels": { "app": "web" } }, "spec": { "containers": containers } }
        }
    })
}

fn web_container() -> Value {
    json!({
        "name": "web", "image": "nginx:1.27",
        "ports": [{ "containerPort": 80, "name": "http" }],
        "resources": { "requests": { "cpu": "100m", "memory": "128Mi" }, "limits": { "cpu": "200m", "memory": "256Mi" } },
        "readinessProbe": { "httpGet": { "path": "/", "port": "http" } },
        "env": [{ "name": "MODE", "value": "prod" }],
        "volumeMounts": [{ "name": "cache", "mountPath": "/cache" }]
    })
}

fn valid_deployment() -> Value {
    let mut d = deployment(json!([web_container()]));
    d["spec"]["template"]["spec"]["volumes"] = json!([{ "name": "cache", "emptyDir": {} }]);
    d
}

// ---- metadata ----------------------------------------------------------------------------

#[test]
fn valid_objects_pass() {
    assert_clean(&create("apps/v1", "Deployment", valid_deployment()));
    assert_clean(&create(
        "v1",
        "Pod",
        json!({ "metadata": meta("p"), "spec": { "containers": [{ "name": "c", "image": "busybox" }] } }),
    ));
    assert_clean(&create(
        "v1",
        "Namespace",
        json!({ "metadata": { "name": "ml-team" } }),
    ));
    assert_clean(&create(
        "v1",
        "ConfigMap",
        json!({ "metadata": meta("cfg"), "data": { "app.properties": "x=1" } }),
    ));
    assert_clean(&create(
        "v1",
        "Secret",
        json!({ "metadata": meta("s"), "data": { "password": "aHVudGVyMg==" } }),
    ));
    assert_clean(&create(
        "v1",
        "Service",
        json!({ "metadata": meta("web"), "spec": { "selector": { "app": "web" }, "ports": [{ "port": 80 }] } }),
    ));
    assert_clean(&create(
        "v1",
        "PersistentVolumeClaim",
        json!({ "metadata": meta("data"), "spec": {
        "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": "1Gi" } } } }),
    ));
    assert_clean(&create(
        "v1",
        "PersistentVolume",
        json!({ "metadata": { "name": "pv1" }, "spec": {
        "accessModes": ["ReadWriteOnce"], "capacity": { "storage": "10Gi" }, "hostPath": { "path": "/data" } } }),
    ));
    assert_clean(&create(
        "v1",
        "Node",
        json!({ "metadata": { "name": "node-1" }, "spec": { "podCIDR": "10.42.0.0/24", "podCIDRs": ["10.42.0.0/24"] },
        "status": { "capacity": { "cpu": "8", "memory": "16Gi", "nvidia.com/gpu": "1" } } }),
    ));
    assert_clean(&create(
        "v1",
        "ServiceAccount",
        json!({ "metadata": meta("default") }),
    ));
    assert_clean(&create(
        "v1",
        "Endpoints",
        json!({ "metadata": meta("web"), "subsets": [{ "addresses": [{ "ip": "10.42.0.5" }], "ports": [{ "port": 80 }] }] }),
    ));
    assert_clean(&create(
        "v1",
        "Event",
        json!({ "metadata": meta("web.1"), "involvedObject": { "kind": "Pod", "namespace": "default", "name": "web" }, "reason": "Started" }),
    ));
    assert_clean(&create(
        "coordination.k8s.io/v1",
        "Lease",
        json!({ "metadata": meta("node-1"), "spec": {
        "holderIdentity": "node-1", "leaseDurationSeconds": 40, "renewTime": "2026-01-01T00:00:00.000000Z" } }),
    ));
    assert_clean(&create(
        "discovery.k8s.io/v1",
        "EndpointSlice",
        json!({ "metadata": meta("web-abc"), "addressType": "IPv4",
        "endpoints": [{ "addresses": ["10.42.0.5"], "nodeName": "node-1" }], "ports": [{ "name": "http", "port": 80 }] }),
    ));
    assert_clean(&create(
        "events.k8s.io/v1",
        "Event",
        json!({ "metadata": meta("web.1"), "eventTime": "2026-01-01T00:00:00.000000Z",
        "type": "Normal", "reason": "Started", "action": "Start", "reportingController": "skiff.dev/node", "reportingInstance": "node-1",
        "regarding": { "kind": "Pod", "namespace": "default", "name": "web" } }),
    ));
    assert_clean(&create(
        "apps/v1",
        "ControllerRevision",
        json!({ "metadata": meta("web-123"), "data": {}, "revision": 1 }),
    ));
}

#[test]
fn object_meta_rules() {
    let errs = create(
        "v1",
        "ConfigMap",
        json!({ "metadata": { "namespace": "default" } }),
    );
    assert_has(
        &errs,
        "metadata.name: Required value: name or generateName is required",
    );
    assert_clean(&create(
        "v1",
        "ConfigMap",
        json!({ "metadata": { "generateName": "cfg-", "namespace": "default" } }),
    ));

    let errs = create(
        "v1",
        "ConfigMap",
        json!({ "metadata": { "name": "Bad_Name", "namespace": "default" } }),
    );
    assert_has(
        &errs,
        "metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
    );

    let errs = create("v1", "ConfigMap", json!({ "metadata": { "name": "x" } }));
    assert_has(&errs, "metadata.namespace: Required value");
    let errs = create(
        "v1",
        "Namespace",
        json!({ "metadata": { "name": "x", "namespace": "default" } }),
    );
    assert_has(
        &errs,
        "metadata.namespace: Forbidden: not allowed on this type",
    );

    let errs = create(
        "v1",
        "ConfigMap",
        json!({ "metadata": { "name": "x", "namespace": "default",
        "labels": { "bad key": "v", "ok": "-bad-value" } } }),
    );
    assert_has_prefix(
        &errs,
        "metadata.labels: Invalid value: \"bad key\": name part must consist of alphanumeric characters",
    );
    assert_has_prefix(
        &errs,
        "metadata.labels: Invalid value: \"-bad-value\": a valid label must be an empty string or consist of alphanumeric characters",
    );

    let errs = create(
        "v1",
        "ConfigMap",
        json!({ "metadata": { "name": "x", "namespace": "default",
        "labels": { "v": "a".repeat(64) } } }),
    );
    assert_has_prefix(&errs, "metadata.labels: Invalid value: \"aaaa");
    assert!(
        errs.iter()
            .any(|e| e.ends_with("must be no more than 63 characters")),
        "{errs:?}"
    );

    let errs = create(
        "v1",
        "ConfigMap",
        json!({ "metadata": { "name": "x", "namespace": "default",
        "annotations": { "big": "x".repeat(256 * 1024), "Example.com/Upper": "ok", "a/b/c": "bad" } } }),
    );
    assert_has(
        &errs,
        "metadata.annotations: Too long: must have at most 262144 bytes",
    );
    assert_has_prefix(
        &errs,
        "metadata.annotations: Invalid value: \"a/b/c\": a qualified name must consist of",
    );
    assert!(
        !errs.iter().any(|e| e.contains("Example.com/Upper")),
        "annotation keys are case-insensitive: {errs:?}"
    );

    let errs = create(
        "v1",
        "ConfigMap",
        json!({ "metadata": { "name": "x", "namespace": "default", "ownerReferences": [
        { "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "a", "uid": "1", "controller": true },
        { "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "b", "uid": "2", "controller": true },
        { "apiVersion": "", "kind": "", "name": "", "uid": "" } ] } }),
    );
    assert_has_prefix(&errs, "metadata.ownerReferences: Invalid value: ");
    assert!(
        errs.iter()
            .any(|e| e.contains("Only one reference can have Controller set to true")),
        "{errs:?}"
    );
    assert_has(
        &errs,
        "metadata.ownerReferences.apiVersion: Invalid value: \"\": version must not be empty",
    );
    assert_has(
        &errs,
        "metadata.ownerReferences.uid: Invalid value: \"\": must not be empty",
    );
}

#[test]
fn generate_name_allows_trailing_dash_but_checks_syntax() {
    let errs = create(
        "v1",
        "Pod",
        json!({ "metadata": { "generateName": "Web_", "namespace": "default" },
        "spec": { "containers": [{ "name": "c", "image": "i" }] } }),
    );
    assert_has_prefix(
        &errs,
        "metadata.generateName: Invalid value: \"Web_\": a lowercase RFC 1123 subdomain",
    );
}

#[test]
fn per_kind_name_rules() {
    let errs = create(
        "v1",
        "Service",
        json!({ "metadata": meta("1web"), "spec": { "ports": [{ "port": 80 }] } }),
    );
    assert_has_prefix(
        &errs,
        "metadata.name: Invalid value: \"1web\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character",
    );
    let errs = create(
        "v1",
        "Namespace",
        json!({ "metadata": { "name": "team.ml" } }),
    );
    assert_has_prefix(
        &errs,
        "metadata.name: Invalid value: \"team.ml\": a lowercase RFC 1123 label must consist of",
    );
    assert_clean(&create(
        "v1",
        "ConfigMap",
        json!({ "metadata": meta("team.ml") }),
    ));
    let errs = create(
        "batch/v1",
        "CronJob",
        json!({ "metadata": meta(&"c".repeat(53)), "spec": { "schedule": "@hourly",
        "jobTemplate": { "spec": { "template": { "spec": { "restartPolicy": "OnFailure", "containers": [{ "name": "c", "image": "i" }] } } } } } }),
    );
    assert_has_prefix(&errs, "metadata.name: Invalid value: \"ccc");
    assert!(
        errs.iter()
            .any(|e| e.ends_with(": must be no more than 52 characters")),
        "{errs:?}"
    );
}

#[test]
fn metadata_update_rules() {
    let old = json!({ "metadata": meta("cfg"), "data": {} });
    let mut new = old.clone();
    new["metadata"]["name"] = json!("other");
    new["metadata"]["uid"] = json!("different");
    let errs = update("v1", "ConfigMap", old.clone(), new);
    assert_has(
        &errs,
        "metadata.name: Invalid value: \"other\": field is immutable",
    );
    assert_has(
        &errs,
        "metadata.uid: Invalid value: \"different\": field is immutable",
    );
    let mut no_uid = old.clone();
    no_uid["metadata"].as_object_mut().unwrap().remove("uid");
    assert_clean(&update("v1", "ConfigMap", old.clone(), no_uid));

    let mut deleting = old.clone();
    deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    let mut more = deleting.clone();
    more["metadata"]["finalizers"] = json!(["example.com/hold"]);
    let errs = update("v1", "ConfigMap", deleting, more);
    assert_has(
        &errs,
        "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{\"example.com/hold\"}",
    );
}

// ---- pods and containers -----------------------------------------------------------------

#[test]
fn containers_required_and_named() {
    let errs = create("apps/v1", "Deployment", deployment(json!([])));
    assert_has(&errs, "spec.template.spec.containers: Required value");

    let errs = create(
        "apps/v1",
        "Deployment",
        deployment(
            json!([{ "image": "nginx" }, { "name": "Web", "image": "nginx" }, { "name": "a", "image": "x" }, { "name": "a", "image": "x" }]),
        ),
    );
    assert_has(
        &errs,
        "spec.template.spec.containers[0].name: Required value",
    );
    assert_has_prefix(
        &errs,
        "spec.template.spec.containers[1].name: Invalid value: \"Web\": a lowercase RFC 1123 label",
    );
    assert_has(
        &errs,
        "spec.template.spec.containers[3].name: Duplicate value: \"a\"",
    );

    let errs = create(
        "apps/v1",
        "Deployment",
        deployment(json!([{ "name": "web" }])),
    );
    assert_eq!(
        errs,
        vec!["spec.template.spec.containers[0].image: Required value"]
    );
}

#[test]
fn init_and_app_container_names_share_one_namespace() {
    let errs = create(
        "v1",
        "Pod",
        json!({ "metadata": meta("p"), "spec": {
        "initContainers": [{ "name": "setup", "image": "i" }],
        "containers": [{ "name": "setup", "image": "i" }] } }),
    );
    assert_has(&errs, "spec.containers[0].name: Duplicate value: \"setup\"");
}

#[test]
fn container_ports() {
    let errs = create(
        "v1",
        "Pod",
        json!({ "metadata": meta("p"), "spec": { "containers": [{ "name": "c", "image": "i", "ports": [
        { "containerPort": 70000 },
        { "containerPort": 0 },
        { "containerPort": 80, "protocol": "HTTP" },
        { "containerPort": 81, "name": "8080" },
        { "containerPort": 82, "name": "web" },
        { "containerPort": 83, "name": "web", "hostPort": 99999 }
    ] }] } }),
    );
    assert_has(
        &errs,
        "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
    );
    assert_has(
        &errs,
        "spec.containers[0].ports[1].containerPort: Required value",
    );
    assert_has(
        &errs,
        "spec.containers[0].ports[2].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
    );
    assert_has(
        &errs,
        "spec.containers[0].ports[3].name: Invalid value: \"8080\": must contain at least one letter (a-z)",
    );
    assert_has(
        &errs,
        "spec.containers[0].ports[5].name: Duplicate value: \"web\"",
    );
    assert_has(
        &errs,
        "spec.containers[0].ports[5].hostPort: Invalid value: 99999: must be between 1 and 65535, inclusive",
    );
}

#[test]
fn resources_parse_and_requests_fit_limits() {
    let mut c = web_container();
    c["resources"] = json!({ "requests": { "cpu": "500m", "memory": "1Gi" }, "limits": { "cpu": "200m", "memory": "1Gi" } });
    let mut d = deployment(json!([c]));
    d["spec"]["template"]["spec"]["volumes"] = json!([{ "name": "cache", "emptyDir": {} }]);
    let errs = create("apps/v1", "Deployment", d);
    assert_eq!(
        errs,
        vec![
            "spec.template.spec.containers[0].resources.requests: Invalid value: \"500m\": must be less than or equal to cpu limit of 200m"
        ]
    );

    let errs = create(
        "v1",
        "Pod",
        json!({ "metadata": meta("p"), "spec": { "containers": [{ "name": "c", "image": "i", "resources": {
        "limits": { "cpu": "lots", "memory": "-1Gi", "nvidia.com/gpu": "1.5", "gpu": "1" },
        "requests": { "example.com/fpga": "1" } } }] } }),
    );
    assert_has(
        &errs,
        "spec.containers[0].resources.limits[cpu]: Invalid value: \"lots\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
    );
    assert_has(
        &errs,
        "spec.containers[0].resources.limits[memory]: Invalid value: \"-1Gi\": must be greater than or equal to 0",
    );
    assert_has(
        &errs,
        "spec.containers[0].resources.limits[nvidia.com/gpu]: Invalid value: 1500m: must be an integer",
    );
    assert_has(
        &errs,
        "spec.containers[0].resources.limits[gpu]: Invalid value: \"gpu\": must be a standard resource for containers",
    );
    assert_has(
        &errs,
        "spec.containers[0].resources.limits: Required value: Limit must be set for non overcommitable resources",
    );

    let errs = create(
        "v1",
        "Pod",
        json!({ "metadata": meta("p"), "spec": { "containers": [{ "name": "c", "image": "i", "resources": {
        "limits": { "nvidia.com/gpu": "2" }, "requests": { "nvidia.com/gpu": "1" } } }] } }),
    );
    assert_has(
        &errs,
        "spec.containers[0].resources.requests: Invalid value: \"1\": must be equal to nvidia.com/gpu limit of 2",
    );
}

#[test]
fn probes() {
    let errs = create(
        "v1",
        "Pod",
        json!({ "metadata": meta("p"), "spec": { "containers": [{ "name": "c", "image": "i",
        "livenessProbe": { "periodSeconds": -1, "successThreshold": 2, "httpGet": { "port": 0 }, "exec": { "command": ["true"] } },
        "readinessProbe": {},
        "startupProbe": { "tcpSocket": { "port": "Not-A-Name" }, "terminationGracePeriodSeconds": 0 } }] } }),
    );
    assert_has(
        &errs,
        "spec.containers[0].livenessProbe.periodSeconds: Invalid value: -1: must be greater than or equal to 0",
    );
    assert_has(
        &errs,
        "spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1",
    );
    assert_has(
        &errs,
        "spec.containers[0].livenessProbe.httpGet: Forbidden: may not specify more than 1 handler type",
    );
    assert_has(
        &errs,
        "spec.containers[0].readinessProbe: Required value: must specify a handler type",
    );
    assert_has(
        &errs,
        "spec.containers[0].startupProbe.tcpSocket.port: Invalid value: \"Not-A-Name\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
    );
    assert_has(
        &errs,
        "spec.containers[0].startupProbe.terminationGracePeriodSeconds: Invalid value: 0: must be greater than 0",
    );

    let errs = create(
        "v1",
        "Pod",
        json!({ "metadata": meta("p"), "spec": { "containers": [{ "name": "c", "image": "i",
        "livenessProbe": { "httpGet": { "port": 70000, "scheme": "FTP" } } }] } }),
    );
    assert_has(
        &errs,
        "spec.containers[0].livenessProbe.httpGet.port: Invalid value: 70000: must be between 1 and 65535, inclusive",
    );
    assert_has(
        &errs,
        "spec.containers[0].livenessProbe.httpGet.scheme: Unsupported value: \"FTP\": supported values: \"HTTP\", \"HTTPS\"",
    );
}

#[test]
fn env_rules() {
    let errs = create(
        "v1",
        "Pod",
        json!({ "metadata": meta("p"), "spec": { "containers": [{ "name": "c", "image": "i", "env": [
        { "value": "x" },
        { "name": "A=B" },
        { "name": "FROM", "value": "x", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
        { "name": "BAD", "valueFrom": { "fieldRef": { "fieldPath": "spec.containers" } } },
        { "name": "NONE", "valueFrom": {} },
        { "name": "KEY", "valueFrom": { "configMapKeyRef": { "name": "cfg" } } },
        { "name": "LABEL", "valueFrom": { "fieldRef": { "fieldPath": "metadata.labels['app']" } } }
    ], "envFrom": [{}] }] } }),
    );
    assert_has(&errs, "spec.containers[0].env[0].name: Required value");
    assert_has(
        &errs,
        "spec.containers[0].env[1].name: Invalid value: \"A=B\": a valid environment variable name must consist only of printable ASCII characters other than '='",
    );
    assert_has(
        &errs,
        "spec.containers[0].env[2].valueFrom: Invalid value: \"\": may not be specified when `value` is not empty",
    );
    assert_has_prefix(
        &errs,
        "spec.containers[0].env[3].valueFrom.fieldRef.fieldPath: Unsupported value: \"spec.containers\": supported values: \"metadata.name\"",
    );
    assert_has(
        &errs,
        "spec.containers[0].env[4].valueFrom: Invalid value: \"\": must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
    );
    assert_has(
        &errs,
        "spec.containers[0].env[5].valueFrom.configMapKeyRef.key: Required value",
    );
    assert!(!errs.iter().any(|e| e.contains("env[6]")), "{errs:?}");
    assert_has(
        &errs,
        "spec.containers[0].envFrom[0]: Invalid value: \"\": must specify one of: `configMapRef` or `secretRef`",
    );
}

#[test]
fn volumes_and_mounts() {
    let errs = create(
        "v1",
        "Pod",
        json!({ "metadata": meta("p"), "spec": {
        "volumes": [
            { "name": "a", "emptyDir": {} },
            { "name": "a", "emptyDir": {} },
            { "name": "both", "emptyDir": {}, "hostPath": { "path": "/x" } },
            { "name": "Bad_Name", "configMap": { "name": "cfg", "defaultMode": 1000 } },
            { "name": "sec", "secret": {} },
            { "name": "claim", "persistentVolumeClaim": {} },
            { "name": "items", "configMap": { "name": "c", "items": [{ "key": "k", "path": "../etc" }] } }
        ],
        "containers": [{ "name": "c", "image": "i", "volumeMounts": [
            { "name": "data", "mountPath": "/data" },
            { "name": "a", "mountPath": "/a" },
            { "name": "a", "mountPath": "/a", "subPath": "/abs" },
            { "name": "a" }
        ] }] } }),
    );
    assert_has(&errs, "spec.volumes[1].name: Duplicate value: \"a\"");
    assert_has(
        &errs,
        "spec.volumes[2].emptyDir: Forbidden: may not specify more than 1 volume type",
    );
    assert_has_prefix(
        &errs,
        "spec.volumes[3].name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 label",
    );
    assert_has(
        &errs,
        "spec.volumes[3].configMap.defaultMode: Invalid value: 1000: must be a number between 0 and 0777 (octal), both inclusive",
    );
    assert_has(&errs, "spec.volumes[4].secret.secretName: Required value");
    assert_has(
        &errs,
        "spec.volumes[5].persistentVolumeClaim.claimName: Required value",
    );
    assert_has(
        &errs,
        "spec.volumes[6].configMap.items[0].path: Invalid value: \"../etc\": must not contain '..'",
    );
    assert_has(
        &errs,
        "spec.containers[0].volumeMounts[0].name: Not found: \"data\"",
    );
    assert_has(
        &errs,
        "spec.containers[0].volumeMounts[2].mountPath: Invalid value: \"/a\": must be unique",
    );
    assert_has(
        &errs,
        "spec.containers[0].volumeMounts[2].subPath: Invalid value: \"/abs\": must be a relative path",
    );
    assert_has(
        &errs,
        "spec.containers[0].volumeMounts[3].mountPath: Required value",
    );

    // A volume with no source at all is defaulted to emptyDir, so only an explicit null-ish
    // source list reaches validation without one.
    let def = lookup_kind("v1", "Pod").unwrap();
    let raw = json!({ "metadata": meta("p"), "spec": { "restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
        "volumes": [{ "name": "v" }], "containers": [{ "name": "c", "image": "i", "imagePullPolicy": "Always", "terminationMessagePolicy": "File" }] } });
    let errs: Vec<String> = validate(def, &raw, None)
        .iter()
        .map(|e| e.message())
        .collect();
    assert_has(
        &errs,
        "spec.volumes[0]: Required value: must specify a volume type",
    );
}

#[test]
fn ephemeral_volume_claims_are_validated_as_claims() {
    let errs = create(
        "v1",
        "Pod",
        json!({ "metadata": meta("p"), "spec": {
        "volumes": [{ "name": "scratch", "ephemeral": { "volumeClaimTemplate": { "spec": {} } } }],
        "containers": [{ "name": "c", "image": "i" }] } }),
    );
    assert_has(
        &errs,
        "spec.volumes[0].ephemeral.volumeClaimTemplate.spec.accessModes: Required value: at least 1 access mode is required",
    );
    assert_has(
        &errs,
        "spec.volumes[0].ephemeral.volumeClaimTemplate.spec.resources[storage]: Required value",
    );
}

#[test]
fn pod_spec_fields() {
    let errs = create(
        "v1",
        "Pod",
        json!({ "metadata": meta("p"), "spec": {
        "restartPolicy": "Sometimes", "dnsPolicy": "Google", "activeDeadlineSeconds": 0,
        "nodeSelector": { "disk type": "ssd" }, "serviceAccountName": "Bad SA",
        "tolerations": [{ "key": "gpu", "operator": "Exists", "value": "yes" }, { "operator": "Equal", "value": "x" }, { "key": "k", "effect": "Sometimes" }],
        "containers": [{ "name": "c", "image": "i", "imagePullPolicy": "Sometimes" }] } }),
    );
    assert_has(
        &errs,
        "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
    );
    assert_has(
        &errs,
        "spec.dnsPolicy: Unsupported value: \"Google\": supported values: \"ClusterFirstWithHostNet\", \"ClusterFirst\", \"Default\", \"None\"",
    );
    assert_has(
        &errs,
        "spec.activeDeadlineSeconds: Invalid value: 0: must be between 1 and 2147483647, inclusive",
    );
    assert_has_prefix(
        &errs,
        "spec.nodeSelector: Invalid value: \"disk type\": name part must consist of",
    );
    assert_has_prefix(&errs, "spec.serviceAccountName: Invalid value: \"Bad SA\"");
    assert_has(
        &errs,
        "spec.tolerations[0].operator: Invalid value: \"yes\": value must be empty when `operator` is 'Exists'",
    );
    assert_has_prefix(
        &errs,
        "spec.tolerations[1].operator: Invalid value: \"Equal\": operator must be Exists when `key` is empty",
    );
    assert_has(
        &errs,
        "spec.tolerations[2].effect: Unsupported value: \"Sometimes\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\"",
    );
    assert_has(
        &errs,
        "spec.containers[0].imagePullPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"IfNotPresent\", \"Never\"",
    );
}

#[test]
fn pod_updates_only_change_images_and_friends() {
    let old = json!({ "metadata": meta("p"), "spec": { "containers": [{ "name": "c", "image": "i:1" }] } });
    let mut new_image = old.clone();
    new_image["spec"]["containers"][0]["image"] = json!("i:2");
    new_image["spec"]["nodeName"] = json!("node-1");
    assert_clean(&update("v1", "Pod", old.clone(), new_image));
    let mut new_env = old.clone();
    new_env["spec"]["containers"][0]["env"] = json!([{ "name": "A", "value": "b" }]);
    let errs = update("v1", "Pod", old.clone(), new_env);
    assert_has_prefix(
        &errs,
        "spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`",
    );
    let mut bound = old.clone();
    bound["spec"]["nodeName"] = json!("node-1");
    let mut moved = bound.clone();
    moved["spec"]["nodeName"] = json!("node-2");
    assert_has_prefix(
        &update("v1", "Pod", bound, moved),
        "spec: Forbidden: pod updates may not change fields",
    );
    let mut ephemeral = old.clone();
    ephemeral["spec"]["ephemeralContainers"] = json!([{ "name": "debug", "image": "busybox" }]);
    assert_has(
        &create("v1", "Pod", ephemeral),
        "spec.ephemeralContainers: Forbidden: cannot be set on create",
    );
}

// ---- workloads ---------------------------------------------------------------------------

#[test]
fn deployment_selector_and_template() {
    let mut d = valid_deployment();
    d["spec"]["selector"] = json!({ "matchLabels": { "app": "other" } });
    let errs = create("apps/v1", "Deployment", d);
    assert_eq!(
        errs,
        vec![
            "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`"
        ]
    );

    let mut d = valid_deployment();
    d["spec"].as_object_mut().unwrap().remove("selector");
    let errs = create("apps/v1", "Deployment", d);
    assert_has(&errs, "spec.selector: Required value");
    assert_has_prefix(
        &errs,
        "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match",
    );

    let mut d = valid_deployment();
    d["spec"]["selector"] = json!({});
    let errs = create("apps/v1", "Deployment", d);
    assert_has(
        &errs,
        "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for deployment",
    );

    let mut d = valid_deployment();
    d["spec"]["selector"] = json!({ "matchExpressions": [{ "key": "app", "operator": "In" }, { "key": "app", "operator": "Like", "values": ["x"] }] });
    let errs = create("apps/v1", "Deployment", d);
    assert_has(
        &errs,
        "spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'",
    );
    assert_has(
        &errs,
        "spec.selector.matchExpressions[1].operator: Invalid value: \"Like\": not a valid selector operator",
    );
}

#[test]
fn deployment_fields() {
    let mut d = valid_deployment();
    d["spec"]["replicas"] = json!(-1);
    d["spec"]["template"]["spec"]["restartPolicy"] = json!("OnFailure");
    d["spec"]["template"]["spec"]["activeDeadlineSeconds"] = json!(10);
    d["spec"]["minReadySeconds"] = json!(700);
    d["spec"]["revisionHistoryLimit"] = json!(-2);
    let errs = create("apps/v1", "Deployment", d);
    assert_has(
        &errs,
        "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
    );
    assert_has(
        &errs,
        "spec.template.spec.restartPolicy: Unsupported value: \"OnFailure\": supported values: \"Always\"",
    );
    assert_has(
        &errs,
        "spec.template.spec.activeDeadlineSeconds: Forbidden: activeDeadlineSeconds in ReplicaSet is not Supported",
    );
    assert_has(
        &errs,
        "spec.progressDeadlineSeconds: Invalid value: 600: must be greater than minReadySeconds",
    );
    assert_has(
        &errs,
        "spec.revisionHistoryLimit: Invalid value: -2: must be greater than or equal to 0",
    );
}

#[test]
fn deployment_strategy() {
    let strategy = |s: Value| {
        let mut d = valid_deployment();
        d["spec"]["strategy"] = s;
        create("apps/v1", "Deployment", d)
    };
    assert_has(
        &strategy(json!({ "type": "Recreate", "rollingUpdate": { "maxSurge": 1 } })),
        "spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'",
    );
    assert_has(
        &strategy(json!({ "type": "BlueGreen" })),
        "spec.strategy: Unsupported value: \"BlueGreen\": supported values: \"Recreate\", \"RollingUpdate\"",
    );
    assert_has(
        &strategy(
            json!({ "type": "RollingUpdate", "rollingUpdate": { "maxSurge": 0, "maxUnavailable": "0%" } }),
        ),
        "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0%: may not be 0 when `maxSurge` is 0",
    );
    assert_has(
        &strategy(
            json!({ "type": "RollingUpdate", "rollingUpdate": { "maxSurge": "1", "maxUnavailable": "150%" } }),
        ),
        "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 150%: must not be greater than 100%",
    );
    assert_has(
        &strategy(
            json!({ "type": "RollingUpdate", "rollingUpdate": { "maxSurge": "1", "maxUnavailable": -1 } }),
        ),
        "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: -1: must be greater than or equal to 0",
    );
    assert_has(
        &strategy(
            json!({ "type": "RollingUpdate", "rollingUpdate": { "maxSurge": "1", "maxUnavailable": 1 } }),
        ),
        "spec.strategy.rollingUpdate.maxSurge: Invalid value: 1: a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
    );
}

#[test]
fn workload_selectors_are_immutable() {
    let old = valid_deployment();
    let mut new = old.clone();
    new["spec"]["selector"] = json!({ "matchLabels": { "app": "web", "tier": "front" } });
    new["spec"]["template"]["metadata"]["labels"]["tier"] = json!("front");
    let errs = update("apps/v1", "Deployment", old.clone(), new);
    assert_eq!(
        errs,
        vec![
            "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"web\", \"tier\":\"front\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"
        ]
    );
    let mut scaled = old.clone();
    scaled["spec"]["replicas"] = json!(5);
    scaled["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.28");
    assert_clean(&update("apps/v1", "Deployment", old, scaled));

    let rs = json!({ "metadata": meta("web-1"), "spec": { "selector": { "matchLabels": { "app": "web" } },
        "template": { "metadata": { "labels": { "app": "web" } }, "spec": { "containers": [{ "name": "c", "image": "i" }] } } } });
    assert_clean(&create("apps/v1", "ReplicaSet", rs.clone()));
    let mut rs2 = rs.clone();
    rs2["spec"]["selector"] = json!({ "matchLabels": { "app": "api" } });
    rs2["spec"]["template"]["metadata"]["labels"] = json!({ "app": "api" });
    assert_has_prefix(
        &update("apps/v1", "ReplicaSet", rs, rs2),
        "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"api\"}",
    );
}

fn stateful_set() -> Value {
    json!({ "metadata": meta("db"), "spec": {
        "serviceName": "db",
        "selector": { "matchLabels": { "app": "db" } },
        "template": { "metadata": { "labels": { "app": "db" } }, "spec": { "containers": [{ "name": "db", "image": "postgres:16",
            "volumeMounts": [{ "name": "data", "mountPath": "/var/lib/postgresql" }] }] } },
        "volumeClaimTemplates": [{ "metadata": { "name": "data" }, "spec": { "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": "1Gi" } } } }]
    } })
}

#[test]
fn stateful_set_rules() {
    assert_clean(&create("apps/v1", "StatefulSet", stateful_set()));
    let mut s = stateful_set();
    s["spec"]["podManagementPolicy"] = json!("Random");
    s["spec"]["updateStrategy"] =
        json!({ "type": "RollingUpdate", "rollingUpdate": { "partition": -1 } });
    s["spec"]["persistentVolumeClaimRetentionPolicy"] = json!({ "whenDeleted": "Keep" });
    s["spec"]["volumeClaimTemplates"][0]["spec"]["accessModes"] = json!([]);
    s["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
    let errs = create("apps/v1", "StatefulSet", s);
    assert_has(
        &errs,
        "spec.podManagementPolicy: Invalid value: \"Random\": must be 'OrderedReady' or 'Parallel'",
    );
    assert_has(
        &errs,
        "spec.updateStrategy.rollingUpdate.partition: Invalid value: -1: must be greater than or equal to 0",
    );
    assert_has(
        &errs,
        "spec.persistentVolumeClaimRetentionPolicy.whenDeleted: Unsupported value: \"Keep\": supported values: \"Retain\", \"Delete\"",
    );
    assert_has(
        &errs,
        "spec.volumeClaimTemplates[0].spec.accessModes: Required value: at least 1 access mode is required",
    );
    assert_has(
        &errs,
        "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
    );

    let old = stateful_set();
    let mut new = old.clone();
    new["spec"]["replicas"] = json!(3);
    new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("postgres:17");
    assert_clean(&update("apps/v1", "StatefulSet", old.clone(), new));
    let mut new = old.clone();
    new["spec"]["serviceName"] = json!("other");
    assert_has_prefix(
        &update("apps/v1", "StatefulSet", old, new),
        "spec: Forbidden: updates to statefulset spec for fields other than 'replicas'",
    );
}

#[test]
fn bare_numeric_strings_count_as_numbers_in_rolling_updates() {
    let mut d = valid_deployment();
    d["spec"]["strategy"] = json!({ "type": "RollingUpdate", "rollingUpdate": { "maxSurge": 0, "maxUnavailable": "2" } });
    let errs = create("apps/v1", "Deployment", d);
    assert!(!errs.iter().any(|e| e.contains("may not be 0")), "{errs:?}");
    assert_has_prefix(
        &errs,
        "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 2: a valid percent string",
    );
}

#[test]
fn graceful_pod_deletion_may_shorten_the_grace_period() {
    let old =
        json!({ "metadata": meta("p"), "spec": { "containers": [{ "name": "c", "image": "i" }] } });
    let mut deleting = old.clone();
    deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    deleting["metadata"]["deletionGracePeriodSeconds"] = json!(5);
    deleting["spec"]["terminationGracePeriodSeconds"] = json!(5);
    assert_clean(&update("v1", "Pod", old.clone(), deleting));
    let mut shortened = old.clone();
    shortened["spec"]["terminationGracePeriodSeconds"] = json!(5);
    assert_has_prefix(
        &update("v1", "Pod", old, shortened),
        "spec: Forbidden: pod updates may not change fields",
    );
}

#[test]
fn daemon_set_rules() {
    let ds = json!({ "metadata": meta("agent"), "spec": { "selector": { "matchLabels": { "app": "agent" } },
        "template": { "metadata": { "labels": { "app": "agent" } }, "spec": { "containers": [{ "name": "a", "image": "agent:1" }] } } } });
    assert_clean(&create("apps/v1", "DaemonSet", ds.clone()));
    let mut bad = ds.clone();
    bad["spec"]["updateStrategy"] =
        json!({ "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": 0, "maxSurge": 0 } });
    assert_has(
        &create("apps/v1", "DaemonSet", bad),
        "spec.updateStrategy.rollingUpdate.maxUnavailable: Required value: cannot be 0 when maxSurge is 0",
    );
    let mut bad = ds.clone();
    bad["spec"]["updateStrategy"] = json!({ "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": 1, "maxSurge": "10%" } });
    assert_has(
        &create("apps/v1", "DaemonSet", bad),
        "spec.updateStrategy.rollingUpdate.maxSurge: Invalid value: 10%: may not be set when maxUnavailable is non-zero",
    );
    let mut bad = ds.clone();
    bad["spec"]["template"]["metadata"]["labels"] = json!({ "app": "other" });
    assert_has(
        &create("apps/v1", "DaemonSet", bad),
        "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"other\"}: `selector` does not match template `labels`",
    );
}

// ---- batch -------------------------------------------------------------------------------

fn job() -> Value {
    json!({ "metadata": meta("pi"), "spec": { "template": { "spec": { "restartPolicy": "Never",
        "containers": [{ "name": "pi", "image": "perl:5.34", "command": ["perl", "-e", "print 1"] }] } } } })
}

#[test]
fn job_rules() {
    assert_clean(&create("batch/v1", "Job", job()));
    let mut j = job();
    j["spec"]["parallelism"] = json!(-1);
    j["spec"]["completions"] = json!(-2);
    j["spec"]["backoffLimit"] = json!(-3);
    j["spec"]["completionMode"] = json!("Sometimes");
    let errs = create("batch/v1", "Job", j);
    assert_has(
        &errs,
        "spec.parallelism: Invalid value: -1: must be greater than or equal to 0",
    );
    assert_has(
        &errs,
        "spec.completions: Invalid value: -2: must be greater than or equal to 0",
    );
    assert_has(
        &errs,
        "spec.backoffLimit: Invalid value: -3: must be greater than or equal to 0",
    );
    assert_has(
        &errs,
        "spec.completionMode: Unsupported value: \"Sometimes\": supported values: \"NonIndexed\", \"Indexed\"",
    );

    let mut j = job();
    j["spec"]["template"]["spec"]
        .as_object_mut()
        .unwrap()
        .remove("restartPolicy");
    assert_eq!(
        create("batch/v1", "Job", j),
        vec![
            "spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""
        ]
    );

    let mut j = job();
    j["spec"]["completionMode"] = json!("Indexed");
    j["spec"]["parallelism"] = json!(2);
    assert_has(
        &create("batch/v1", "Job", j),
        "spec.completions: Required value: when completion mode is Indexed",
    );
}

#[test]
fn job_selector_generation_is_enforced() {
    let mut j = job();
    j["spec"]["selector"] = json!({ "matchLabels": { "app": "pi" } });
    j["spec"]["template"]["metadata"] = json!({ "labels": { "app": "pi" } });
    let errs = create("batch/v1", "Job", j.clone());
    assert_has_prefix(
        &errs,
        "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"pi\", \"batch.kubernetes.io/controller-uid\"",
    );
    assert!(
        errs.iter()
            .any(|e| e.ends_with("`selector` not auto-generated")),
        "{errs:?}"
    );

    j["spec"]["manualSelector"] = json!(true);
    assert_clean(&create("batch/v1", "Job", j));

    let mut j = job();
    j["spec"]["manualSelector"] = json!(true);
    assert_has(
        &create("batch/v1", "Job", j),
        "spec.selector: Required value",
    );
}

#[test]
fn job_updates() {
    let old = job();
    let mut new = old.clone();
    new["spec"]["completions"] = json!(5);
    new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("perl:5.36");
    let errs = update("batch/v1", "Job", old.clone(), new);
    assert_has(
        &errs,
        "spec.completions: Invalid value: 5: field is immutable",
    );
    assert_has(
        &errs,
        "spec.template: Invalid value: <pod template>: field is immutable",
    );
    let mut new = old.clone();
    new["spec"]["suspend"] = json!(true);
    new["spec"]["parallelism"] = json!(3);
    new["spec"]["completions"] = json!(1);
    assert_clean(&update("batch/v1", "Job", old, new));
}

fn cron_job(schedule: &str) -> Value {
    json!({ "metadata": meta("report"), "spec": { "schedule": schedule, "jobTemplate": { "spec": { "template": { "spec": {
        "restartPolicy": "OnFailure", "containers": [{ "name": "r", "image": "report:1" }] } } } } } })
}

#[test]
fn cron_job_rules() {
    for ok in ["*/5 * * * *", "@hourly", "0 0 * * SUN", "@every 2h"] {
        assert_clean(&create("batch/v1", "CronJob", cron_job(ok)));
    }
    assert_has(
        &create("batch/v1", "CronJob", cron_job("* * *")),
        "spec.schedule: Invalid value: \"* * *\": expected exactly 5 fields, found 3: [* * *]",
    );
    assert_has(
        &create("batch/v1", "CronJob", cron_job("@sometimes")),
        "spec.schedule: Invalid value: \"@sometimes\": unrecognized descriptor: @sometimes",
    );
    assert_has(
        &create("batch/v1", "CronJob", cron_job("61 * * * *")),
        "spec.schedule: Invalid value: \"61 * * * *\": end of range (61) above maximum (59): 61",
    );
    assert_has(
        &create("batch/v1", "CronJob", cron_job("TZ=UTC 0 * * * *")),
        "spec.schedule: Invalid value: \"TZ=UTC 0 * * * *\": cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
    );
    assert_has(
        &create("batch/v1", "CronJob", cron_job("")),
        "spec.schedule: Required value",
    );

    let mut c = cron_job("@daily");
    c["spec"]["concurrencyPolicy"] = json!("Sometimes");
    c["spec"]["successfulJobsHistoryLimit"] = json!(-1);
    c["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
    c["spec"]["jobTemplate"]["spec"]["selector"] = json!({ "matchLabels": { "a": "b" } });
    let errs = create("batch/v1", "CronJob", c);
    assert_has(
        &errs,
        "spec.concurrencyPolicy: Unsupported value: \"Sometimes\": supported values: \"Allow\", \"Forbid\", \"Replace\"",
    );
    assert_has(
        &errs,
        "spec.successfulJobsHistoryLimit: Invalid value: -1: must be greater than or equal to 0",
    );
    assert_has(
        &errs,
        "spec.jobTemplate.spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\"",
    );
    assert_has_prefix(
        &errs,
        "spec.jobTemplate.spec.selector: Invalid value: v1.LabelSelector{",
    );
}

// ---- services ----------------------------------------------------------------------------

fn service(spec: Value) -> Value {
    json!({ "metadata": meta("web"), "spec": spec })
}

#[test]
fn service_ports() {
    assert_has(
        &create(
            "v1",
            "Service",
            service(json!({ "selector": { "app": "web" } })),
        ),
        "spec.ports: Required value",
    );
    assert_clean(&create(
        "v1",
        "Service",
        service(json!({ "clusterIP": "None", "selector": { "app": "web" } })),
    ));
    assert_clean(&create(
        "v1",
        "Service",
        service(json!({ "type": "ExternalName", "externalName": "db.example.com" })),
    ));

    let errs = create(
        "v1",
        "Service",
        service(json!({ "ports": [
        { "port": 70000, "name": "a" },
        { "port": 80 },
        { "port": 81, "name": "a", "protocol": "HTTP" },
        { "port": 82, "name": "b", "targetPort": "Bad_Name" },
        { "port": 83, "name": "c", "nodePort": 30080 },
        { "port": 83, "name": "d" }
    ] })),
    );
    assert_has(
        &errs,
        "spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive",
    );
    assert_has(&errs, "spec.ports[1].name: Required value");
    assert_has(&errs, "spec.ports[2].name: Duplicate value: \"a\"");
    assert_has(
        &errs,
        "spec.ports[2].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
    );
    assert_has(
        &errs,
        "spec.ports[3].targetPort: Invalid value: \"Bad_Name\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
    );
    assert_has(
        &errs,
        "spec.ports[4].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'",
    );
    assert_has_prefix(
        &errs,
        "spec.ports[5]: Duplicate value: core.ServicePort{Name:\"\", Protocol:\"TCP\"",
    );
}

#[test]
fn service_types_and_node_ports() {
    assert_has(
        &create(
            "v1",
            "Service",
            service(json!({ "type": "Ingress", "ports": [{ "port": 80 }] })),
        ),
        "spec.type: Unsupported value: \"Ingress\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
    );
    let errs = create(
        "v1",
        "Service",
        service(json!({ "type": "NodePort", "ports": [
        { "name": "a", "port": 80, "nodePort": 80 }, { "name": "b", "port": 81, "nodePort": 30001 }, { "name": "c", "port": 82, "nodePort": 30001 }] })),
    );
    assert_has(
        &errs,
        "spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767",
    );
    assert_has(&errs, "spec.ports[2].nodePort: Duplicate value: 30001");
    assert_clean(&create(
        "v1",
        "Service",
        service(json!({ "type": "LoadBalancer", "ports": [{ "port": 80, "nodePort": 32000 }] })),
    ));
    assert_has(
        &create("v1", "Service", service(json!({ "type": "ExternalName" }))),
        "spec.externalName: Required value",
    );
    assert_has(
        &create(
            "v1",
            "Service",
            service(json!({ "ports": [{ "port": 80 }], "externalTrafficPolicy": "Local" })),
        ),
        "spec.externalTrafficPolicy: Invalid value: \"Local\": may only be set for externally-accessible services",
    );
    assert_has(
        &create(
            "v1",
            "Service",
            service(json!({ "ports": [{ "port": 80 }], "sessionAffinity": "Sticky" })),
        ),
        "spec.sessionAffinity: Unsupported value: \"Sticky\": supported values: \"ClientIP\", \"None\"",
    );
    assert_has(
        &create(
            "v1",
            "Service",
            service(json!({ "ports": [{ "port": 80 }], "clusterIP": "10.43.0.300" })),
        ),
        "spec.clusterIPs[0]: Invalid value: \"10.43.0.300\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
    );
}

#[test]
fn service_load_balancer_class_and_traffic_fields() {
    let errs = create(
        "v1",
        "Service",
        service(
            json!({ "ports": [{ "port": 80 }], "loadBalancerClass": "example.com/lb", "trafficDistribution": "Anywhere" }),
        ),
    );
    assert_has(
        &errs,
        "spec.loadBalancerClass: Forbidden: may only be used when `type` is 'LoadBalancer'",
    );
    assert_has_prefix(
        &errs,
        "spec.trafficDistribution: Unsupported value: \"Anywhere\"",
    );
    let old = service(
        json!({ "type": "LoadBalancer", "loadBalancerClass": "example.com/lb", "ports": [{ "port": 80 }] }),
    );
    let new = service(json!({ "type": "LoadBalancer", "ports": [{ "port": 80 }] }));
    assert_eq!(
        update("v1", "Service", old, new),
        vec!["spec.loadBalancerClass: Invalid value: null: may not change once set"]
    );
}

#[test]
fn security_context_dns_and_init_container_rules() {
    let errs = create(
        "v1",
        "Pod",
        json!({ "metadata": meta("p"), "spec": {
        "securityContext": { "runAsUser": -1, "seccompProfile": { "type": "Localhost" } },
        "dnsConfig": { "nameservers": ["1.1.1.1", "x"] },
        "initContainers": [
            { "name": "init", "image": "i", "livenessProbe": { "exec": { "command": ["true"] } } },
            { "name": "sidecar", "image": "i", "restartPolicy": "Always", "readinessProbe": { "exec": { "command": ["true"] } } }
        ],
        "containers": [{ "name": "c", "image": "i", "securityContext": { "privileged": true, "allowPrivilegeEscalation": false } }] } }),
    );
    assert_has(
        &errs,
        "spec.securityContext.runAsUser: Invalid value: -1: must be between 0 and 2147483647, inclusive",
    );
    assert_has(
        &errs,
        "spec.securityContext.seccompProfile.localhostProfile: Required value: must be set when seccomp type is Localhost",
    );
    assert_has(
        &errs,
        "spec.dnsConfig.nameservers[1]: Invalid value: \"x\": must be valid IP address",
    );
    assert_has(
        &errs,
        "spec.initContainers[0].livenessProbe: Forbidden: may not be set for init containers without restartPolicy=Always",
    );
    assert!(
        !errs.iter().any(|e| e.starts_with("spec.initContainers[1]")),
        "{errs:?}"
    );
    assert_has(
        &errs,
        "spec.containers[0].securityContext: Invalid value: <security context>: cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
    );
}

#[test]
fn service_cluster_ip_is_immutable() {
    let old = service(json!({ "clusterIP": "10.43.0.10", "ports": [{ "port": 80 }] }));
    let new = service(json!({ "clusterIP": "10.43.0.11", "ports": [{ "port": 80 }] }));
    assert_eq!(
        update("v1", "Service", old.clone(), new),
        vec![
            "spec.clusterIPs[0]: Invalid value: []string{\"10.43.0.11\"}: may not change once set"
        ]
    );
    let same = service(json!({ "clusterIP": "10.43.0.10", "ports": [{ "port": 8080 }] }));
    assert_clean(&update("v1", "Service", old, same));
}

// ---- config and storage ------------------------------------------------------------------

#[test]
fn config_map_rules() {
    let errs = create(
        "v1",
        "ConfigMap",
        json!({ "metadata": meta("c"), "data": { "bad/key": "x", "..": "y", "dup": "z" },
        "binaryData": { "dup": "eg==" } }),
    );
    assert_has(
        &errs,
        "data[bad/key]: Invalid value: \"bad/key\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
    );
    assert_has(&errs, "data[..]: Invalid value: \"..\": must not be '..'");
    assert_has(
        &errs,
        "data[dup]: Invalid value: \"dup\": duplicate of key present in binaryData",
    );
    let errs = create(
        "v1",
        "ConfigMap",
        json!({ "metadata": meta("c"), "data": { "big": "x".repeat(1024 * 1024 + 1) } }),
    );
    assert_has(&errs, "[]: Too long: must have at most 1048576 bytes");

    let old = json!({ "metadata": meta("c"), "immutable": true, "data": { "a": "1" } });
    let new = json!({ "metadata": meta("c"), "data": { "a": "2" } });
    let errs = update("v1", "ConfigMap", old, new);
    assert_has(
        &errs,
        "immutable: Forbidden: field is immutable when `immutable` is set",
    );
    assert_has(
        &errs,
        "data: Forbidden: field is immutable when `immutable` is set",
    );
}

#[test]
fn secret_rules() {
    let big = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        vec![0u8; 1024 * 1024 + 1],
    );
    let errs = create(
        "v1",
        "Secret",
        json!({ "metadata": meta("s"), "data": { "blob": big, "bad key": "eA==" } }),
    );
    assert_has(&errs, "data: Too long: must have at most 1048576 bytes");
    assert_has_prefix(
        &errs,
        "data[bad key]: Invalid value: \"bad key\": a valid config key",
    );
    let errs = create(
        "v1",
        "Secret",
        json!({ "metadata": meta("s"), "data": { "notb64": "%%%" } }),
    );
    assert_has_prefix(
        &errs,
        "data[notb64]: Invalid value: <secret contents redacted>: ",
    );

    let errs = create(
        "v1",
        "Secret",
        json!({ "metadata": meta("tls"), "type": "kubernetes.io/tls", "data": { "tls.crt": "eA==" } }),
    );
    assert_eq!(errs, vec!["data[tls.key]: Required value"]);
    let errs = create(
        "v1",
        "Secret",
        json!({ "metadata": meta("reg"), "type": "kubernetes.io/dockerconfigjson",
        "stringData": { ".dockerconfigjson": "not json" } }),
    );
    assert_has(
        &errs,
        "data[.dockerconfigjson]: Invalid value: <secret contents redacted>: must be a valid JSON object",
    );

    let old = json!({ "metadata": meta("s"), "data": {} });
    let new = json!({ "metadata": meta("s"), "type": "kubernetes.io/basic-auth", "data": { "username": "dQ==" } });
    assert_eq!(
        update("v1", "Secret", old, new),
        vec!["type: Invalid value: \"kubernetes.io/basic-auth\": field is immutable"]
    );
}

fn pvc(spec: Value) -> Value {
    json!({ "metadata": meta("data"), "spec": spec })
}

#[test]
fn pvc_rules() {
    let errs = create("v1", "PersistentVolumeClaim", pvc(json!({})));
    assert_eq!(
        errs,
        vec![
            "spec.accessModes: Required value: at least 1 access mode is required",
            "spec.resources[storage]: Required value"
        ]
    );
    let errs = create(
        "v1",
        "PersistentVolumeClaim",
        pvc(
            json!({ "accessModes": ["ReadWriteOnce", "ReadWriteOncePod", "WriteMany"],
        "resources": { "requests": { "storage": "ten gigs" } }, "volumeMode": "Raw", "storageClassName": "Fast_SSD" }),
        ),
    );
    assert_has(
        &errs,
        "spec.accessModes: Unsupported value: \"WriteMany\": supported values: \"ReadOnlyMany\", \"ReadWriteMany\", \"ReadWriteOnce\", \"ReadWriteOncePod\"",
    );
    assert_has(
        &errs,
        "spec.accessModes: Forbidden: may not use ReadWriteOncePod with other access modes",
    );
    assert_has_prefix(
        &errs,
        "spec.resources[storage]: Invalid value: \"ten gigs\": quantities must match the regular expression",
    );
    assert_has(
        &errs,
        "spec.volumeMode: Unsupported value: \"Raw\": supported values: \"Block\", \"Filesystem\"",
    );
    assert_has_prefix(&errs, "spec.storageClassName: Invalid value: \"Fast_SSD\"");
    assert_has(
        &create(
            "v1",
            "PersistentVolumeClaim",
            pvc(
                json!({ "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": "0" } } }),
            ),
        ),
        "spec.resources[storage]: Invalid value: \"0\": must be greater than zero",
    );
}

#[test]
fn pvc_spec_is_immutable_except_growing_a_bound_claim() {
    let spec = json!({ "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": "1Gi" } } });
    let mut bound = pvc(spec.clone());
    bound["status"] = json!({ "phase": "Bound", "capacity": { "storage": "1Gi" } });
    bound["spec"]["volumeName"] = json!("pv-1");
    let mut grown = bound.clone();
    grown["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
    assert_clean(&update("v1", "PersistentVolumeClaim", bound.clone(), grown));

    let mut shrunk = bound.clone();
    shrunk["spec"]["resources"]["requests"]["storage"] = json!("512Mi");
    assert_has(
        &update("v1", "PersistentVolumeClaim", bound.clone(), shrunk),
        "spec.resources.requests.storage: Forbidden: field can not be less than status.capacity",
    );
    let mut modes = bound.clone();
    modes["spec"]["accessModes"] = json!(["ReadWriteMany"]);
    assert_has(
        &update("v1", "PersistentVolumeClaim", bound, modes),
        "spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
    );

    let pending = pvc(spec.clone());
    let mut binding = pending.clone();
    binding["spec"]["volumeName"] = json!("pv-1");
    assert_clean(&update(
        "v1",
        "PersistentVolumeClaim",
        pending.clone(),
        binding,
    ));
    let mut resized = pending.clone();
    resized["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
    assert_has_prefix(
        &update("v1", "PersistentVolumeClaim", pending, resized),
        "spec: Forbidden: spec is immutable after creation",
    );
}

#[test]
fn pv_rules() {
    let errs = create(
        "v1",
        "PersistentVolume",
        json!({ "metadata": { "name": "pv" }, "spec": {} }),
    );
    assert_has(&errs, "spec.accessModes: Required value");
    assert_has(&errs, "spec.capacity: Required value");
    assert_has(&errs, "spec: Required value: must specify a volume type");
    let errs = create(
        "v1",
        "PersistentVolume",
        json!({ "metadata": { "name": "pv" }, "spec": {
        "accessModes": ["ReadWriteOnce"], "capacity": { "storage": "1Gi", "cpu": "1" }, "persistentVolumeReclaimPolicy": "Keep",
        "hostPath": { "path": "/a" }, "local": { "path": "/b" } } }),
    );
    assert_has_prefix(&errs, "spec.capacity: Unsupported value: ");
    assert_has(
        &errs,
        "spec.persistentVolumeReclaimPolicy: Unsupported value: \"Keep\": supported values: \"Delete\", \"Recycle\", \"Retain\"",
    );
    assert_has(
        &errs,
        "spec.local: Forbidden: may not specify more than 1 volume type",
    );
    let errs = create(
        "v1",
        "PersistentVolume",
        json!({ "metadata": { "name": "pv" }, "spec": {
        "accessModes": ["ReadWriteOnce"], "capacity": { "storage": "1Gi" }, "local": { "path": "/b" } } }),
    );
    assert_has(
        &errs,
        "spec.nodeAffinity: Required value: Local volume requires node affinity",
    );

    let old = json!({ "metadata": { "name": "pv" }, "spec": { "accessModes": ["ReadWriteOnce"], "capacity": { "storage": "1Gi" }, "hostPath": { "path": "/a" } } });
    let mut new = old.clone();
    new["spec"]["hostPath"]["path"] = json!("/b");
    assert_has(
        &update("v1", "PersistentVolume", old.clone(), new),
        "spec.persistentvolumesource: Forbidden: spec.persistentvolumesource is immutable after creation",
    );
    let mut released = old.clone();
    released["spec"]["persistentVolumeReclaimPolicy"] = json!("Delete");
    assert_clean(&update("v1", "PersistentVolume", old, released));
}

// ---- cluster objects ---------------------------------------------------------------------

#[test]
fn namespace_and_node_rules() {
    let errs = create(
        "v1",
        "Namespace",
        json!({ "metadata": { "name": "a" }, "spec": { "finalizers": ["custom"] } }),
    );
    assert_has(
        &errs,
        "spec.finalizers: Invalid value: \"custom\": name is neither a standard finalizer name nor is it fully qualified",
    );

    let errs = create(
        "v1",
        "Node",
        json!({ "metadata": { "name": "n" }, "spec": { "podCIDRs": ["10.42.0.0/33"],
        "taints": [{ "key": "gpu", "effect": "NoSchedule" }, { "key": "gpu", "effect": "NoSchedule" }, { "key": "x", "effect": "Never" }] },
        "status": { "capacity": { "memory": "lots" } } }),
    );
    assert_has(
        &errs,
        "spec.podCIDRs[0]: Invalid value: \"10.42.0.0/33\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
    );
    assert_has(
        &errs,
        "spec.taints[1]: Duplicate value: \"gpu\":\"NoSchedule\"",
    );
    assert_has(
        &errs,
        "spec.taints[2].effect: Unsupported value: \"Never\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\"",
    );
    assert_has_prefix(
        &errs,
        "status.capacity[memory]: Invalid value: \"lots\": quantities must match",
    );

    let old = json!({ "metadata": { "name": "n" }, "spec": { "podCIDRs": ["10.42.0.0/24"] } });
    let new = json!({ "metadata": { "name": "n" }, "spec": { "podCIDRs": ["10.42.1.0/24"] } });
    assert_has(
        &update("v1", "Node", old, new),
        "spec.podCIDRs: Forbidden: node updates may not change podCIDR except from \"\" to valid",
    );
}

#[test]
fn hpa_rules() {
    let hpa = |spec: Value| {
        create(
            "autoscaling/v2",
            "HorizontalPodAutoscaler",
            json!({ "metadata": meta("web"), "spec": spec }),
        )
    };
    let target = json!({ "apiVersion": "apps/v1", "kind": "Deployment", "name": "web" });
    assert_clean(&hpa(
        json!({ "scaleTargetRef": target, "minReplicas": 1, "maxReplicas": 5 }),
    ));
    let errs = hpa(json!({ "scaleTargetRef": {}, "minReplicas": 0, "maxReplicas": 0 }));
    assert_has(
        &errs,
        "spec.minReplicas: Invalid value: 0: must be greater than or equal to 1",
    );
    assert_has(
        &errs,
        "spec.maxReplicas: Invalid value: 0: must be greater than 0",
    );
    assert_has(&errs, "spec.scaleTargetRef.kind: Required value");
    assert_has(&errs, "spec.scaleTargetRef.name: Required value");
    assert_has(
        &hpa(json!({ "scaleTargetRef": target, "minReplicas": 5, "maxReplicas": 2 })),
        "spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`",
    );
    let errs = hpa(
        json!({ "scaleTargetRef": target, "maxReplicas": 3, "metrics": [
        { "type": "Resource", "resource": { "name": "cpu", "target": { "type": "Utilization", "averageUtilization": 0 } } },
        { "type": "Pods" },
        { "type": "Magic" }
    ], "behavior": { "scaleDown": { "stabilizationWindowSeconds": 4000, "policies": [{ "type": "Pods", "value": 0, "periodSeconds": 2000 }] } } }),
    );
    assert_has(
        &errs,
        "spec.metrics[0].resource.target.averageUtilization: Invalid value: 0: must be greater than 0",
    );
    assert_has(
        &errs,
        "spec.metrics[1].pods: Required value: must populate information for the given metric source",
    );
    assert_has(
        &errs,
        "spec.metrics[2].type: Unsupported value: \"Magic\": supported values: \"ContainerResource\", \"External\", \"Object\", \"Pods\", \"Resource\"",
    );
    assert_has(
        &errs,
        "spec.behavior.scaleDown.stabilizationWindowSeconds: Invalid value: 4000: must be less than or equal to 3600",
    );
    assert_has(
        &errs,
        "spec.behavior.scaleDown.policies[0].value: Invalid value: 0: must be greater than zero",
    );
    assert_has(
        &errs,
        "spec.behavior.scaleDown.policies[0].periodSeconds: Invalid value: 2000: must be less than or equal to 1800",
    );
}

#[test]
fn lease_event_slice_revision_rules() {
    let errs = create(
        "coordination.k8s.io/v1",
        "Lease",
        json!({ "metadata": meta("l"), "spec": {
        "leaseDurationSeconds": 0, "leaseTransitions": -1, "preferredHolder": "a" } }),
    );
    assert_has(
        &errs,
        "spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0",
    );
    assert_has(
        &errs,
        "spec.leaseTransitions: Invalid value: -1: must be greater than or equal to 0",
    );
    assert_has(
        &errs,
        "spec.preferredHolder: Forbidden: may only be specified if `strategy` is defined",
    );

    let errs = create(
        "v1",
        "Event",
        json!({ "metadata": meta("e"), "involvedObject": { "namespace": "other" } }),
    );
    assert_has(
        &errs,
        "involvedObject.namespace: Invalid value: \"other\": does not match event.namespace",
    );
    let errs = create(
        "events.k8s.io/v1",
        "Event",
        json!({ "metadata": meta("e"), "type": "Info", "deprecatedCount": 3 }),
    );
    assert_has(&errs, "eventTime: Required value");
    assert_has(&errs, "type: Invalid value: \"\": has invalid value: Info");
    assert_has(&errs, "count: Invalid value: \"\": needs to be unset");

    let slice = |v: Value| create("discovery.k8s.io/v1", "EndpointSlice", v);
    let errs = slice(json!({ "metadata": meta("s"), "addressType": "IPv5" }));
    assert_has(
        &errs,
        "addressType: Unsupported value: \"IPv5\": supported values: \"FQDN\", \"IPv4\", \"IPv6\"",
    );
    let errs = slice(
        json!({ "metadata": meta("s"), "endpoints": [{ "addresses": ["fe80::1"] }, { "addresses": [] }],
        "ports": [{ "name": "http", "port": 80 }, { "name": "http", "port": 0, "protocol": "ICMP" }] }),
    );
    assert_has(&errs, "addressType: Required value");
    let errs4 = slice(
        json!({ "metadata": meta("s"), "addressType": "IPv4", "endpoints": [{ "addresses": ["fe80::1"] }, { "addresses": [] }],
        "ports": [{ "name": "http", "port": 80 }, { "name": "http", "port": 0, "protocol": "ICMP" }] }),
    );
    assert_has(
        &errs4,
        "endpoints[0].addresses[0]: Invalid value: \"fe80::1\": must be a valid IPv4 address",
    );
    assert_has(
        &errs4,
        "endpoints[1].addresses: Required value: must contain at least 1 address",
    );
    assert_has(&errs4, "ports[1].name: Duplicate value: \"http\"");
    assert_has(
        &errs4,
        "ports[1].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
    );
    assert_has(
        &errs4,
        "ports[1].port: Invalid value: 0: must be between 1 and 65535, inclusive",
    );
    let old = json!({ "metadata": meta("s"), "addressType": "IPv4" });
    let new = json!({ "metadata": meta("s"), "addressType": "IPv6" });
    assert_has(
        &update("discovery.k8s.io/v1", "EndpointSlice", old, new),
        "addressType: Invalid value: \"IPv6\": field is immutable",
    );

    let errs = create(
        "apps/v1",
        "ControllerRevision",
        json!({ "metadata": meta("r"), "revision": -1 }),
    );
    assert_has(&errs, "data: Required value: data is mandatory");
    assert_has(
        &errs,
        "revision: Invalid value: -1: must be greater than or equal to 0",
    );
    let old = json!({ "metadata": meta("r"), "data": { "a": 1 }, "revision": 1 });
    let new = json!({ "metadata": meta("r"), "data": { "a": 2 }, "revision": 2 });
    assert_has(
        &update("apps/v1", "ControllerRevision", old, new),
        "data: Invalid value: {\"a\":2}: field is immutable",
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let errs = create(
        "apps/v1",
        "Deployment",
        json!({ "metadata": { "name": "Bad", "namespace": "default" }, "spec": {
        "replicas": -1, "selector": { "matchLabels": { "app": "web" } },
        "template": { "metadata": { "labels": { "app": "web" } }, "spec": { "containers": [{ "name": "c" }, { "name": "c", "image": "x", "ports": [{ "containerPort": 0 }] }] } } } }),
    );
    assert_eq!(errs.len(), 5, "{errs:#?}");
}

#[test]
fn wrongly_typed_fields_are_rejected_with_their_path() {
    let mut d = valid_deployment();
    d["spec"]["replicas"] = json!("two");
    assert_eq!(
        create("apps/v1", "Deployment", d),
        vec!["spec.replicas: Invalid value: \"two\": invalid type: string \"two\", expected i32"]
    );
    let mut d = valid_deployment();
    d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = json!("80");
    assert_has_prefix(
        &create("apps/v1", "Deployment", d),
        "spec.template.spec.containers[0].ports[0].containerPort: Invalid value: \"80\": invalid type: string",
    );
    let errs = create(
        "v1",
        "ConfigMap",
        json!({ "metadata": { "name": "c", "namespace": "default", "labels": { "app.kubernetes.io/version": 2 } } }),
    );
    assert_has_prefix(
        &errs,
        "metadata.labels[app.kubernetes.io/version]: Invalid value: 2: invalid type: integer",
    );
    // Numbers are fine where Kubernetes takes quantities or int-or-strings.
    let mut d = valid_deployment();
    d["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = json!(1);
    d["spec"]["strategy"] = json!({ "type": "RollingUpdate", "rollingUpdate": { "maxSurge": 1, "maxUnavailable": "10%" } });
    assert_clean(&create("apps/v1", "Deployment", d));
}

#[test]
fn malformed_input_never_panics() {
    let junk = [
        json!(null),
        json!([]),
        json!({ "metadata": "x", "spec": 3 }),
        json!({ "metadata": { "name": 3, "labels": [1], "annotations": { "a": 1 } }, "spec": { "containers": "x", "template": [], "ports": { "a": 1 },
            "selector": "app=web", "strategy": 5, "replicas": "two", "resources": { "requests": 1 } }, "data": [1], "subsets": "x" }),
    ];
    for def in crate::registry::RESOURCES {
        for j in &junk {
            let mut d = j.clone();
            defaults::apply(def, &mut d);
            let _ = validate(def, &d, Some(j));
            let _ = validate(def, j, None);
        }
    }
}

/// Every sub-value of realistic objects replaced by every kind of odd value: defaulting
/// stays idempotent and neither defaulting nor validation panics.
#[test]
fn mutated_objects_never_panic_and_default_idempotently() {
    fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
        out.push(at.clone());
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    pointers(
                        x,
                        format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                        out,
                    );
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    pointers(x, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }
    let mut pod = json!({ "metadata": meta("p"), "spec": { "containers": [web_container()],
        "initContainers": [{ "name": "init", "image": "i", "restartPolicy": "Always", "startupProbe": { "grpc": { "port": 9000 } } }],
        "volumes": [{ "name": "cache", "emptyDir": { "sizeLimit": "1Gi" } }, { "name": "cfg", "configMap": { "name": "c", "items": [{ "key": "k", "path": "p" }] } },
            { "name": "proj", "projected": { "sources": [{ "serviceAccountToken": { "path": "t" } }, { "downwardAPI": { "items": [{ "path": "l", "fieldRef": { "fieldPath": "metadata.labels" } }] } }] } }],
        "tolerations": [{ "key": "gpu", "operator": "Exists", "effect": "NoSchedule" }],
        "affinity": { "nodeAffinity": { "requiredDuringSchedulingIgnoredDuringExecution": { "nodeSelectorTerms": [{ "matchExpressions": [{ "key": "k", "operator": "In", "values": ["v"] }] }] } } },
        "securityContext": { "runAsUser": 1000, "seccompProfile": { "type": "RuntimeDefault" } },
        "topologySpreadConstraints": [{ "maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule" }] } });
    pod["spec"]["containers"][0]["env"] =
        json!([{ "name": "A", "valueFrom": { "resourceFieldRef": { "resource": "limits.cpu" } } }]);
    let samples: Vec<(&str, &str, Value)> = vec![
        ("v1", "Pod", pod),
        ("apps/v1", "Deployment", valid_deployment()),
        ("apps/v1", "StatefulSet", stateful_set()),
        ("batch/v1", "Job", job()),
        ("batch/v1", "CronJob", cron_job("*/5 * * * *")),
        (
            "v1",
            "Service",
            service(
                json!({ "type": "NodePort", "clusterIP": "10.43.0.5", "ports": [{ "name": "a", "port": 80, "nodePort": 30001 }, { "name": "b", "port": 81 }] }),
            ),
        ),
        (
            "v1",
            "PersistentVolumeClaim",
            pvc(
                json!({ "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": "1Gi" } } }),
            ),
        ),
        (
            "v1",
            "Secret",
            json!({ "metadata": meta("s"), "type": "kubernetes.io/tls", "data": { "tls.crt": "eA==", "tls.key": "eA==" } }),
        ),
        (
            "v1",
            "Node",
            json!({ "metadata": { "name": "n" }, "spec": { "taints": [{ "key": "k", "effect": "NoSchedule" }] }, "status": { "capacity": { "cpu": "4" } } }),
        ),
        (
            "autoscaling/v2",
            "HorizontalPodAutoscaler",
            json!({ "metadata": meta("h"), "spec": { "scaleTargetRef": { "kind": "Deployment", "name": "web" }, "maxReplicas": 3,
            "behavior": { "scaleUp": { "policies": [{ "type": "Pods", "value": 1, "periodSeconds": 60 }] } } } }),
        ),
        (
            "discovery.k8s.io/v1",
            "EndpointSlice",
            json!({ "metadata": meta("e"), "addressType": "IPv4", "endpoints": [{ "addresses": ["10.0.0.1"] }], "ports": [{ "port": 80 }] }),
        ),
        (
            "events.k8s.io/v1",
            "Event",
            json!({ "metadata": meta("ev"), "eventTime": "2026-01-01T00:00:00.000000Z", "type": "Normal", "regarding": { "namespace": "default" } }),
        ),
    ];
    let odd = [
        json!(null),
        json!("x"),
        json!(-1),
        json!(70000),
        json!(1.5),
        json!([]),
        json!({}),
        json!(true),
        json!([null, 1]),
    ];
    for (api_version, kind, sample) in samples {
        let def = lookup_kind(api_version, kind).unwrap();
        let mut ptrs = Vec::new();
        pointers(&sample, String::new(), &mut ptrs);
        for p in ptrs.iter().filter(|p| !p.is_empty()) {
            for o in &odd {
                let mut v = sample.clone();
                if let Some(slot) = v.pointer_mut(p) {
                    *slot = o.clone();
                }
                let mut once = v.clone();
                defaults::apply(def, &mut once);
                let mut twice = once.clone();
                defaults::apply(def, &mut twice);
                assert_eq!(
                    once, twice,
                    "{kind} {p} = {o}: defaulting is not idempotent"
                );
                let _ = validate(def, &once, None);
                let _ = validate(def, &once, Some(&sample));
                let _ = validate(def, &sample, Some(&once));
            }
        }
    }
}
