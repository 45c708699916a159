//! The conformance suite every `Runtime` must pass (start, running, exit codes, stop
//! escalation, logs, removal), shared by the `process` runtime and the OCI runtime to come.
//!
//! Commands run `busybox` by absolute path, so the same suite works on the host (`process`)
//! and inside an image holding `/bin/busybox` (see [`crate::testimages::TestImage::busybox`]).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::logs::{LogRecord, Stream, parse_record};
use crate::runtime::{ContainerSpec, ContainerState, Runtime, RuntimeError, SIGKILL, SIGTERM};

/// What the suite needs from the environment a runtime runs containers in.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// Image to run (ignored by runtimes without isolation).
    pub image: String,
    /// Absolute path of busybox inside the container.
    pub busybox: String,
    /// A real (non-symlink) directory inside the container, used as working dir.
    pub working_dir: String,
    /// Prefix for container ids so suites can share a runtime.
    pub id_prefix: String,
}

impl Fixture {
    /// For runtimes that run on the host (Debian's `busybox-static` provides `/bin/busybox`).
    pub fn host() -> Self {
        Fixture {
            image: String::new(),
            busybox: "/bin/busybox".into(),
            working_dir: "/tmp".into(),
            id_prefix: "conf".into(),
        }
    }

    fn spec(&self, name: &str, script: &str) -> ContainerSpec {
        ContainerSpec {
            id: format!("{}-{name}", self.id_prefix),
            image: self.image.clone(),
            command: vec![self.busybox.clone(), "sh".into(), "-c".into()],
            args: vec![script.to_string()],
            ..ContainerSpec::default()
        }
    }
}

/// Runs every check; panics with the first failure (it is a test suite).
pub async fn run_all(rt: &dyn Runtime, fx: &Fixture) {
    lifecycle_and_sigterm(rt, fx).await;
    exit_code_propagates(rt, fx).await;
    stop_escalates_to_sigkill(rt, fx).await;
    logs_env_and_working_dir(rt, fx).await;
    remove_cleans_up(rt, fx).await;
    errors_are_typed(rt, fx).await;
}

