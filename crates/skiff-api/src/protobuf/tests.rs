//! Tests of protobuf decoding against bodies captured from kubectl 1.32 and hand-built messages.

use super::*;

/// One captured body and the JSON kubectl printed for it, by file stem under `testdata/`.
macro_rules! fixtures {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_bytes!(concat!("testdata/", $name, ".pb")), include_str!(concat!("testdata/", $name, ".json")))),*]
    };
}

/// Bodies captured from kubectl 1.32 (`create`, `autoscale`, `create token`) next to the JSON
/// that `--dry-run=client -o json` printed for the same command (`token.json` is written by hand:
/// that command has no dry run).
const FIXTURES: &[(&str, &[u8], &str)] = fixtures!(
    "autoscale",
    "autoscale_mem",
    "clusterrole",
    "clusterrole_agg",
    "clusterrole_nonres",
    "cm_empty",
    "cm_env",
    "cm_file",
    "cm_literal",
    "crb",
    "cronjob",
    "cronjob_cmd",
    "cronjob_restart",
    "deploy",
    "deploy_cmd",
    "deploy_multi",
    "deploy_port",
    "ingress",
    "ingress_tls",
    "job",
    "job_cmd",
    "job_from",
    "job_rich",
    "namespace",
    "pc",
    "pdb",
    "quota",
    "quota_zero",
    "role",
    "rolebinding",
    "sa",
    "secret_docker",
    "secret_empty",
    "secret_file",
    "secret_generic",
    "svc_clusterip",
    "svc_ext",
    "svc_headless",
    "svc_lb",
    "svc_nodeport",
    "svc_nodeport2",
    "token"
);

#[test]
fn protobuf_media_type() {
    assert!(is_protobuf("application/vnd.kubernetes.protobuf"));
    assert!(is_protobuf(
        "Application/VND.Kubernetes.Protobuf; charset=utf-8"
    ));
    assert!(!is_protobuf(""));
    assert!(!is_protobuf("application/json"));
    assert!(!is_protobuf("application/vnd.kubernetes.protobuf.extra"));
}

#[test]
fn kubectl_bodies_decode_to_kubectl_json() {
    for (name, pb, json) in FIXTURES {
        let got = decode(pb).unwrap_or_else(|e| panic!("{name}: {e}"));
        let want: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got, want, "{name}");
        assert_eq!(
            serde_json::to_string(&got).ok().as_deref(),
            Some(json.trim()),
            "{name}: field order"
        );
    }
}

mod hand_built {
    use super::*;
    use k8s_pb::api::apps::v1::DeploymentSpec;
    use k8s_pb::api::core::v1::{
        Container, ContainerPort, ContainerRestartRule, ContainerRestartRuleOnExitCodes, EnvVar,
        EnvVarSource, EphemeralContainer, FileKeySelector, PodSpec, PodTemplateSpec,
        ResourceRequirements, ServicePort, ServiceSpec, Volume, VolumeSource,
    };
    use k8s_pb::apimachinery::pkg::api::resource::Quantity;
    use k8s_pb::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
    use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
    use serde_json::json;
    use std::collections::BTreeMap;

