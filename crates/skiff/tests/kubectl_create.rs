//! End-to-end: the imperative `kubectl create` commands (which send protobuf bodies),
//! `create -f` of an existing object, and the NotFound message of `kubectl get`.

use skiff_testkit::{TestCluster, stderr, stdout};

fn cluster() -> TestCluster {
    TestCluster::start(env!("CARGO_BIN_EXE_skiff"))
}

fn ipv4_in_10_43(ip: &str) -> bool {
    let parts: Vec<u8> = ip.split('.').filter_map(|p| p.parse().ok()).collect();
    parts.len() == 4 && parts[0] == 10 && parts[1] == 43
}

#[test]
fn create_namespace_deployment_configmap_secret() {
    let c = cluster();
    let out = c.kubectl_ok(&["create", "namespace", "ml"]);
    assert_eq!(out.trim(), "namespace/ml created");
    let ns = c.get_json(&["namespace", "ml"]);
    assert_eq!(ns["status"]["phase"], "Active");

    let out = c.kubectl_ok(&[
        "create",
        "deployment",
        "web",
        "-n",
        "ml",
        "--image=nginx:1.27",
        "--replicas=2",
        "--port=80",
    ]);
    assert_eq!(out.trim(), "deployment.apps/web created");
    let d = c.get_json(&["deploy", "web", "-n", "ml"]);
    assert_eq!(d["metadata"]["namespace"], "ml");
    assert_eq!(d["metadata"]["labels"]["app"], "web");
    assert_eq!(d["metadata"]["generation"], 1);
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "web");
    let ctr = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(ctr["name"], "nginx");
    assert_eq!(ctr["image"], "nginx:1.27");
    assert_eq!(ctr["imagePullPolicy"], "IfNotPresent");
    assert_eq!(ctr["ports"][0]["containerPort"], 80);
    assert_eq!(ctr["ports"][0]["protocol"], "TCP");
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
    let managers: Vec<String> = c.get_json(&["deploy", "web", "-n", "ml", "--show-managed-fields"])
        ["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["manager"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        managers.iter().any(|m| m == "kubectl-create"),
        "{managers:?}"
    );

    let out = c.kubectl_ok(&[
        "create",
        "configmap",
        "cfg",
        "--from-literal=MODEL=resnet",
        "--from-literal=BATCH=8",
    ]);
    assert_eq!(out.trim(), "configmap/cfg created");
    let cm = c.get_json(&["cm", "cfg"]);
    assert_eq!(
        cm["data"],
        serde_json::json!({"MODEL": "resnet", "BATCH": "8"})
    );

    let out = c.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=user=admin",
        "--from-literal=pass=hunter2",
    ]);
    assert_eq!(out.trim(), "secret/creds created");
    let s = c.get_json(&["secret", "creds"]);
    assert_eq!(s["type"], "Opaque");
    assert_eq!(s["data"]["user"], "YWRtaW4=");
    assert_eq!(s["data"]["pass"], "aHVudGVyMg==");
    let table = c.kubectl_ok(&["get", "secret", "creds"]);
    assert!(
        table.lines().nth(1).is_some_and(
            |l| l.split_whitespace().collect::<Vec<_>>()[..3] == ["creds", "Opaque", "2"]
        ),
        "{table}"
    );
}