/// Polls the log until it contains `needle`: the only way to know a shell has installed
/// its traps without a fixed sleep.
pub async fn wait_for_log(rt: &dyn Runtime, id: &str, needle: &str) {
    let path = rt.log_path(id).expect("log path");
    let needle = format!(" {needle}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if read(&path).lines().any(|l| l.ends_with(&needle)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{needle:?} never logged by {id}: {:?}",
            read(&path)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

pub async fn lifecycle_and_sigterm(rt: &dyn Runtime, fx: &Fixture) {
    let spec = fx.spec("lifecycle", &format!("exec {} sleep 1000", fx.busybox));
    rt.create(&spec).await.expect("create");
    let st = rt.status(&spec.id).await.expect("status");
    assert_eq!(
        (st.state, st.pid, st.exit_code),
        (ContainerState::Created, None, None)
    );
    rt.start(&spec.id).await.expect("start");
    let st = rt.status(&spec.id).await.expect("status");
    assert_eq!(st.state, ContainerState::Running);
    assert!(st.pid.is_some_and(|p| p > 0), "running without pid: {st:?}");
    rt.kill(&spec.id, SIGTERM).await.expect("kill");
    let st = rt.wait(&spec.id).await.expect("wait");
    assert_eq!(st.state, ContainerState::Exited);
    assert_eq!(
        (st.exit_code, st.signal),
        (Some(128 + SIGTERM), Some(SIGTERM))
    );
    assert_eq!(st.pid, None);
    rt.remove(&spec.id).await.expect("remove");
}

pub async fn exit_code_propagates(rt: &dyn Runtime, fx: &Fixture) {
    for code in [0, 3, 255] {
        let spec = fx.spec(&format!("exit{code}"), &format!("exit {code}"));
        rt.create(&spec).await.expect("create");
        rt.start(&spec.id).await.expect("start");
        let st = rt.wait(&spec.id).await.expect("wait");
        assert_eq!(
            (st.state, st.exit_code, st.signal),
            (ContainerState::Exited, Some(code), None)
        );
        // Waiting again returns the same final status.
        assert_eq!(rt.wait(&spec.id).await.expect("wait again"), st);
        rt.remove(&spec.id).await.expect("remove");
    }
}

pub async fn stop_escalates_to_sigkill(rt: &dyn Runtime, fx: &Fixture) {
    // An ignored SIGTERM is inherited by the loop's children, so only SIGKILL ends it.
    let script = format!(
        "trap '' TERM; echo ready; while true; do {} sleep 1; done",
        fx.busybox
    );
    let spec = fx.spec("stubborn", &script);
    rt.create(&spec).await.expect("create");
    rt.start(&spec.id).await.expect("start");
    wait_for_log(rt, &spec.id, "ready").await;
    let st = rt
        .stop(&spec.id, Duration::from_millis(300))
        .await
        .expect("stop");
    assert_eq!(
        (st.exit_code, st.signal),
        (Some(128 + SIGKILL), Some(SIGKILL))
    );
    rt.remove(&spec.id).await.expect("remove");

    // A process that honours SIGTERM is not killed.
    let spec = fx.spec("polite", &format!("exec {} sleep 1000", fx.busybox));
    rt.create(&spec).await.expect("create");
    rt.start(&spec.id).await.expect("start");
    let st = rt
        .stop(&spec.id, Duration::from_secs(30))
        .await
        .expect("stop");
    assert_eq!(st.signal, Some(SIGTERM));
    // Stopping an exited container is a no-op.
    assert_eq!(
        rt.stop(&spec.id, Duration::from_secs(1))
            .await
            .expect("stop again"),
        st
    );
    rt.remove(&spec.id).await.expect("remove");
}

pub async fn logs_env_and_working_dir(rt: &dyn Runtime, fx: &Fixture) {
    let mut spec = fx.spec(
        "logs",
        "echo to-stdout; echo to-stderr >&2; echo \"greeting=$GREETING\"; pwd",
    );
    spec.env = vec![("GREETING".into(), "hello world".into())];
    spec.working_dir = Some(fx.working_dir.clone());
    rt.create(&spec).await.expect("create");
    rt.start(&spec.id).await.expect("start");
    let st = rt.wait(&spec.id).await.expect("wait");
    assert_eq!(st.exit_code, Some(0));
    let log = read(&rt.log_path(&spec.id).expect("log path"));
    let records: Vec<LogRecord> = log
        .lines()
        .map(|l| parse_record(l).unwrap_or_else(|| panic!("not a CRI log record: {l:?}")))
        .collect();
    let got: Vec<(Stream, &str)> = records
        .iter()
        .map(|r| (r.stream, r.text.as_str()))
        .collect();
    for want in [
        (Stream::Stdout, "to-stdout"),
        (Stream::Stderr, "to-stderr"),
        (Stream::Stdout, "greeting=hello world"),
        (Stream::Stdout, fx.working_dir.as_str()),
    ] {
        assert!(got.contains(&want), "{want:?} missing from log {log:?}");
    }
    assert!(records.iter().all(|r| !r.partial));
    rt.remove(&spec.id).await.expect("remove");
}

pub async fn remove_cleans_up(rt: &dyn Runtime, fx: &Fixture) {
    let spec = fx.spec("remove", "echo bye");
    rt.create(&spec).await.expect("create");
    rt.start(&spec.id).await.expect("start");
    rt.wait(&spec.id).await.expect("wait");
    let log = rt.log_path(&spec.id).expect("log path");
    assert!(log.exists());
    rt.remove(&spec.id).await.expect("remove");
    assert!(!log.exists(), "log survived remove");
    assert!(matches!(
        rt.status(&spec.id).await,
        Err(RuntimeError::NotFound(_))
    ));

    // Removing a running container kills it.
    let spec = fx.spec("remove-running", &format!("exec {} sleep 1000", fx.busybox));
    rt.create(&spec).await.expect("create");
    rt.start(&spec.id).await.expect("start");
    let pid = rt.status(&spec.id).await.expect("status").pid.expect("pid");
    rt.remove(&spec.id).await.expect("remove running");
    assert!(matches!(
        rt.status(&spec.id).await,
        Err(RuntimeError::NotFound(_))
    ));
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("pid");
    assert!(
        rustix::process::test_kill_process(pid).is_err(),
        "process survived remove"
    );
    // The id can be reused.
    rt.create(&spec).await.expect("re-create");
    rt.remove(&spec.id).await.expect("remove created");
}

pub async fn errors_are_typed(rt: &dyn Runtime, fx: &Fixture) {
    assert!(matches!(
        rt.start("no-such").await,
        Err(RuntimeError::NotFound(_))
    ));
    assert!(matches!(
        rt.kill("no-such", SIGTERM).await,
        Err(RuntimeError::NotFound(_))
    ));
    let spec = fx.spec("errors", "exit 0");
    rt.create(&spec).await.expect("create");
    assert!(matches!(
        rt.create(&spec).await,
        Err(RuntimeError::AlreadyExists(_))
    ));
    rt.start(&spec.id).await.expect("start");
    rt.wait(&spec.id).await.expect("wait");
    assert!(matches!(
        rt.start(&spec.id).await,
        Err(RuntimeError::InvalidState { .. })
    ));
    rt.remove(&spec.id).await.expect("remove");
    let mut bad = fx.spec("x", "exit 0");
    bad.id = "../escape".into();
    assert!(matches!(
        rt.create(&bad).await,
        Err(RuntimeError::InvalidSpec(_))
    ));
}
