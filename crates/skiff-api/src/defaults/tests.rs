//! Defaulting tests: objects compared against what a real cluster stores.

use super::apply;
use crate::registry::{RESOURCES, lookup_kind};
use serde_json::{Value, json};

fn defaulted(api_version: &str, kind: &str, mut obj: Value) -> Value {
    let def = lookup_kind(api_version, kind).expect("served kind");
    apply(def, &mut obj);
    obj
}

#[test]
fn minimal_deployment_gets_what_kubectl_shows() {
    let obj = defaulted(
        "apps/v1",
        "Deployment",
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": "web", "namespace": "default" },
            "spec": {
                "selector": { "matchLabels": { "app": "web" } },
                "template": {
                    "metadata": { "labels": { "app": "web" } },
                    "spec": { "containers": [{ "name": "nginx", "image": "nginx:1.27", "ports": [{ "containerPort": 80 }] }] }
                }
            }
        }),
    );
    let expected = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "web", "namespace": "default" },
        "spec": {
            "progressDeadlineSeconds": 600,
            "replicas": 1,
            "revisionHistoryLimit": 10,
            "selector": { "matchLabels": { "app": "web" } },
            "strategy": { "rollingUpdate": { "maxSurge": "25%", "maxUnavailable": "25%" }, "type": "RollingUpdate" },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": {
                    "containers": [{
                        "image": "nginx:1.27",
                        "imagePullPolicy": "IfNotPresent",
                        "name": "nginx",
                        "ports": [{ "containerPort": 80, "protocol": "TCP" }],
                        "resources": {},
                        "terminationMessagePath": "/dev/termination-log",
                        "terminationMessagePolicy": "File"
                    }],
                    "dnsPolicy": "ClusterFirst",
                    "restartPolicy": "Always",
                    "schedulerName": "default-scheduler",
                    "securityContext": {},
                    "terminationGracePeriodSeconds": 30
                }
            }
        }
    });
    assert_eq!(obj, expected);
}

#[test]
fn defaulting_twice_changes_nothing() {
    let samples = [
        json!({ "metadata": { "name": "x", "uid": "u1" }, "spec": {
            "template": { "spec": { "containers": [{ "name": "c", "image": "busybox",
                "livenessProbe": { "httpGet": { "port": 8080 } },
                "env": [{ "name": "N", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } }],
                "resources": { "limits": { "cpu": "1" } } }],
              "volumes": [{ "name": "a" }, { "name": "b", "configMap": { "name": "cm" } }] } },
            "jobTemplate": { "spec": { "template": { "spec": { "containers": [{ "name": "c", "image": "i" }] } } } },
            "volumeClaimTemplates": [{ "metadata": { "name": "d" }, "spec": {} }],
            "ports": [{ "port": 80 }], "type": "LoadBalancer",
            "behavior": { "scaleUp": {} },
            "containers": [{ "name": "c", "image": "busybox", "resources": { "limits": { "cpu": "1", "memory": "1Gi" } } }]
        }, "ports": [{ "port": 80 }], "subsets": [{ "ports": [{ "port": 1 }] }],
           "status": { "capacity": { "cpu": "4" } } }),
        json!({ "metadata": { "name": "y" } }),
        json!({}),
    ];
    for def in RESOURCES {
        for sample in &samples {
            let mut once = sample.clone();
            apply(def, &mut once);
            let mut twice = once.clone();
            apply(def, &mut twice);
            assert_eq!(once, twice, "{} defaulting is not idempotent", def.kind);
        }
    }
}

#[test]
fn non_objects_are_left_alone() {
    for def in RESOURCES {
        let mut v = json!("text");
        apply(def, &mut v);
        assert_eq!(v, json!("text"));
        // Malformed fields must not panic.
        let mut v = json!({ "spec": "x", "metadata": 3 });
        apply(def, &mut v);
        let mut v = json!({ "spec": { "template": 1, "containers": "x", "ports": [1, null], "strategy": [] } });
        apply(def, &mut v);
    }
}

