//! End-to-end: `kubectl get -w` streams changes as they happen.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use skiff_testkit::TestCluster;

fn cluster() -> TestCluster {
    TestCluster::start(env!("CARGO_BIN_EXE_skiff"))
}

/// A running `kubectl get -w` whose stdout lines arrive on a channel; killed on drop.
struct Watch {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Watch {
    fn start(c: &TestCluster, args: &[&str]) -> Watch {
        let mut child = c
            .kubectl_cmd()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning kubectl get -w");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Watch {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads lines until one whose first words are `words` arrives; returns it.
    fn expect(&mut self, words: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    let got: Vec<&str> = line.split_whitespace().collect();
                    if got.len() >= words.len() && got[..words.len()] == *words {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line starting with {words:?}; saw:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn get_watch_streams_added_modified_deleted() {
    let c = cluster();
    c.kubectl_ok(&["create", "configmap", "w0", "--from-literal=a=1"]);
    let mut w = Watch::start(&c, &["get", "cm", "-w", "--output-watch-events"]);
    // The initial list is shown as ADDED events; after it the watch is under way.
    w.expect(&["ADDED", "w0", "1"]);
    assert!(
        w.seen[0].split_whitespace().collect::<Vec<_>>() == ["EVENT", "NAME", "DATA", "AGE"],
        "{:?}",
        w.seen
    );

    c.kubectl_ok(&["create", "configmap", "w1", "--from-literal=a=1"]);
    w.expect(&["ADDED", "w1", "1"]);
    c.kubectl_ok(&[
        "patch",
        "cm",
        "w1",
        "--type=merge",
        "-p",
        r#"{"data":{"b":"2"}}"#,
    ]);
    w.expect(&["MODIFIED", "w1", "2"]);
    c.kubectl_ok(&["delete", "cm", "w0"]);
    w.expect(&["DELETED", "w0"]);
    // Changes elsewhere are not shown: a ConfigMap in another namespace.
    c.kubectl_ok(&["create", "configmap", "other", "-n", "kube-public"]);
    c.kubectl_ok(&["label", "cm", "w1", "x=y"]);
    w.expect(&["MODIFIED", "w1"]);
    assert!(!w.seen.iter().any(|l| l.contains("other")), "{:?}", w.seen);
}

#[test]
fn get_watch_of_one_object_with_a_label_selector() {
    let c = cluster();
    c.kubectl_ok(&["create", "deployment", "web", "--image=nginx"]);
    let mut w = Watch::start(&c, &["get", "deploy", "-l", "app=web", "-w"]);
    let first = w.expect(&["web"]);
    assert!(
        first
            .split_whitespace()
            .nth(1)
            .is_some_and(|r| r.ends_with("/1")),
        "{first}"
    );
    c.kubectl_ok(&["scale", "deploy", "web", "--replicas=3"]);
    w.expect(&["web", "0/3"]);
    // A deployment the selector does not match never shows up.
    c.kubectl_ok(&["create", "deployment", "api", "--image=nginx"]);
    c.kubectl_ok(&["scale", "deploy", "web", "--replicas=4"]);
    w.expect(&["web", "0/4"]);
    assert!(!w.seen.iter().any(|l| l.starts_with("api")), "{:?}", w.seen);
}

#[test]
fn get_watch_of_a_named_object_as_json_events() {
    let c = cluster();
    c.kubectl_ok(&["create", "configmap", "one", "--from-literal=a=1"]);
    c.kubectl_ok(&["create", "configmap", "two", "--from-literal=a=1"]);
    // `-o json` events are pretty-printed; `-o jsonpath` gives one line per event.
    let mut w = Watch::start(
        &c,
        &[
            "get",
            "cm",
            "one",
            "-w",
            "--output-watch-events",
            "-o",
            r#"jsonpath={.type} {.object.metadata.name} {.object.data.a} {.object.metadata.resourceVersion}{"\n"}"#,
        ],
    );
    let added = w.expect(&["ADDED", "one", "1"]);
    let rv0: u64 = added
        .split_whitespace()
        .nth(3)
        .and_then(|r| r.parse().ok())
        .expect("resourceVersion");
    c.kubectl_ok(&[
        "patch",
        "cm",
        "two",
        "--type=merge",
        "-p",
        r#"{"data":{"a":"2"}}"#,
    ]);
    c.kubectl_ok(&[
        "patch",
        "cm",
        "one",
        "--type=merge",
        "-p",
        r#"{"data":{"a":"3"}}"#,
    ]);
    let modified = w.expect(&["MODIFIED", "one", "3"]);
    let rv1: u64 = modified
        .split_whitespace()
        .nth(3)
        .and_then(|r| r.parse().ok())
        .expect("resourceVersion");
    assert!(rv1 > rv0, "{rv0} then {rv1}");
    c.kubectl_ok(&["delete", "cm", "one"]);
    w.expect(&["DELETED", "one"]);
    // Only the named object was watched.
    assert!(!w.seen.iter().any(|l| l.contains("two")), "{:?}", w.seen);
}