#[test]
fn create_services_clusterip_and_nodeport() {
    let c = cluster();
    let out = c.kubectl_ok(&["create", "service", "clusterip", "api", "--tcp=80:8080"]);
    assert_eq!(out.trim(), "service/api created");
    let s = c.get_json(&["svc", "api"]);
    assert_eq!(s["spec"]["type"], "ClusterIP");
    assert_eq!(s["spec"]["selector"]["app"], "api");
    assert_eq!(s["spec"]["ports"][0]["port"], 80);
    assert_eq!(s["spec"]["ports"][0]["targetPort"], 8080);
    assert_eq!(s["spec"]["ports"][0]["protocol"], "TCP");
    assert!(s["spec"]["ports"][0].get("nodePort").is_none(), "{s}");
    let ip = s["spec"]["clusterIP"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(ipv4_in_10_43(&ip), "{s}");

    let out = c.kubectl_ok(&["create", "service", "nodeport", "np", "--tcp=8443:443"]);
    assert_eq!(out.trim(), "service/np created");
    let s = c.get_json(&["svc", "np"]);
    assert_eq!(s["spec"]["type"], "NodePort");
    let np = s["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .unwrap_or_default();
    assert!((30000..=32767).contains(&np), "{s}");
    let ip2 = s["spec"]["clusterIP"].as_str().unwrap_or_default();
    assert!(ipv4_in_10_43(ip2) && ip2 != ip, "{ip} {ip2}");

    let table = c.kubectl_ok(&["get", "svc", "np"]);
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(row[1], "NodePort", "{table}");
    assert_eq!(row[3], "<none>", "{table}");
    assert_eq!(row[4], format!("8443:{np}/TCP"), "{table}");

    // A nodePort that is taken is refused.
    let out = c.kubectl(&[
        "create",
        "service",
        "nodeport",
        "np2",
        "--tcp=80:80",
        &format!("--node-port={np}"),
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("provided port is already allocated"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn create_existing_is_already_exists_and_get_missing_is_not_found() {
    let c = cluster();
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: dup}\ndata: {a: b}\n";
    let out = c.kubectl_stdin(&["create", "-f", "-"], cm);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "configmap/dup created");
    let out = c.kubectl_stdin(&["create", "-f", "-"], cm);
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out).trim(),
        "Error from server (AlreadyExists): error when creating \"STDIN\": configmaps \"dup\" already exists"
    );
    let out = c.kubectl(&["create", "configmap", "dup"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("configmaps \"dup\" already exists"),
        "{}",
        stderr(&out)
    );

    let out = c.kubectl(&["get", "deployment", "nope"]);
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out).trim(),
        "Error from server (NotFound): deployments.apps \"nope\" not found"
    );
    let out = c.kubectl(&["get", "cm", "nope", "-n", "missing-ns"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("(NotFound)"), "{}", stderr(&out));
    // Creating into a namespace that does not exist fails.
    let out = c.kubectl(&["create", "configmap", "x", "-n", "missing-ns"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("namespaces \"missing-ns\" not found"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn create_other_kinds_and_server_dry_run() {
    let c = cluster();
    assert_eq!(
        c.kubectl_ok(&["create", "serviceaccount", "bot"]).trim(),
        "serviceaccount/bot created"
    );
    c.kubectl_ok(&[
        "create",
        "secret",
        "docker-registry",
        "reg",
        "--docker-server=r.example",
        "--docker-username=u",
        "--docker-password=p",
    ]);
    let reg = c.get_json(&["secret", "reg"]);
    assert_eq!(reg["type"], "kubernetes.io/dockerconfigjson");
    assert!(reg["data"][".dockerconfigjson"].is_string(), "{reg}");
    c.kubectl_ok(&[
        "create",
        "service",
        "externalname",
        "db",
        "--external-name=db.example.com",
    ]);
    let table = c.kubectl_ok(&["get", "svc", "db"]);
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        row[1..5],
        ["ExternalName", "<none>", "db.example.com", "<none>"],
        "{table}"
    );
    let file = c.data_dir().join("model.txt");
    std::fs::write(&file, "weights\n").unwrap();
    c.kubectl_ok(&[
        "create",
        "configmap",
        "files",
        &format!("--from-file={}", file.display()),
    ]);
    assert_eq!(
        c.get_json(&["cm", "files"])["data"]["model.txt"],
        "weights\n"
    );
    assert_eq!(
        c.kubectl_ok(&["run", "p", "--image=nginx", "--env=A=1", "--port=80"])
            .trim(),
        "pod/p created"
    );
    let pod = c.get_json(&["pod", "p"]);
    assert_eq!(pod["status"]["phase"], "Pending");
    assert_eq!(pod["spec"]["restartPolicy"], "Always");
    assert_eq!(pod["spec"]["containers"][0]["env"][0]["name"], "A");

    // Names are validated like Kubernetes does.
    let out = c.kubectl(&["create", "namespace", "bad_name"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("metadata.name: Invalid value: \"bad_name\""),
        "{}",
        stderr(&out)
    );

    // A server-side dry run goes through admission but stores nothing.
    let out = c.kubectl_ok(&[
        "create",
        "configmap",
        "dry",
        "--from-literal=a=b",
        "--dry-run=server",
        "-o",
        "json",
    ]);
    let dry: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(dry["metadata"]["uid"].is_string(), "{dry}");
    let out = c.kubectl(&["get", "cm", "dry"]);
    assert!(stderr(&out).contains("NotFound"), "{}", stderr(&out));
    let out = c.kubectl_ok(&["delete", "cm", "files", "--dry-run=server"]);
    assert_eq!(out.trim(), "configmap \"files\" deleted (server dry run)");
    assert_eq!(c.get_json(&["cm", "files"])["metadata"]["name"], "files");
}
