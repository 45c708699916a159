//! End-to-end: client-side and server-side `kubectl apply` of a tutorial-style ML API
//! (Deployment, Service, ConfigMap, Secret, PVC), the output formats of `kubectl get`, the
//! server's defaulting, re-apply with a strategic merge patch, `kubectl diff`.

use serde_json::Value;
use skiff_testkit::{TestCluster, stderr, stdout};

fn cluster() -> TestCluster {
    TestCluster::start(env!("CARGO_BIN_EXE_skiff"))
}

/// The Deployment of an "deploy your model" tutorial; `{replicas}` and `{level}` vary.
fn deployment(replicas: u32, level: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: ml-api
  labels: {{app: ml-api}}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: ml-api}}
  template:
    metadata:
      labels: {{app: ml-api}}
    spec:
      containers:
      - name: ml-api
        image: ml-api:v1
        imagePullPolicy: Never
        ports:
        - containerPort: 8080
        env:
        - name: MODEL_PATH
          value: /models/model.onnx
        - name: LOG_LEVEL
          value: {level}
        resources:
          requests: {{memory: 128Mi, cpu: 100m}}
          limits: {{memory: 256Mi, cpu: 200m}}
        readinessProbe:
          httpGet: {{path: /ready, port: 8080}}
          initialDelaySeconds: 5
          periodSeconds: 5
        livenessProbe:
          httpGet: {{path: /health, port: 8080}}
          initialDelaySeconds: 10
          periodSeconds: 10
"#
    )
}

const SERVICE: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: ml-api
spec:
  type: LoadBalancer
  selector: {app: ml-api}
  ports:
  - port: 80
    targetPort: 8080
"#;

const CONFIGMAP: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: ml-api-config
data:
  MODEL_NAME: resnet
  BATCH_SIZE: "8"
"#;

const SECRET: &str = r#"apiVersion: v1
kind: Secret
metadata:
  name: ml-api-secret
type: Opaque
stringData:
  API_KEY: s3cr3t
data:
  DB_PASSWORD: cGFzc3dvcmQ=
"#;

const PVC: &str = r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: model-store
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests: {storage: 1Gi}
"#;

fn all_manifests() -> String {
    [
        deployment(3, "info").as_str(),
        SERVICE,
        CONFIGMAP,
        SECRET,
        PVC,
    ]
    .join("---\n")
}

