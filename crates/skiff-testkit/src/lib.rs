//! Test harness: starts a real `skiff up` process on port 0 with a temporary data directory,
//! runs the real `kubectl` against it, and waits on conditions with deadlines.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A `skiff up` process owned by a test; killed when dropped.
pub struct TestCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Extra `skiff up` arguments, kept for restarts.
    args: Vec<String>,
    /// `https://127.0.0.1:<port>`
    pub server: String,
    pub port: u16,
}

impl TestCluster {
    /// Starts `bin up` (the `skiff` binary) on a free port with a fresh data directory, as a
    /// control plane only (`--disable-agent`: no node, so that tests can run side by side).
    pub fn start(bin: impl AsRef<Path>) -> TestCluster {
        Self::start_with(bin, &["--disable-agent"])
    }

    /// Starts `bin up <args>` on a free port with a fresh data directory.
    pub fn start_with(bin: impl AsRef<Path>, args: &[&str]) -> TestCluster {
        let dir = tempfile::Builder::new()
            .prefix("skiff-test-")
            .tempdir()
            .expect("temp dir");
        let mut c = TestCluster {
            bin: bin.as_ref().to_path_buf(),
            dir,
            child: None,
            args: args.iter().map(|a| a.to_string()).collect(),
            server: String::new(),
            port: 0,
        };
        c.launch(0);
        c
    }

    /// Starts the server process on the data directory (port 0 = any free port).
    fn launch(&mut self, port: u16) {
        let mut child = Command::new(&self.bin)
            .args(["up", "--port", &port.to_string(), "--data-dir"])
            .arg(self.dir.path())
            .args(&self.args)
            .env(
                "SKIFF_LOG",
                std::env::var("SKIFF_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning skiff");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("skiff is ready at ") {
                    let url = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    let _ = tx.send(url);
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("skiff did not become ready within 30 s");
        self.port = url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port in ready line");
        self.server = url;
        self.child = Some(child);
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig.yaml")
    }

    /// The admin bearer token.
    pub fn token(&self) -> String {
        let tokens =
            std::fs::read_to_string(self.dir.path().join("tokens.csv")).expect("tokens.csv");
        tokens.split(',').next().unwrap_or_default().to_string()
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("pki/ca.crt")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// `kill -9` of the server, without any chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same data directory and port.
    pub fn restart(&mut self) {
        self.kill9();
        let port = self.port;
        // The port may briefly linger; fall back to a new one.
        for _ in 0..50 {
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.launch(port);
    }

    /// SIGTERM and wait for a clean exit; returns the exit status success.
    pub fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        false
    }

    /// A `kubectl` command with this cluster's kubeconfig.
    pub fn kubectl_cmd(&self) -> Command {
        let mut c = Command::new(kubectl_bin());
        c.env("KUBECONFIG", self.kubeconfig());
        c.env_remove("KUBERNETES_SERVICE_HOST");
        c
    }

    /// Runs kubectl and returns its output, whatever the exit status.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_cmd()
            .args(args)
            .output()
            .expect("running kubectl")
    }

    /// Runs kubectl with `input` on stdin.
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .kubectl_cmd()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running kubectl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("writing stdin");
        child.wait_with_output().expect("kubectl output")
    }

    /// Runs kubectl, panics with its stderr unless it succeeds, returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert_success(&out, args);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl apply -f -` of `yaml`, which must succeed.
    pub fn apply(&self, yaml: &str) -> String {
        let out = self.kubectl_stdin(&["apply", "-f", "-"], yaml);
        assert_success(&out, &["apply", "-f", "-"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl get ... -o json` parsed.
    pub fn get_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a: Vec<&str> = vec!["get"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&self.kubectl_ok(&a)).expect("kubectl json output")
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.kill9();
        // A cluster with a node leaves containers, sandboxes and interfaces behind on
        // purpose (they survive restarts); a test must not.
        if self.dir.path().join("node.json").exists() || self.dir.path().join("oci").exists() {
            let _ = Command::new(&self.bin)
                .args(["killall", "--data-dir"])
                .arg(self.dir.path())
                .stdout(Stdio::null())
                .status();
        }
    }
}

pub fn assert_success(out: &Output, args: &[&str]) {
    assert!(
        out.status.success(),
        "kubectl {} failed ({}):\nstdout: {}\nstderr: {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The kubectl binary (`KUBECTL` env, else `kubectl` on the PATH).
pub fn kubectl_bin() -> String {
    std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into())
}

/// Polls `cond` every 20 ms until it returns Some or `timeout` passes (then panics with `what`).
pub fn wait_for<T>(timeout: Duration, what: &str, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// stdout as a string.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stderr as a string.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