    /// Wraps an encoded object the way kubectl's protobuf serializer does.
    pub(super) fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let unknown = Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some(api_version.into()),
                kind: Some(kind.into()),
            }),
            raw: Some(raw),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        let mut body = MAGIC.to_vec();
        body.extend(unknown.encode_to_vec());
        body
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn meta(name: &str, l: &[(&str, &str)]) -> Option<ObjectMeta> {
        Some(ObjectMeta {
            name: s(name),
            labels: labels(l),
            ..Default::default()
        })
    }

    /// `kubectl create deployment web --image=nginx --replicas=2 --port=80`
    pub(super) fn web_deployment() -> Deployment {
        Deployment {
            metadata: meta("web", &[("app", "web")]),
            spec: Some(DeploymentSpec {
                replicas: Some(2),
                selector: Some(LabelSelector {
                    match_labels: labels(&[("app", "web")]),
                    match_expressions: vec![],
                }),
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: labels(&[("app", "web")]),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: s("nginx"),
                            image: s("nginx"),
                            ports: vec![ContainerPort {
                                container_port: Some(80),
                                ..Default::default()
                            }],
                            resources: Some(ResourceRequirements::default()),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                }),
                strategy: Some(Default::default()),
                ..Default::default()
            }),
            status: Some(Default::default()),
        }
    }

    #[test]
    fn deployment() {
        let body = envelope("apps/v1", "Deployment", web_deployment().encode_to_vec());
        let want = json!({
            "kind": "Deployment", "apiVersion": "apps/v1",
            "metadata": {"name": "web", "creationTimestamp": null, "labels": {"app": "web"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"creationTimestamp": null, "labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "nginx", "image": "nginx", "ports": [{"containerPort": 80}], "resources": {}}]}
                },
                "strategy": {}
            },
            "status": {}
        });
        assert_eq!(decode(&body).ok(), Some(want));
    }

    #[test]
    fn configmap_from_literals() {
        let cm = ConfigMap {
            metadata: meta("cfg", &[]),
            data: labels(&[("a", "1"), ("b", "two")]),
            ..Default::default()
        };
        let want = json!({"kind": "ConfigMap", "apiVersion": "v1",
            "metadata": {"name": "cfg", "creationTimestamp": null}, "data": {"a": "1", "b": "two"}});
        assert_eq!(
            decode(&envelope("v1", "ConfigMap", cm.encode_to_vec())).ok(),
            Some(want)
        );
    }

    #[test]
    fn secret_data_is_base64() {
        let secret = Secret {
            metadata: meta("s1", &[]),
            data: BTreeMap::from([
                ("pw".to_string(), b"secret".to_vec()),
                ("bin".to_string(), vec![0, 255, 254]),
                ("empty".to_string(), vec![]),
            ]),
            r#type: s("Opaque"),
            ..Default::default()
        };
        let want = json!({"kind": "Secret", "apiVersion": "v1",
            "metadata": {"name": "s1", "creationTimestamp": null},
            "data": {"bin": "AP/+", "empty": "", "pw": "c2VjcmV0"}, "type": "Opaque"});
        assert_eq!(
            decode(&envelope("v1", "Secret", secret.encode_to_vec())).ok(),
            Some(want)
        );
    }

    #[test]
    fn service_nodeport() {
        let svc = Service {
            metadata: meta("n1", &[("app", "n1")]),
            spec: Some(ServiceSpec {
                ports: vec![
                    ServicePort {
                        name: s("80-8080"),
                        protocol: s("TCP"),
                        port: Some(80),
                        target_port: Some(IntOrString {
                            r#type: Some(0),
                            int_val: Some(8080),
                            str_val: s(""),
                        }),
                        node_port: Some(0),
                        ..Default::default()
                    },
                    ServicePort {
                        name: s("web"),
                        port: Some(8081),
                        target_port: Some(IntOrString {
                            r#type: Some(1),
                            int_val: Some(0),
                            str_val: s("http"),
                        }),
                        ..Default::default()
                    },
                ],
                selector: labels(&[("app", "n1")]),
                r#type: s("NodePort"),
                ..Default::default()
            }),
            status: None,
        };
        let want = json!({"kind": "Service", "apiVersion": "v1",
            "metadata": {"name": "n1", "creationTimestamp": null, "labels": {"app": "n1"}},
            "spec": {
                "ports": [
                    {"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080},
                    {"name": "web", "port": 8081, "targetPort": "http"}
                ],
                "selector": {"app": "n1"},
                "type": "NodePort"
            },
            "status": {"loadBalancer": {}}});
        assert_eq!(
            decode(&envelope("v1", "Service", svc.encode_to_vec())).ok(),
            Some(want)
        );
    }

    #[test]
    fn namespace() {
        let ns = Namespace {
            metadata: meta("ns1", &[]),
            spec: None,
            status: None,
        };
        let want = json!({"kind": "Namespace", "apiVersion": "v1",
            "metadata": {"name": "ns1", "creationTimestamp": null}, "spec": {}, "status": {}});
        assert_eq!(
            decode(&envelope("v1", "Namespace", ns.encode_to_vec())).ok(),
            Some(want)
        );
    }

    pub(super) fn pod(spec: PodSpec) -> Pod {
        Pod {
            metadata: Some(ObjectMeta {
                name: s("p3"),
                creation_timestamp: Some(Time {
                    seconds: Some(1_704_067_200),
                    nanos: Some(0),
                }),
                ..Default::default()
            }),
            spec: Some(spec),
            status: None,
        }
    }

    #[test]
    fn pod_with_times_quantities_and_pointers() {
        let p = pod(PodSpec {
            containers: vec![Container {
                name: s("p3"),
                image: s("busybox"),
                env: vec![EnvVar {
                    name: s("A"),
                    value: s(""),
                    value_from: None,
                }],
                resources: Some(ResourceRequirements {
                    limits: BTreeMap::from([
                        ("cpu".to_string(), Quantity { string: s("500m") }),
                        ("memory".to_string(), Quantity { string: s("128Mi") }),
                    ]),
                    ..Default::default()
                }),
                stdin: Some(false),
                ..Default::default()
            }],
            restart_policy: s("Always"),
            termination_grace_period_seconds: Some(0),
            host_network: Some(false),
            ..Default::default()
        });
        let want = json!({"kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": "p3", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {
                "containers": [{"name": "p3", "image": "busybox", "env": [{"name": "A"}],
                    "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}}}],
                "restartPolicy": "Always",
                // A pointer set to zero is kept; a non-pointer false is omitted.
                "terminationGracePeriodSeconds": 0
            },
            "status": {}});
        assert_eq!(
            decode(&envelope("v1", "Pod", p.encode_to_vec())).ok(),
            Some(want)
        );
    }

    /// Fields newer than kubectl 1.32 (so not in the captured bodies), shaped by their Go tags.
    #[test]
    fn container_restart_rules_and_file_key_refs() {
        let p = pod(PodSpec {
            containers: vec![Container {
                name: s("c"),
                restart_policy: s("Never"),
                restart_policy_rules: vec![ContainerRestartRule {
                    action: s("Restart"),
                    exit_codes: Some(ContainerRestartRuleOnExitCodes {
                        operator: s("In"),
                        values: vec![42],
                    }),
                }],
                env: vec![EnvVar {
                    name: s("TOKEN"),
                    value: s(""),
                    value_from: Some(EnvVarSource {
                        file_key_ref: Some(FileKeySelector {
                            volume_name: s("cfg"),
                            path: s("env"),
                            key: s("TOKEN"),
                            optional: None,
                        }),
                        ..Default::default()
                    }),
                }],
                ..Default::default()
            }],
            ..Default::default()
        });
        let v = decode(&envelope("v1", "Pod", p.encode_to_vec())).ok();
        assert_eq!(
            v.map(|v| v["spec"]["containers"][0].clone()),
            Some(json!({
                "name": "c",
                "env": [{"name": "TOKEN", "valueFrom": {"fileKeyRef": {"volumeName": "cfg", "path": "env", "key": "TOKEN"}}}],
                "resources": {},
                "restartPolicy": "Never",
                "restartPolicyRules": [{"action": "Restart", "exitCodes": {"operator": "In", "values": [42]}}]
            }))
        );
    }

    fn err(body: &[u8]) -> (u16, String) {
        match decode(body) {
            Ok(v) => panic!("expected an error, got {v}"),
            Err(e) => (e.code(), e.to_string()),
        }
    }

    #[test]
    fn unset_container_list_is_null_like_go() {
        let v = decode(&envelope(
            "v1",
            "Pod",
            pod(PodSpec::default()).encode_to_vec(),
        ))
        .ok();
        assert_eq!(
            v.map(|v| v["spec"].clone()),
            Some(json!({"containers": null}))
        );
    }

    #[test]
    fn unconverted_fields_are_refused_with_their_path() {
        let p = pod(PodSpec {
            ephemeral_containers: vec![EphemeralContainer::default()],
            ..Default::default()
        });
        assert_eq!(
            err(&envelope("v1", "Pod", p.encode_to_vec())),
            (
                415,
                "protobuf field spec.ephemeralContainers is not supported; send JSON".into()
            )
        );
        let mut d = web_deployment();
        if let Some(spec) = d
            .spec
            .as_mut()
            .and_then(|s| s.template.as_mut())
            .and_then(|t| t.spec.as_mut())
        {
            spec.volumes = vec![Volume {
                name: s("scratch"),
                volume_source: Some(VolumeSource {
                    ephemeral: Some(Default::default()),
                    ..Default::default()
                }),
            }];
        }
        assert_eq!(
            err(&envelope("apps/v1", "Deployment", d.encode_to_vec())),
            (415, "protobuf field spec.template.spec.volumes[0].ephemeral is not supported; send JSON".into())
        );
    }

    #[test]
    fn every_supported_kind_decodes() {
        for (api_version, kind) in SUPPORTED_KINDS {
            let v = decode(&envelope(api_version, kind, vec![]))
                .unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(
                (v["apiVersion"].as_str(), v["kind"].as_str()),
                (Some(*api_version), Some(*kind))
            );
        }
    }

    #[test]
    fn unknown_kinds_are_unsupported_media_type() {
        let (code, msg) = err(&envelope("apps/v1", "StatefulSet", vec![]));
        assert_eq!(code, 415);
        assert!(msg.contains("apps/v1 StatefulSet"), "{msg}");
    }

    #[test]
    fn fields_unknown_to_k8s_pb_are_refused_not_dropped() {
        let ns = || Namespace {
            metadata: meta("ns1", &[("a", "")]),
            spec: None,
            status: None,
        };
        // Field 15 (length-delimited), as a newer Kubernetes might add at the top level.
        let mut raw = ns().encode_to_vec();
        raw.extend([0x7a, 0x01, b'x']);
        let (code, msg) = err(&envelope("v1", "Namespace", raw));
        assert_eq!(
            (code, msg.as_str()),
            (
                415,
                "protobuf Namespace has field number 15, which this server does not know; send JSON"
            )
        );

        // Field 99 (varint 1) inside metadata (field 1): the metadata bytes are rebuilt with it.
        let mut metadata = ns().metadata.unwrap_or_default().encode_to_vec();
        metadata.extend([0x98, 0x06, 0x01]);
        let mut raw = vec![0x0a, u8::try_from(metadata.len()).unwrap_or(0)];
        raw.extend(metadata);
        let (code, msg) = err(&envelope("v1", "Namespace", raw));
        assert_eq!(code, 415);
        assert!(msg.contains("field number 1.99"), "{msg}");
    }

    #[test]
    fn malformed_bodies_are_bad_requests() {
        assert_eq!(err(b"").0, 400);
        assert_eq!(err(b"{\"kind\":\"Namespace\"}").0, 400);
        assert_eq!(err(b"k8s\0\x0a\xff").0, 400);
        // A valid envelope without type meta.
        let mut body = MAGIC.to_vec();
        body.extend(Unknown::default().encode_to_vec());
        assert_eq!(err(&body).0, 400);
        // A valid envelope whose raw object is not a Deployment.
        assert_eq!(
            err(&envelope("apps/v1", "Deployment", vec![0x0a, 0x05, 0x01])).0,
            400
        );
    }

    #[test]
    fn compressed_envelopes_are_unsupported() {
        let unknown = Unknown {
            type_meta: Some(TypeMeta {
                api_version: s("v1"),
                kind: s("Namespace"),
            }),
            raw: Some(vec![]),
            content_encoding: s("gzip"),
            content_type: None,
        };
        let mut body = MAGIC.to_vec();
        body.extend(unknown.encode_to_vec());
        assert_eq!(err(&body).0, 415);
    }
}

/// Random, truncated and corrupted bodies never panic; they fail with 400 or 415.
#[test]
fn hostile_bytes_never_panic() {
    fn check(body: &[u8]) {
        if let Err(e) = decode(body) {
            assert!(matches!(e.code(), 400 | 415), "{e}");
        }
    }
    // xorshift64: deterministic, so a failure reproduces.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let seeds: Vec<Vec<u8>> = FIXTURES
        .iter()
        .map(|(_, pb, _)| pb.to_vec())
        .chain([hand_built::envelope(
            "apps/v1",
            "Deployment",
            hand_built::web_deployment().encode_to_vec(),
        )])
        .collect();
    for seed in &seeds {
        for len in 0..seed.len() {
            check(&seed[..len]);
        }
        for _ in 0..300 {
            let mut b = seed.clone();
            for _ in 0..=(next() % 4) {
                let i = (next() as usize) % b.len();
                b[i] = next() as u8;
            }
            check(&b);
        }
        // Corrupt the object inside an intact envelope, so the converters see the damage.
        let Ok(unknown) = Unknown::decode(&seed[MAGIC.len()..]) else {
            continue;
        };
        let (Some(type_meta), Some(raw)) = (unknown.type_meta, unknown.raw) else {
            continue;
        };
        let (api_version, kind) = (
            type_meta.api_version.unwrap_or_default(),
            type_meta.kind.unwrap_or_default(),
        );
        for _ in 0..300 {
            let mut r = raw.clone();
            for _ in 0..=(next() % 4) {
                let i = (next() as usize) % r.len().max(1);
                if let Some(byte) = r.get_mut(i) {
                    *byte = next() as u8;
                }
            }
            check(&hand_built::envelope(&api_version, &kind, r));
        }
    }
    for _ in 0..2000 {
        let a: Vec<u8> = (0..next() % 32).map(|_| next() as u8).collect();
        let b: Vec<u8> = (0..next() % 32).map(|_| next() as u8).collect();
        let _ = wire::first_unknown_field(&a, &b);
        let _ = wire::first_unknown_field(&a, &a);
    }
    for _ in 0..2000 {
        let len = (next() % 64) as usize;
        let mut b: Vec<u8> = if next() % 2 == 0 {
            MAGIC.to_vec()
        } else {
            Vec::new()
        };
        b.extend((0..len).map(|_| next() as u8));
        check(&b);
    }
}
