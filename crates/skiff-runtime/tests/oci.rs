//! The `oci` runtime against real runc: the conformance suite, adoption by a new runtime
//! object after the old one is gone, and cleanliness. Skipped (with the reason printed)
//! unless running as root with runc installed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use skiff_runtime::conformance::{self, Fixture};
use skiff_runtime::images::ImageStore;
use skiff_runtime::logs::parse_record;
use skiff_runtime::testimages::TestImage;
use skiff_runtime::{ContainerSpec, ContainerState, OciConfig, OciRuntime, Runtime};

const RUNC: &str = "/usr/sbin/runc";
const IMAGE: &str = "skiff-test/busybox:oci";

/// A runtime root in a temp dir; every container left in it is removed on drop.
struct Env {
    rt: OciRuntime,
    images: ImageStore,
    root: PathBuf,
    _dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Option<Env> {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipping oci test: not running as root");
            return None;
        }
        if !Path::new(RUNC).exists() {
            eprintln!("skipping oci test: {RUNC} not installed");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let images = ImageStore::open(dir.path().join("images")).expect("image store");
        let archive = TestImage::busybox(IMAGE)
            .expect("busybox image (busybox-static installed?)")
            .oci_archive()
            .expect("archive");
        images.import(archive.as_slice()).expect("import");
        let root = dir.path().join("oci");
        let rt = runtime(&root, &images);
        Some(Env {
            rt,
            images,
            root,
            _dir: dir,
        })
    }