#[test]
fn pod_defaults() {
    let pod = defaulted(
        "v1",
        "Pod",
        json!({ "metadata": { "name": "p" }, "spec": { "containers": [{
            "name": "c", "image": "model-server",
            "readinessProbe": { "httpGet": { "port": 8080, "path": "/ready" } },
            "startupProbe": { "tcpSocket": { "port": 8080 } },
            "env": [{ "name": "POD", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } }],
            "resources": { "limits": { "cpu": "500m", "memory": "1Gi" } }
        }], "volumes": [
            { "name": "scratch" },
            { "name": "cfg", "configMap": { "name": "cfg" } },
            { "name": "sec", "secret": { "secretName": "s" } }
        ] } }),
    );
    let spec = &pod["spec"];
    let c = &spec["containers"][0];
    assert_eq!(c["imagePullPolicy"], "Always");
    assert_eq!(c["readinessProbe"]["timeoutSeconds"], 1);
    assert_eq!(c["readinessProbe"]["periodSeconds"], 10);
    assert_eq!(c["readinessProbe"]["successThreshold"], 1);
    assert_eq!(c["readinessProbe"]["failureThreshold"], 3);
    assert_eq!(c["readinessProbe"]["httpGet"]["scheme"], "HTTP");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(c["startupProbe"]["failureThreshold"], 3);
    assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
    assert_eq!(
        c["resources"]["requests"],
        json!({ "cpu": "500m", "memory": "1Gi" })
    );
    assert_eq!(spec["volumes"][0]["emptyDir"], json!({}));
    assert_eq!(spec["volumes"][1]["configMap"]["defaultMode"], 420);
    assert_eq!(spec["volumes"][2]["secret"]["defaultMode"], 420);
    assert_eq!(spec["enableServiceLinks"], true);
    assert_eq!(spec["preemptionPolicy"], "PreemptLowerPriority");
    assert_eq!(spec["priority"], 0);
    assert_eq!(spec["serviceAccountName"], "default");
    assert_eq!(spec["tolerations"].as_array().map(Vec::len), Some(2));
    assert_eq!(spec["tolerations"][0]["tolerationSeconds"], 300);
    assert_eq!(pod["status"]["phase"], "Pending");
    assert_eq!(pod["status"]["qosClass"], "Guaranteed");
}

#[test]
fn pod_qos_classes() {
    let qos = |containers: Value| {
        defaulted("v1", "Pod", json!({ "spec": { "containers": containers } }))["status"]["qosClass"].clone()
    };
    assert_eq!(qos(json!([{ "name": "a", "image": "i" }])), "BestEffort");
    assert_eq!(
        qos(json!([{ "name": "a", "image": "i", "resources": { "requests": { "cpu": "1" } } }])),
        "Burstable"
    );
    assert_eq!(
        qos(
            json!([{ "name": "a", "image": "i", "resources": { "limits": { "cpu": "1", "memory": "1Gi" }, "requests": { "cpu": "500m" } } }])
        ),
        "Burstable"
    );
}

#[test]
fn replica_set_stateful_set_daemon_set() {
    let template = json!({ "spec": { "containers": [{ "name": "c", "image": "i:1" }] } });
    let rs = defaulted(
        "apps/v1",
        "ReplicaSet",
        json!({ "spec": { "template": template } }),
    );
    assert_eq!(rs["spec"]["replicas"], 1);
    assert_eq!(rs["spec"]["template"]["spec"]["restartPolicy"], "Always");

    let sts = defaulted(
        "apps/v1",
        "StatefulSet",
        json!({ "spec": { "template": template, "volumeClaimTemplates": [{ "metadata": { "name": "data" }, "spec": {} }] } }),
    );
    let s = &sts["spec"];
    assert_eq!(s["podManagementPolicy"], "OrderedReady");
    assert_eq!(
        s["updateStrategy"],
        json!({ "type": "RollingUpdate", "rollingUpdate": { "partition": 0 } })
    );
    assert_eq!(
        s["persistentVolumeClaimRetentionPolicy"],
        json!({ "whenDeleted": "Retain", "whenScaled": "Retain" })
    );
    assert_eq!(s["replicas"], 1);
    assert_eq!(s["revisionHistoryLimit"], 10);
    assert_eq!(
        s["volumeClaimTemplates"][0]["kind"],
        "PersistentVolumeClaim"
    );
    assert_eq!(
        s["volumeClaimTemplates"][0]["spec"]["volumeMode"],
        "Filesystem"
    );

    let ds = defaulted(
        "apps/v1",
        "DaemonSet",
        json!({ "spec": { "template": template } }),
    );
    assert_eq!(
        ds["spec"]["updateStrategy"],
        json!({ "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": 1, "maxSurge": 0 } })
    );
    assert_eq!(ds["spec"]["revisionHistoryLimit"], 10);

    let recreate = defaulted(
        "apps/v1",
        "Deployment",
        json!({ "spec": { "strategy": { "type": "Recreate" }, "template": template } }),
    );
    assert_eq!(recreate["spec"]["strategy"], json!({ "type": "Recreate" }));
}