/// The whitespace-separated header words of a `kubectl get` table.
fn header(table: &str) -> Vec<String> {
    table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// The row of `name` in a table, split on whitespace.
fn row(table: &str, name: &str) -> Vec<String> {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row {name} in:\n{table}"))
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// The table of one resource kind out of a multi-kind `kubectl get a,b,c` (blocks separated by
/// blank lines, each with its own header), found by a name prefix like `deployment.apps/`.
fn block<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.split("\n\n")
        .find(|b| b.lines().nth(1).is_some_and(|l| l.starts_with(prefix)))
        .unwrap_or_else(|| panic!("no {prefix} block in:\n{out}"))
}

fn ipv4_in_10_43(ip: &str) -> bool {
    let parts: Vec<u8> = ip.split('.').filter_map(|p| p.parse().ok()).collect();
    parts.len() == 4 && parts[0] == 10 && parts[1] == 43
}

#[test]
fn tutorial_manifests_apply_and_get_in_every_format() {
    let c = cluster();
    let out = c.apply(&all_manifests());
    for created in [
        "deployment.apps/ml-api created",
        "service/ml-api created",
        "configmap/ml-api-config created",
        "secret/ml-api-secret created",
        "persistentvolumeclaim/model-store created",
    ] {
        assert!(out.contains(created), "{created} missing from:\n{out}");
    }

    let all = c.kubectl_ok(&["get", "deploy,svc,cm,secret,pvc"]);
    let deploy = block(&all, "deployment.apps/");
    assert_eq!(
        header(deploy),
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "{all}"
    );
    let r = row(deploy, "deployment.apps/ml-api");
    assert_eq!(r[1], "0/3", "{all}");
    let svc = block(&all, "service/");
    assert_eq!(
        header(svc),
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ]
    );
    let r = row(svc, "service/ml-api");
    assert_eq!(r[1], "LoadBalancer", "{all}");
    assert!(
        ipv4_in_10_43(&r[2]),
        "cluster IP {} not in 10.43.0.0/16",
        r[2]
    );
    assert_eq!(r[3], "<pending>", "{all}");
    let port = r[4]
        .strip_prefix("80:")
        .and_then(|p| p.strip_suffix("/TCP"))
        .unwrap_or_else(|| panic!("{all}"));
    let port: u16 = port.parse().expect("node port");
    assert!((30000..=32767).contains(&port), "{port}");
    let cm = block(&all, "configmap/");
    assert_eq!(header(cm), ["NAME", "DATA", "AGE"]);
    assert_eq!(row(cm, "configmap/ml-api-config")[1], "2");
    let secret = block(&all, "secret/");
    assert_eq!(header(secret), ["NAME", "TYPE", "DATA", "AGE"]);
    // stringData keys are folded into data: API_KEY + DB_PASSWORD.
    assert_eq!(
        row(secret, "secret/ml-api-secret")[1..3],
        ["Opaque", "2"],
        "{all}"
    );
    let pvc = block(&all, "persistentvolumeclaim/");
    assert_eq!(
        header(pvc),
        [
            "NAME",
            "STATUS",
            "VOLUME",
            "CAPACITY",
            "ACCESS",
            "MODES",
            "STORAGECLASS",
            "VOLUMEATTRIBUTESCLASS",
            "AGE"
        ],
        "{all}"
    );
    assert_eq!(row(pvc, "persistentvolumeclaim/model-store")[1], "Pending");

    let wide = c.kubectl_ok(&["get", "deploy", "ml-api", "-o", "wide"]);
    assert_eq!(
        header(&wide),
        [
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ]
    );
    assert_eq!(
        row(&wide, "ml-api")[5..],
        ["ml-api", "ml-api:v1", "app=ml-api"],
        "{wide}"
    );
    let wide = c.kubectl_ok(&["get", "svc", "ml-api", "-o", "wide"]);
    assert_eq!(
        header(&wide).last().map(String::as_str),
        Some("SELECTOR"),
        "{wide}"
    );
    assert_eq!(
        row(&wide, "ml-api").last().map(String::as_str),
        Some("app=ml-api"),
        "{wide}"
    );

    // Server-side defaults, as Kubernetes fills them.
    let d = c.get_json(&["deploy", "ml-api"]);
    assert_eq!(d["metadata"]["generation"], 1);
    let spec = &d["spec"];
    assert_eq!(spec["replicas"], 3);
    assert_eq!(spec["strategy"]["type"], "RollingUpdate");
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxUnavailable"], "25%");
    assert_eq!(spec["revisionHistoryLimit"], 10);
    assert_eq!(spec["progressDeadlineSeconds"], 600);
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["terminationGracePeriodSeconds"], 30);
    assert_eq!(pod["dnsPolicy"], "ClusterFirst");
    assert_eq!(pod["restartPolicy"], "Always");
    assert_eq!(pod["schedulerName"], "default-scheduler");
    let ctr = &pod["containers"][0];
    assert_eq!(ctr["imagePullPolicy"], "Never");
    assert_eq!(ctr["ports"][0]["protocol"], "TCP");
    assert_eq!(ctr["terminationMessagePath"], "/dev/termination-log");
    assert_eq!(ctr["resources"]["limits"]["memory"], "256Mi");
    assert_eq!(ctr["resources"]["requests"]["cpu"], "100m");
    assert_eq!(ctr["readinessProbe"]["httpGet"]["scheme"], "HTTP");
    assert_eq!(ctr["readinessProbe"]["timeoutSeconds"], 1);
    assert_eq!(ctr["livenessProbe"]["failureThreshold"], 3);
    assert!(d["metadata"]["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(
        d["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );

    let s = c.get_json(&["svc", "ml-api"]);
    assert_eq!(s["spec"]["ports"][0]["protocol"], "TCP");
    assert_eq!(s["spec"]["ports"][0]["targetPort"], 8080);
    assert_eq!(s["spec"]["sessionAffinity"], "None");
    assert_eq!(s["spec"]["externalTrafficPolicy"], "Cluster");
    assert!(
        ipv4_in_10_43(s["spec"]["clusterIP"].as_str().unwrap_or_default()),
        "{s}"
    );
    assert_eq!(s["spec"]["clusterIPs"][0], s["spec"]["clusterIP"]);
    let np = s["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .unwrap_or_default();
    assert!((30000..=32767).contains(&np), "{s}");

    let sec = c.get_json(&["secret", "ml-api-secret"]);
    assert_eq!(sec["data"]["API_KEY"], "czNjcjN0", "{sec}");
    assert_eq!(sec["data"]["DB_PASSWORD"], "cGFzc3dvcmQ=");
    assert!(
        sec.get("stringData").is_none(),
        "stringData must not be stored: {sec}"
    );

    let pvc = c.get_json(&["pvc", "model-store"]);
    assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
    assert_eq!(pvc["status"]["phase"], "Pending");

    let jp = c.kubectl_ok(&[
        "get",
        "deploy",
        "ml-api",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].env[1].value}",
    ]);
    assert_eq!(jp, "info");
    let jp = c.kubectl_ok(&[
        "get",
        "svc",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}:{.spec.type}{\"\\n\"}{end}",
    ]);
    assert!(jp.lines().any(|l| l == "ml-api:LoadBalancer"), "{jp}");
    let yaml = c.kubectl_ok(&["get", "cm", "ml-api-config", "-o", "yaml"]);
    assert!(
        yaml.contains("kind: ConfigMap") && yaml.contains("BATCH_SIZE: \"8\""),
        "{yaml}"
    );
    assert!(
        yaml.contains("resourceVersion:") && yaml.contains("creationTimestamp:"),
        "{yaml}"
    );
}

#[test]
fn reapply_with_edits_is_a_strategic_merge_that_keeps_server_fields() {
    let c = cluster();
    c.apply(&deployment(3, "info"));
    let first = c.get_json(&["deploy", "ml-api"]);

    // The same manifest again changes nothing, not even the generation.
    let out = c.apply(&deployment(3, "info"));
    assert!(out.contains("deployment.apps/ml-api unchanged"), "{out}");
    let same = c.get_json(&["deploy", "ml-api"]);
    assert_eq!(same["metadata"]["generation"], 1);
    // The deployment controller writes status and the revision annotation meanwhile, so the
    // resourceVersion may move; the spec must not.
    assert_eq!(same["spec"], first["spec"]);

    // A metadata-only change does not bump the generation either.
    c.kubectl_ok(&["annotate", "deploy", "ml-api", "team=vision"]);
    assert_eq!(
        c.get_json(&["deploy", "ml-api"])["metadata"]["generation"],
        1
    );

    let out = c.apply(&deployment(5, "debug"));
    assert!(out.contains("deployment.apps/ml-api configured"), "{out}");
    let d = c.get_json(&["deploy", "ml-api"]);
    assert_eq!(d["metadata"]["generation"], 2);
    assert_eq!(d["metadata"]["uid"], first["metadata"]["uid"]);
    assert_eq!(
        d["metadata"]["creationTimestamp"],
        first["metadata"]["creationTimestamp"]
    );
    assert_eq!(
        d["metadata"]["annotations"]["team"], "vision",
        "a field apply does not own must stay"
    );
    assert_eq!(d["spec"]["replicas"], 5);
    let env = d["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(env.len(), 2, "{env:?}");
    assert_eq!(
        env[0],
        serde_json::json!({"name": "MODEL_PATH", "value": "/models/model.onnx"})
    );
    assert_eq!(
        env[1],
        serde_json::json!({"name": "LOG_LEVEL", "value": "debug"})
    );
    // Server-defaulted fields survive the patch.
    assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    assert_eq!(
        d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
        30
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["protocol"],
        "TCP"
    );

    // An env var dropped from the manifest is deleted (kubectl computes that from the
    // last-applied annotation); the annotation kubectl does not own stays.
    let without = deployment(5, "debug").replace(
        "        - name: MODEL_PATH\n          value: /models/model.onnx\n",
        "",
    );
    assert!(!without.contains("MODEL_PATH"));
    c.apply(&without);
    let d = c.get_json(&["deploy", "ml-api"]);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["env"],
        serde_json::json!([{"name": "LOG_LEVEL", "value": "debug"}])
    );
    assert_eq!(d["metadata"]["annotations"]["team"], "vision");
    assert_eq!(d["metadata"]["generation"], 3);
}

#[test]
fn diff_shows_the_change_and_exits_1_then_0() {
    let c = cluster();
    c.apply(&deployment(3, "info"));
    let same = c.kubectl_stdin(&["diff", "-f", "-"], &deployment(3, "info"));
    assert_eq!(
        same.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        stdout(&same),
        stderr(&same)
    );
    assert_eq!(stdout(&same).trim(), "");

    let changed = c.kubectl_stdin(&["diff", "-f", "-"], &deployment(4, "warn"));
    assert_eq!(
        changed.status.code(),
        Some(1),
        "stdout: {}\nstderr: {}",
        stdout(&changed),
        stderr(&changed)
    );
    let diff = stdout(&changed);
    assert!(
        diff.lines()
            .any(|l| l.trim_start_matches('-').trim() == "replicas: 3" && l.starts_with('-')),
        "{diff}"
    );
    assert!(
        diff.lines()
            .any(|l| l.starts_with('+') && l.contains("replicas: 4")),
        "{diff}"
    );
    assert!(
        diff.lines()
            .any(|l| l.starts_with('+') && l.contains("value: warn")),
        "{diff}"
    );
    // The generation line changes too: the dry-run went through the server's admission.
    assert!(
        diff.lines()
            .any(|l| l.starts_with('+') && l.contains("generation: 2")),
        "{diff}"
    );
    // diff is a dry run: nothing changed.
    assert_eq!(c.get_json(&["deploy", "ml-api"])["spec"]["replicas"], 3);
}

#[test]
fn server_side_apply_with_conflicts_and_force() {
    let c = cluster();
    let out = c.kubectl_stdin(
        &["apply", "--server-side", "-f", "-"],
        &deployment(3, "info"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("deployment.apps/ml-api serverside-applied"),
        "{}",
        stdout(&out)
    );
    let d = c.get_json(&["deploy", "ml-api", "--show-managed-fields"]);
    let managers: Vec<&str> = d["metadata"]["managedFields"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["manager"].as_str()).collect())
        .unwrap_or_default();
    assert!(managers.contains(&"kubectl"), "{managers:?}");
    assert_eq!(d["spec"]["revisionHistoryLimit"], 10);

    // Another manager takes over replicas...
    let out = c.kubectl_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager=autoscaler",
            "-f",
            "-",
        ],
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: ml-api}\nspec: {replicas: 7}\n",
    );
    assert!(!out.status.success(), "conflict expected: {}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("conflict") && err.contains(".spec.replicas") && err.contains("kubectl"),
        "{err}"
    );
    assert_eq!(c.get_json(&["deploy", "ml-api"])["spec"]["replicas"], 3);

    let out = c.kubectl_stdin(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=autoscaler",
            "-f",
            "-",
        ],
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: ml-api}\nspec: {replicas: 7}\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let d = c.get_json(&["deploy", "ml-api"]);
    assert_eq!(d["spec"]["replicas"], 7);
    assert_eq!(d["metadata"]["generation"], 2);
    // The rest of kubectl's fields are untouched by the forced apply.
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "ml-api:v1"
    );

    // Re-applying kubectl's manifest without replicas-owning conflicts now conflicts back.
    let out = c.kubectl_stdin(
        &["apply", "--server-side", "-f", "-"],
        &deployment(3, "info"),
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("autoscaler"), "{}", stderr(&out));
}