    fn fixture(&self, prefix: &str) -> Fixture {
        let rt = self.rt.clone();
        Fixture {
            image: IMAGE.into(),
            busybox: "/bin/busybox".into(),
            working_dir: "/tmp".into(),
            id_prefix: format!("{prefix}-{:06x}", rand::random::<u32>() & 0xff_ffff),
            leftovers: Some(Arc::new(move |id: &str| rt.leftovers(id))),
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for id in self.rt.ids().unwrap_or_default() {
            if let Err(e) = self.rt.remove_blocking(&id) {
                eprintln!("cleanup of {id} failed: {e}");
            }
        }
    }
}

fn runtime(root: &Path, images: &ImageStore) -> OciRuntime {
    let cfg = OciConfig::new(root, RUNC).with_shim(env!("CARGO_BIN_EXE_skiff-shim"), Vec::new());
    OciRuntime::with_config(cfg, images.clone()).expect("runtime")
}

fn spec(id: &str, script: &str) -> ContainerSpec {
    ContainerSpec {
        id: id.into(),
        image: IMAGE.into(),
        command: vec!["/bin/busybox".into(), "sh".into(), "-c".into()],
        args: vec![script.into()],
        ..ContainerSpec::default()
    }
}

fn log_lines(rt: &OciRuntime, id: &str) -> Vec<String> {
    let path = rt.log_path(id).expect("log path");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(parse_record)
        .map(|r| r.text)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_passes_conformance() {
    let Some(env) = Env::new() else { return };
    conformance::run_all(&env.rt, &env.fixture("conf")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_survive_the_runtime_and_are_adopted() {
    let Some(env) = Env::new() else { return };
    let tag = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let long = spec(
        &format!("adopt-long-{tag}"),
        "trap 'echo bye; exit 0' TERM; echo hello; /bin/busybox sleep 1000 & wait",
    );
    // Exits once told to through a file in a bind mount, while no runtime object exists.
    let gate = env._dir.path().join("gate");
    std::fs::create_dir(&gate).expect("gate dir");
    let mut short = spec(
        &format!("adopt-short-{tag}"),
        "echo waiting; while [ ! -e /gate/go ]; do /bin/busybox sleep 0.05; done; echo done; exit 42",
    );
    short.mounts = vec![skiff_runtime::Mount {
        source: gate.clone(),
        destination: "/gate".into(),
        read_only: true,
    }];
    let created = spec(&format!("adopt-created-{tag}"), "exit 0");

    let first = runtime(&env.root, &env.images);
    for s in [&long, &short, &created] {
        first.create(s).await.expect("create");
    }
    first.start(&long.id).await.expect("start");
    first.start(&short.id).await.expect("start");
    conformance::wait_for_log(&first, &long.id, "hello").await;
    conformance::wait_for_log(&first, &short.id, "waiting").await;
    let long_pid = first.status(&long.id).await.expect("status").pid;
    drop(first);

    // The short one exits while nobody watches.
    std::fs::write(gate.join("go"), "").expect("open the gate");
    let deadline = Instant::now() + Duration::from_secs(20);
    let second = runtime(&env.root, &env.images);
    loop {
        let st = second.status(&short.id).await.expect("status");
        if st.state == ContainerState::Exited {
            break;
        }
        assert!(Instant::now() < deadline, "short container never exited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(second);

    let third = runtime(&env.root, &env.images);
    let all = third.list().await.expect("list");
    let find = |id: &str| {
        all.iter()
            .find(|s| s.id == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} not adopted: {all:?}"))
    };
    let l = find(&long.id);
    assert_eq!((l.state, l.pid), (ContainerState::Running, long_pid));
    assert!(l.started_at.is_some());
    let s = find(&short.id);
    assert_eq!((s.state, s.exit_code), (ContainerState::Exited, Some(42)));
    assert!(s.finished_at.is_some() && s.started_at <= s.finished_at);
    assert_eq!(find(&created.id).state, ContainerState::Created);
    assert_eq!(log_lines(&third, &short.id), ["waiting", "done"]);

    // The adopted container is fully controllable.
    third
        .start(&created.id)
        .await
        .expect("start adopted created");
    assert_eq!(
        third.wait(&created.id).await.expect("wait").exit_code,
        Some(0)
    );
    let st = third
        .stop(&long.id, Duration::from_secs(20))
        .await
        .expect("stop adopted");
    assert_eq!(st.exit_code, Some(0));
    assert_eq!(log_lines(&third, &long.id), ["hello", "bye"]);
    for s in [&long, &short, &created] {
        third.remove(&s.id).await.expect("remove");
        let left = third.leftovers(&s.id);
        assert!(left.is_empty(), "{} left {left:?}", s.id);
    }
    assert!(third.list().await.expect("list").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_shim_is_reported_and_removal_still_cleans_up() {
    let Some(env) = Env::new() else { return };
    let s = spec(
        &format!("lost-shim-{:06x}", rand::random::<u32>() & 0xff_ffff),
        "echo up; /bin/busybox sleep 1000 & wait",
    );
    env.rt.create(&s).await.expect("create");
    env.rt.start(&s.id).await.expect("start");
    conformance::wait_for_log(&env.rt, &s.id, "up").await;
    let shim_pid: i32 =
        std::fs::read_to_string(env.root.join("containers").join(&s.id).join("shim.pid"))
            .expect("shim pid")
            .trim()
            .parse()
            .expect("pid");
    let pid = rustix::process::Pid::from_raw(shim_pid).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("kill shim");
    let deadline = Instant::now() + Duration::from_secs(10);
    while skiff_runtime::oci::state::alive(shim_pid) {
        assert!(Instant::now() < deadline, "shim survived SIGKILL");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The container itself still runs: reported as running, not as a (restartable) exit.
    let st = env.rt.status(&s.id).await.expect("status");
    assert_eq!(st.state, ContainerState::Running);
    env.rt.kill(&s.id, 9).await.expect("kill");
    let st = tokio::time::timeout(Duration::from_secs(20), env.rt.wait(&s.id))
        .await
        .expect("wait returned")
        .expect("wait");
    assert_eq!(
        (st.state, st.exit_code),
        (ContainerState::Exited, Some(255))
    );
    env.rt.remove(&s.id).await.expect("remove");
    let left = env.rt.leftovers(&s.id);
    assert!(left.is_empty(), "left {left:?}");
}

#[test]
fn the_default_shim_is_refused_in_a_test_binary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let images = ImageStore::open(dir.path().join("images")).expect("store");
    let err = OciRuntime::new(dir.path().join("oci"), images, RUNC.into())
        .err()
        .expect("refused");
    assert!(err.to_string().contains("with_shim"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_failures_leave_nothing_behind() {
    let Some(env) = Env::new() else { return };
    // A directory an interrupted create left (no metadata yet) does not block the id.
    let stale = spec("stale-dir", "echo fresh");
    let stale_dir = env.root.join("containers").join(&stale.id);
    std::fs::create_dir_all(stale_dir.join("rootfs")).expect("stale dir");
    assert!(env.rt.status(&stale.id).await.is_err());
    env.rt
        .create(&stale)
        .await
        .expect("create over a stale dir");
    env.rt.start(&stale.id).await.expect("start");
    assert_eq!(
        env.rt.wait(&stale.id).await.expect("wait").exit_code,
        Some(0)
    );
    assert_eq!(log_lines(&env.rt, &stale.id), ["fresh"]);
    env.rt.remove(&stale.id).await.expect("remove");

    let mut s = spec("bad-image", "exit 0");
    s.image = "no-such-image:1".into();
    assert!(env.rt.create(&s).await.is_err());
    assert!(env.rt.leftovers(&s.id).is_empty());
    let s = ContainerSpec {
        id: "bad-command".into(),
        image: IMAGE.into(),
        command: vec!["/no/such/binary".into()],
        ..ContainerSpec::default()
    };
    // runc reports a missing binary at create (exec of the user process happens at start
    // in runc 1.1, so either step may fail); nothing may stay behind.
    match env.rt.create(&s).await {
        Err(e) => assert!(e.to_string().contains("no such"), "{e}"),
        Ok(()) => {
            let started = env.rt.start(&s.id).await;
            if started.is_ok() {
                let st = env.rt.wait(&s.id).await.expect("wait");
                assert_ne!(st.exit_code, Some(0));
            }
            env.rt.remove(&s.id).await.expect("remove");
        }
    }
    assert!(
        env.rt.leftovers(&s.id).is_empty(),
        "{:?}",
        env.rt.leftovers(&s.id)
    );
}

/// A named network namespace (`ip netns add`), deleted on drop.
struct NetNs(String);

impl NetNs {
    fn new() -> Option<NetNs> {
        let name = format!("skiff-oci-{:06x}", rand::random::<u32>() & 0xff_ffff);
        let ok = std::process::Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(NetNs(name))
    }

    fn ip(&self, args: &[&str]) {
        let st = std::process::Command::new("ip")
            .args(["-n", &self.0])
            .args(args)
            .status()
            .expect("ip");
        assert!(st.success(), "ip {args:?}");
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

async fn run(rt: &OciRuntime, s: &ContainerSpec) -> Vec<String> {
    rt.create(s).await.expect("create");
    rt.start(&s.id).await.expect("start");
    let st = rt.wait(&s.id).await.expect("wait");
    let lines = log_lines(rt, &s.id);
    assert_eq!(st.exit_code, Some(0), "{lines:?}");
    rt.remove(&s.id).await.expect("remove");
    lines
}

fn assert_lines(lines: &[String], want: &[&str]) {
    for w in want {
        assert!(lines.iter().any(|l| l == w), "{w:?} not in {lines:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_get_namespaces_limits_capabilities_and_masked_paths() {
    let Some(env) = Env::new() else { return };
    let tag = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let bb = "/bin/busybox";
    let mut s = spec(
        &format!("iso-{tag}"),
        &format!(
            "echo pid=$$; echo host=$({bb} hostname); echo nets=$({bb} ls /sys/class/net); \
             {bb} grep CapEff /proc/self/status; \
             echo quota=$({bb} cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us); \
             echo shares=$({bb} cat /sys/fs/cgroup/cpu/cpu.shares); \
             echo mem=$({bb} cat /sys/fs/cgroup/memory/memory.limit_in_bytes); \
             echo kcore=$({bb} cat /proc/kcore | {bb} wc -c); \
             if echo 0 > /proc/sys/kernel/panic; then echo procsys-writable; else echo procsys-ro; fi"
        ),
    );
    s.hostname = Some("web-0".into());
    s.resources = skiff_runtime::Resources {
        cpu_shares: Some(256),
        cpu_quota: Some(25_000),
        cpu_period: Some(100_000),
        memory_limit: Some(64 << 20),
    };
    let lines = run(&env.rt, &s).await;
    assert_lines(
        &lines,
        &[
            "pid=1",
            "host=web-0",
            "nets=lo",
            // Docker's default set.
            "CapEff:\t00000000a80425fb",
            "quota=25000",
            "shares=256",
            &format!("mem={}", 64 << 20),
            "kcore=0",
            "procsys-ro",
        ],
    );

    // runAsUser / runAsGroup, and an image user resolved from the rootfs.
    let mut s = spec(
        &format!("user-{tag}"),
        &format!("echo id=$({bb} id -u):$({bb} id -g)"),
    );
    s.user = Some((1000, 2000));
    assert_lines(&run(&env.rt, &s).await, &["id=1000:2000"]);

    // Joining a given network namespace.
    let Some(ns) = NetNs::new() else {
        eprintln!("skipping the netns part: `ip netns add` failed");
        return;
    };
    // A mark only that namespace has (no dummy interfaces needed).
    ns.ip(&["link", "set", "lo", "mtu", "1234"]);
    let mut s = spec(
        &format!("netns-{tag}"),
        &format!("echo mtu=$({bb} cat /sys/class/net/lo/mtu)"),
    );
    s.network_namespace = Some(PathBuf::from("/run/netns").join(&ns.0));
    assert_lines(&run(&env.rt, &s).await, &["mtu=1234"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_with_a_terminal() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(env) = Env::new() else { return };
    let s = spec(
        &format!("tty-{:06x}", rand::random::<u32>() & 0xff_ffff),
        "trap 'exit 0' TERM; echo ready; /bin/busybox sleep 1000 & wait",
    );
    env.rt.create(&s).await.expect("create");
    env.rt.start(&s.id).await.expect("start");
    conformance::wait_for_log(&env.rt, &s.id, "ready").await;

    // One-shot: a terminal, stdout and stderr merged, the exit code.
    let mut p = env
        .rt
        .exec(
            &s.id,
            &skiff_runtime::ExecSpec {
                command: vec![
                    "/bin/busybox".into(),
                    "sh".into(),
                    "-c".into(),
                    "/bin/busybox tty; echo to-stderr >&2; echo TERM=$TERM; exit 3".into(),
                ],
                tty: true,
                stdin: false,
            },
        )
        .await
        .expect("exec");
    assert!(p.stderr.is_none() && p.stdin.is_none() && p.resize.is_some());
    let mut out = String::new();
    p.stdout.read_to_string(&mut out).await.expect("read");
    assert_eq!(p.exit.await.expect("exit"), 3);
    let lines: Vec<&str> = out.lines().map(|l| l.trim_end_matches('\r')).collect();
    assert!(
        lines.iter().any(|l| l.starts_with("/dev/pts/")),
        "no terminal: {out:?}"
    );
    assert!(
        lines.contains(&"to-stderr") && lines.contains(&"TERM=xterm"),
        "{out:?}"
    );

    // Interactive: input reaches the shell and resizes reach the container's terminal.
    let mut p = env
        .rt
        .exec(
            &s.id,
            &skiff_runtime::ExecSpec {
                command: vec!["/bin/busybox".into(), "sh".into()],
                tty: true,
                stdin: true,
            },
        )
        .await
        .expect("exec");
    let mut stdin = p.stdin.take().expect("stdin");
    let resize = p.resize.take().expect("resize");
    resize.send((123, 45)).await.expect("resize");
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while !seen.contains("45 123") {
        assert!(Instant::now() < deadline, "size never arrived: {seen:?}");
        stdin
            .write_all(b"/bin/busybox stty size\n")
            .await
            .expect("write");
        stdin.flush().await.expect("flush");
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(200), p.stdout.read(&mut buf)).await
        {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    stdin.write_all(b"exit 5\n").await.expect("write");
    stdin.flush().await.expect("flush");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), p.stdout.read_to_end(&mut rest)).await;
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(20), p.exit)
            .await
            .expect("exited")
            .expect("exit"),
        5
    );
    env.rt.remove(&s.id).await.expect("remove");
}

const HELPER_ENV: &str = "SKIFF_OCI_AGENT_HELPER";

/// Stands in for a node agent in its own process (`agent_killed_with_sigkill` runs it and
/// kills it with SIGKILL); does nothing when run directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper process of agent_killed_with_sigkill"]
async fn agent_helper() {
    let Some(args) = std::env::var_os(HELPER_ENV) else {
        return;
    };
    let args = args.to_string_lossy().into_owned();
    let [root, images, id, gate] = args.split('\n').collect::<Vec<_>>()[..] else {
        panic!("bad helper arguments {args:?}");
    };
    let rt = runtime(Path::new(root), &ImageStore::open(images).expect("store"));
    let mut s = spec(
        id,
        "echo started; while [ ! -e /gate/go ]; do /bin/busybox sleep 0.05; done; echo finishing; exit 42",
    );
    s.mounts = vec![skiff_runtime::Mount {
        source: gate.into(),
        destination: "/gate".into(),
        read_only: true,
    }];
    rt.create(&s).await.expect("create");
    rt.start(&s.id).await.expect("start");
    conformance::wait_for_log(&rt, &s.id, "started").await;
    println!("helper-ready");
    // Waits like an agent would, until killed.
    let _ = rt.wait(&s.id).await;
    tokio::time::sleep(Duration::from_secs(3600)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_with_sigkill() {
    use std::io::BufRead;
    let Some(env) = Env::new() else { return };
    let id = format!("sigkill-{:06x}", rand::random::<u32>() & 0xff_ffff);
    let gate = env._dir.path().join("gate");
    std::fs::create_dir(&gate).expect("gate");
    let args = [
        env.root.to_str().expect("utf8"),
        env.images.root().to_str().expect("utf8"),
        &id,
        gate.to_str().expect("utf8"),
    ]
    .join("\n");
    let mut agent = std::process::Command::new(std::env::current_exe().expect("test exe"))
        .args(["agent_helper", "--exact", "--ignored", "--nocapture"])
        .env(HELPER_ENV, args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("helper agent");
    // Killed on every path out of here, like the agent in the e2e tests.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let out = agent.stdout.take().expect("stdout");
    let mut agent = Kill(agent);
    let ready = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(out)
            .lines()
            .map_while(Result::ok)
            .any(|l| l == "helper-ready")
    });
    let ready = tokio::time::timeout(Duration::from_secs(60), ready)
        .await
        .expect("helper ready in time")
        .expect("reader");
    assert!(ready, "helper agent exited before its container ran");
    let pid = env.rt.status(&id).await.expect("status").pid.expect("pid");
    agent.0.kill().expect("SIGKILL the agent");
    agent.0.wait().expect("reap the agent");

    // The container outlived its agent and is adopted; then it exits with nobody watching.
    let st = env.rt.status(&id).await.expect("status");
    assert_eq!((st.state, st.pid), (ContainerState::Running, Some(pid)));
    std::fs::write(gate.join("go"), "").expect("open the gate");
    let st = tokio::time::timeout(Duration::from_secs(20), env.rt.wait(&id))
        .await
        .expect("exit in time")
        .expect("wait");
    assert_eq!(st.exit_code, Some(42));
    assert_eq!(log_lines(&env.rt, &id), ["started", "finishing"]);
    env.rt.remove(&id).await.expect("remove");
    assert!(env.rt.leftovers(&id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_start_once() {
    let Some(env) = Env::new() else { return };
    let s = spec(
        &format!("twice-{:06x}", rand::random::<u32>() & 0xff_ffff),
        "echo once; /bin/busybox sleep 1000 & wait",
    );
    env.rt.create(&s).await.expect("create");
    let (a, b) = tokio::join!(env.rt.start(&s.id), env.rt.start(&s.id));
    assert!(a.is_ok() != b.is_ok(), "{a:?} {b:?}");
    conformance::wait_for_log(&env.rt, &s.id, "once").await;
    assert_eq!(
        env.rt.status(&s.id).await.expect("status").state,
        ContainerState::Running
    );
    env.rt.remove(&s.id).await.expect("remove");
    assert!(env.rt.leftovers(&s.id).is_empty());
}