#[test]
fn job_generates_selector_and_defaults() {
    let job = defaulted(
        "batch/v1",
        "Job",
        json!({ "metadata": { "name": "pi", "uid": "abc-123" }, "spec": { "template": { "spec": {
            "restartPolicy": "Never", "containers": [{ "name": "pi", "image": "perl:5.34" }] } } } }),
    );
    let s = &job["spec"];
    assert_eq!(s["completions"], 1);
    assert_eq!(s["parallelism"], 1);
    assert_eq!(s["backoffLimit"], 6);
    assert_eq!(s["completionMode"], "NonIndexed");
    assert_eq!(s["suspend"], false);
    assert_eq!(s["podReplacementPolicy"], "TerminatingOrFailed");
    assert_eq!(s["manualSelector"], false);
    assert_eq!(
        s["selector"],
        json!({ "matchLabels": { "batch.kubernetes.io/controller-uid": "abc-123" } })
    );
    let labels = json!({
        "job-name": "pi", "batch.kubernetes.io/job-name": "pi",
        "controller-uid": "abc-123", "batch.kubernetes.io/controller-uid": "abc-123"
    });
    assert_eq!(s["template"]["metadata"]["labels"], labels);
    assert_eq!(job["metadata"]["labels"], labels);
    assert_eq!(s["template"]["spec"]["restartPolicy"], "Never");

    let parallel = defaulted(
        "batch/v1",
        "Job",
        json!({ "spec": { "parallelism": 3, "manualSelector": true } }),
    );
    assert!(parallel["spec"].get("completions").is_none());
    assert!(parallel["spec"].get("selector").is_none());
    let with_policy = defaulted(
        "batch/v1",
        "Job",
        json!({ "spec": { "podFailurePolicy": { "rules": [
        { "action": "Ignore", "onPodConditions": [{ "type": "DisruptionTarget" }] }] } } }),
    );
    assert_eq!(with_policy["spec"]["podReplacementPolicy"], "Failed");
    assert_eq!(
        with_policy["spec"]["podFailurePolicy"]["rules"][0]["onPodConditions"][0]["status"],
        "True"
    );
}

#[test]
fn cron_job_defaults() {
    let cj = defaulted(
        "batch/v1",
        "CronJob",
        json!({ "spec": { "schedule": "*/5 * * * *", "jobTemplate": { "spec": { "template": { "spec": {
            "containers": [{ "name": "c", "image": "busybox" }], "restartPolicy": "OnFailure" } } } } } }),
    );
    let s = &cj["spec"];
    assert_eq!(s["concurrencyPolicy"], "Allow");
    assert_eq!(s["suspend"], false);
    assert_eq!(s["successfulJobsHistoryLimit"], 3);
    assert_eq!(s["failedJobsHistoryLimit"], 1);
    assert_eq!(
        s["jobTemplate"]["spec"]["template"]["spec"]["dnsPolicy"],
        "ClusterFirst"
    );
    assert!(s["jobTemplate"]["spec"].get("backoffLimit").is_none());
}

#[test]
fn service_defaults() {
    let svc = defaulted(
        "v1",
        "Service",
        json!({ "spec": { "selector": { "app": "web" }, "ports": [{ "port": 80 }, { "port": 443, "targetPort": "https" }] } }),
    );
    let s = &svc["spec"];
    assert_eq!(s["type"], "ClusterIP");
    assert_eq!(s["sessionAffinity"], "None");
    assert_eq!(
        s["ports"][0],
        json!({ "port": 80, "protocol": "TCP", "targetPort": 80 })
    );
    assert_eq!(s["ports"][1]["targetPort"], "https");
    assert_eq!(s["ipFamilyPolicy"], "SingleStack");
    assert_eq!(s["ipFamilies"], json!(["IPv4"]));
    assert_eq!(s["internalTrafficPolicy"], "Cluster");
    assert!(s.get("externalTrafficPolicy").is_none());
    assert!(s.get("clusterIP").is_none(), "allocation is not defaulting");

    let np = defaulted(
        "v1",
        "Service",
        json!({ "spec": { "type": "NodePort", "clusterIP": "10.43.0.10", "ports": [{ "port": 80 }] } }),
    );
    assert_eq!(np["spec"]["externalTrafficPolicy"], "Cluster");
    assert_eq!(np["spec"]["clusterIPs"], json!(["10.43.0.10"]));
    let lb = defaulted(
        "v1",
        "Service",
        json!({ "spec": { "type": "LoadBalancer" } }),
    );
    assert_eq!(lb["spec"]["allocateLoadBalancerNodePorts"], true);
    let ext = defaulted(
        "v1",
        "Service",
        json!({ "spec": { "type": "ExternalName", "externalName": "db.example.com" } }),
    );
    assert!(ext["spec"].get("ipFamilies").is_none());
    assert!(ext["spec"].get("internalTrafficPolicy").is_none());
}

