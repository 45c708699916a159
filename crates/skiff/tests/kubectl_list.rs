//! End-to-end: listing with `--chunk-size` (limit/continue), label selectors and field
//! selectors.

use skiff_testkit::{TestCluster, stderr, stdout};

fn cluster() -> TestCluster {
    TestCluster::start(env!("CARGO_BIN_EXE_skiff"))
}

/// Seven ConfigMaps in namespace `lists`, labelled by tier.
fn seven_configmaps(c: &TestCluster) {
    c.kubectl_ok(&["create", "namespace", "lists"]);
    let docs: Vec<String> = (0..7)
        .map(|i| {
            let tier = if i % 2 == 0 { "gpu" } else { "cpu" };
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i}\n  namespace: lists\n  labels: {{tier: {tier}, idx: \"{i}\"}}\ndata: {{i: \"{i}\"}}\n")
        })
        .collect();
    c.apply(&docs.join("---\n"));
}

fn names(out: &str) -> Vec<String> {
    let mut v: Vec<String> = out
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    v.sort();
    v
}

#[test]
fn chunked_list_returns_every_object() {
    let c = cluster();
    seven_configmaps(&c);
    let out = c.kubectl(&[
        "get",
        "cm",
        "-n",
        "lists",
        "--chunk-size=2",
        "-o",
        "name",
        "-v=6",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let want: Vec<String> = (0..7).map(|i| format!("configmap/cm-{i}")).collect();
    assert_eq!(names(&stdout(&out)), want);
    // It really took four pages: one first request and three with a continue token.
    let log = stderr(&out);
    let pages = log
        .lines()
        .filter(|l| l.contains("/namespaces/lists/configmaps?") && l.contains("limit=2"))
        .count();
    let continued = log.lines().filter(|l| l.contains("continue=")).count();
    assert_eq!((pages, continued), (4, 3), "{log}");

    // The table output across chunks has one header and seven rows.
    let table = c.kubectl_ok(&["get", "cm", "-n", "lists", "--chunk-size=3"]);
    assert_eq!(
        table.lines().filter(|l| l.starts_with("NAME")).count(),
        1,
        "{table}"
    );
    assert_eq!(
        table.lines().filter(|l| l.starts_with("cm-")).count(),
        7,
        "{table}"
    );
    // Chunking and a selector together.
    let out = c.kubectl_ok(&[
        "get",
        "cm",
        "-n",
        "lists",
        "--chunk-size=1",
        "-l",
        "tier=gpu",
        "-o",
        "name",
    ]);
    assert_eq!(
        names(&out),
        [
            "configmap/cm-0",
            "configmap/cm-2",
            "configmap/cm-4",
            "configmap/cm-6"
        ]
    );
}

#[test]
fn label_and_field_selectors() {
    let c = cluster();
    seven_configmaps(&c);
    let get = |sel: &[&str]| {
        let mut args = vec!["get", "cm", "-n", "lists", "-o", "name"];
        args.extend_from_slice(sel);
        names(&c.kubectl_ok(&args))
    };
    assert_eq!(
        get(&["-l", "tier=cpu"]),
        ["configmap/cm-1", "configmap/cm-3", "configmap/cm-5"]
    );
    assert_eq!(
        get(&["-l", "tier!=cpu,idx!=0"]),
        ["configmap/cm-2", "configmap/cm-4", "configmap/cm-6"]
    );
    assert_eq!(
        get(&["-l", "idx in (1,2,9)"]),
        ["configmap/cm-1", "configmap/cm-2"]
    );
    assert_eq!(
        get(&["-l", "idx notin (0,1,2,3,4),tier"]),
        ["configmap/cm-5", "configmap/cm-6"]
    );
    assert_eq!(get(&["-l", "!tier"]), Vec::<String>::new());
    assert_eq!(get(&["-l", "missing"]), Vec::<String>::new());

    assert_eq!(
        get(&["--field-selector", "metadata.name=cm-3"]),
        ["configmap/cm-3"]
    );
    assert_eq!(
        get(&["--field-selector", "metadata.name!=cm-3", "-l", "tier=cpu"]),
        ["configmap/cm-1", "configmap/cm-5"]
    );
    assert_eq!(
        get(&[
            "--field-selector",
            "metadata.namespace=lists,metadata.name=cm-0"
        ]),
        ["configmap/cm-0"]
    );
    // Across namespaces.
    let out = c.kubectl_ok(&[
        "get",
        "cm",
        "-A",
        "--field-selector",
        "metadata.name=cm-4",
        "-o",
        "name",
    ]);
    assert_eq!(names(&out), ["configmap/cm-4"]);
    let all = c.kubectl_ok(&["get", "cm", "-A", "-l", "tier=gpu"]);
    assert!(
        all.lines()
            .next()
            .is_some_and(|h| h.starts_with("NAMESPACE")),
        "{all}"
    );
    assert_eq!(
        all.lines().filter(|l| l.starts_with("lists")).count(),
        4,
        "{all}"
    );

    // A field the server cannot select on is a BadRequest.
    let out = c.kubectl(&["get", "cm", "-n", "lists", "--field-selector", "data.i=3"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("BadRequest") || stderr(&out).contains("field label not supported"),
        "{}",
        stderr(&out)
    );
    // A malformed label selector is refused too.
    let out = c.kubectl(&["get", "cm", "-n", "lists", "-l", "a in (b"]);
    assert!(!out.status.success());
}