/// `kubectl get a,b,c -o json` is one List holding every kind.
#[test]
fn get_json_list_of_several_kinds() {
    let c = cluster();
    c.apply(&[CONFIGMAP, SECRET, PVC].join("---\n"));
    let v: Value =
        serde_json::from_str(&c.kubectl_ok(&["get", "cm,secret,pvc", "-o", "json"])).unwrap();
    assert_eq!(v["kind"], "List");
    let kinds: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"ConfigMap")
            && kinds.contains(&"Secret")
            && kinds.contains(&"PersistentVolumeClaim"),
        "{kinds:?}"
    );
}

#[test]
fn reapply_of_a_secret_updates_data_from_string_data() {
    let c = cluster();
    c.apply(SECRET);
    let out = c.apply(&SECRET.replace("API_KEY: s3cr3t", "API_KEY: rotated"));
    assert!(out.contains("secret/ml-api-secret configured"), "{out}");
    let s = c.get_json(&["secret", "ml-api-secret"]);
    assert_eq!(s["data"]["API_KEY"], "cm90YXRlZA==", "{s}");
    assert_eq!(s["data"]["DB_PASSWORD"], "cGFzc3dvcmQ=");
    assert!(s.get("stringData").is_none(), "{s}");
    let decoded = c.kubectl_ok(&[
        "get",
        "secret",
        "ml-api-secret",
        "-o",
        "jsonpath={.data.API_KEY}",
    ]);
    assert_eq!(decoded, "cm90YXRlZA==");
    // Applying the same manifest again writes nothing. kubectl still says "configured", as
    // against Kubernetes: its patch always carries the write-only stringData.
    c.apply(&SECRET.replace("API_KEY: s3cr3t", "API_KEY: rotated"));
    let again = c.get_json(&["secret", "ml-api-secret"]);
    assert_eq!(
        again["metadata"]["resourceVersion"],
        s["metadata"]["resourceVersion"]
    );
}