#[test]
fn storage_namespace_and_small_kinds() {
    let secret = defaulted("v1", "Secret", json!({ "metadata": { "name": "s" } }));
    assert_eq!(secret["type"], "Opaque");
    let pvc = defaulted(
        "v1",
        "PersistentVolumeClaim",
        json!({ "spec": { "accessModes": ["ReadWriteOnce"] } }),
    );
    assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
    assert_eq!(pvc["status"]["phase"], "Pending");
    let pv = defaulted(
        "v1",
        "PersistentVolume",
        json!({ "spec": { "hostPath": { "path": "/data" } } }),
    );
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(pv["spec"]["volumeMode"], "Filesystem");
    assert_eq!(pv["spec"]["hostPath"]["type"], "");
    assert_eq!(pv["status"]["phase"], "Pending");
    let ns = defaulted("v1", "Namespace", json!({ "metadata": { "name": "ml" } }));
    assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
    assert_eq!(ns["status"]["phase"], "Active");
    assert_eq!(
        ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
        "ml"
    );
    let node = defaulted(
        "v1",
        "Node",
        json!({ "status": { "capacity": { "cpu": "8" } } }),
    );
    assert_eq!(node["status"]["allocatable"], json!({ "cpu": "8" }));
    let slice = defaulted(
        "discovery.k8s.io/v1",
        "EndpointSlice",
        json!({ "ports": [{ "port": 80 }] }),
    );
    assert_eq!(
        slice["ports"][0],
        json!({ "port": 80, "name": "", "protocol": "TCP" })
    );
    let ep = defaulted(
        "v1",
        "Endpoints",
        json!({ "subsets": [{ "ports": [{ "port": 80 }] }] }),
    );
    assert_eq!(ep["subsets"][0]["ports"][0]["protocol"], "TCP");
    let lease = defaulted("coordination.k8s.io/v1", "Lease", json!({ "spec": {} }));
    assert_eq!(lease, json!({ "spec": {} }));
}

#[test]
fn hpa_defaults() {
    let hpa = defaulted(
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        json!({ "spec": { "maxReplicas": 5, "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "web" } } }),
    );
    assert_eq!(hpa["spec"]["minReplicas"], 1);
    assert_eq!(
        hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        80
    );
    assert!(hpa["spec"].get("behavior").is_none());
    let with_behavior = defaulted(
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        json!({ "spec": { "behavior": { "scaleDown": { "stabilizationWindowSeconds": 60 } } } }),
    );
    let b = &with_behavior["spec"]["behavior"];
    assert_eq!(b["scaleUp"]["stabilizationWindowSeconds"], 0);
    assert_eq!(b["scaleUp"]["policies"].as_array().map(Vec::len), Some(2));
    assert_eq!(b["scaleDown"]["stabilizationWindowSeconds"], 60);
    assert_eq!(b["scaleDown"]["selectPolicy"], "Max");
}

#[test]
fn quantities_are_stored_canonically() {
    let d = defaulted(
        "apps/v1",
        "Deployment",
        json!({ "spec": { "template": { "spec": {
            "containers": [{ "name": "model", "image": "server:1", "resources": {
                "limits": { "cpu": 0.5, "memory": "1024Mi", "nvidia.com/gpu": 1 },
                "requests": { "cpu": "0.1m", "memory": "bad" } } }],
            "volumes": [{ "name": "scratch", "emptyDir": { "sizeLimit": "2048Mi" } }]
        } } } }),
    );
    let c = &d["spec"]["template"]["spec"]["containers"][0]["resources"];
    assert_eq!(
        c["limits"],
        json!({ "cpu": "500m", "memory": "1Gi", "nvidia.com/gpu": "1" })
    );
    // Resource lists round up to milli units; what does not parse is left for validation.
    assert_eq!(c["requests"], json!({ "cpu": "1m", "memory": "bad" }));
    assert_eq!(
        d["spec"]["template"]["spec"]["volumes"][0]["emptyDir"]["sizeLimit"],
        "2Gi"
    );
    let pvc = defaulted(
        "v1",
        "PersistentVolumeClaim",
        json!({ "spec": { "resources": { "requests": { "storage": "5000Mi" } } } }),
    );
    assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], "5000Mi");
    let node = defaulted(
        "v1",
        "Node",
        json!({ "status": { "capacity": { "memory": "16777216Ki", "cpu": 8 } } }),
    );
    assert_eq!(
        node["status"]["capacity"],
        json!({ "memory": "16Gi", "cpu": "8" })
    );
    assert_eq!(
        node["status"]["allocatable"],
        json!({ "memory": "16Gi", "cpu": "8" })
    );
}