#[test]
fn reapply_of_a_service_with_another_type() {
    let c = cluster();
    c.apply(SERVICE);
    let lb = c.get_json(&["svc", "ml-api"]);
    let ip = lb["spec"]["clusterIP"].clone();
    let np = lb["spec"]["ports"][0]["nodePort"].clone();
    assert_eq!(lb["spec"]["allocateLoadBalancerNodePorts"], true, "{lb}");

    c.apply(&SERVICE.replace("LoadBalancer", "NodePort"));
    let s = c.get_json(&["svc", "ml-api"]);
    assert_eq!(s["spec"]["type"], "NodePort");
    assert_eq!(
        s["spec"]["ports"][0]["nodePort"], np,
        "the node port is kept"
    );
    assert_eq!(s["spec"]["externalTrafficPolicy"], "Cluster");
    assert!(
        s["spec"].get("allocateLoadBalancerNodePorts").is_none(),
        "{s}"
    );

    let out = c.apply(&SERVICE.replace("LoadBalancer", "ClusterIP"));
    assert!(out.contains("service/ml-api configured"), "{out}");
    let s = c.get_json(&["svc", "ml-api"]);
    assert_eq!(s["spec"]["type"], "ClusterIP");
    assert_eq!(s["spec"]["clusterIP"], ip, "the cluster IP is kept");
    assert!(s["spec"]["ports"][0].get("nodePort").is_none(), "{s}");
    assert!(s["spec"].get("externalTrafficPolicy").is_none(), "{s}");
    let table = c.kubectl_ok(&["get", "svc", "ml-api"]);
    assert!(
        table.contains("80/TCP") && table.contains("<none>"),
        "{table}"
    );

    c.apply(SERVICE);
    let s = c.get_json(&["svc", "ml-api"]);
    assert_eq!(s["spec"]["type"], "LoadBalancer");
    let np = s["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .unwrap_or_default();
    assert!((30000..=32767).contains(&np), "{s}");
    assert_eq!(s["spec"]["externalTrafficPolicy"], "Cluster");
}
