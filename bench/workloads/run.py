#!/usr/bin/env python3
"""Benchmarks skiff's workload path: pod start latency, Service overhead and node memory.

Starts `skiff up` (release build, its own data dir, CIDRs and bridge so it does not disturb a
running cluster), imports the lesson's ml-api image and a busybox image, then:

1. pod start latency: creates --pods pods (busybox `sleep`, imagePullPolicy Never) at once and
   measures, per pod, the time from the create request to the watch event that shows it Ready
   (p50 / p99 / max), and the time until all are Ready;
2. memory: RSS of the skiff process (and of its per-container shims) with the lesson's
   3-replica ml-api Deployment + LoadBalancer Service running, containers excluded;
3. Service overhead: `wrk` GET /health for --duration seconds at --connections connections
   straight to a pod IP, through the ClusterIP and through the LoadBalancer (127.0.0.1:80),
   printing requests/s, p50/p99 and the throughput relative to the direct path.

Usage: bench/workloads/run.py [--pods 100] [--duration 10] [--connections 16]
Needs root, runc and the CNI plugins (scripts/setup.sh installs them) and wrk for part 3.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from kubernetes import client, config, watch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/skiff-target"))

NODE_FLAGS = [
    "--runtime", "oci",
    "--cluster-cidr", "10.87.0.0/16",
    "--service-cidr", "10.88.0.0/16",
    "--bridge", "skbench0",
    "--service-interface", "skbench-svc",
    "--kubelet-port", "0",
    "--lb-address", "127.0.0.1",
    "--node-port-address", "127.0.0.1",
]


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = min(len(xs) - 1, max(0, int(round(p / 100.0 * (len(xs) - 1)))))
    return xs[k]


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def shim_pids(data_dir):
    """Processes whose command line names the data dir and `shim` (our per-container shims)."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
        except OSError:
            continue
        if any(b"shim" in c for c in cmd[:3]) and any(data_dir.encode() in c for c in cmd):
            pids.append(int(d))
    return pids


class Cluster:
    def __init__(self, skiff, work):
        self.skiff = skiff
        self.data = os.path.join(work, "data")
        self.log = open(os.path.join(work, "skiff.log"), "w")
        self.proc = subprocess.Popen(
            [skiff, "up", "--port", "0", "--data-dir", self.data] + NODE_FLAGS,
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        deadline = time.time() + 30
        for line in self.proc.stdout:
            if line.startswith("skiff is ready at "):
                break
            if time.time() > deadline:
                raise RuntimeError("skiff did not start")
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()
        config.load_kube_config(os.path.join(self.data, "kubeconfig.yaml"))
        self.core = client.CoreV1Api()
        self.apps = client.AppsV1Api()

    def kubectl(self, *args, stdin=None):
        env = dict(os.environ, KUBECONFIG=os.path.join(self.data, "kubeconfig.yaml"))
        return subprocess.run(["kubectl", *args], env=env, input=stdin, text=True,
                              check=True, capture_output=True).stdout

    def import_image(self, archive):
        subprocess.run([self.skiff, "images", "import", archive, "--data-dir", self.data],
                       check=True, capture_output=True)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        subprocess.run([self.skiff, "killall", "--data-dir", self.data],
                       capture_output=True)


def ready(pod):
    for c in (pod.status.conditions or []) if pod.status else []:
        if c.type == "Ready" and c.status == "True":
            return True
    return False


def pod_start_latency(c, n):
    ns = "bench-pods"
    c.core.create_namespace({"metadata": {"name": ns}})
    created = {}
    latencies = {}
    done = threading.Event()

    def watcher():
        w = watch.Watch()
        for ev in w.stream(c.core.list_namespaced_pod, ns, timeout_seconds=300):
            pod = ev["object"]
            name = pod.metadata.name
            if name in created and name not in latencies and ready(pod):
                latencies[name] = time.monotonic() - created[name]
                if len(latencies) == n:
                    done.set()
                    w.stop()

    t = threading.Thread(target=watcher, daemon=True)
    t.start()
    time.sleep(0.5)  # the watch is established before the first create
    start = time.monotonic()
    for i in range(n):
        name = f"p{i:04d}"
        body = {"metadata": {"name": name}, "spec": {
            "containers": [{"name": "c", "image": "busybox:latest", "imagePullPolicy": "Never",
                            "command": ["/usr/bin/busybox", "sleep", "3600"]}],
            "terminationGracePeriodSeconds": 0}}
        created[name] = time.monotonic()
        c.core.create_namespaced_pod(ns, body)
    done.wait(300)
    total = time.monotonic() - start
    lat = [v * 1000 for v in latencies.values()]
    print(f"pods ready: {len(lat)}/{n} in {total:.2f} s")
    print(f"create -> Ready: p50 {pct(lat, 50):.0f} ms, p99 {pct(lat, 99):.0f} ms, max {max(lat or [0]):.0f} ms")
    c.kubectl("delete", "namespace", ns, "--wait=true", "--timeout=300s")
    return lat, total


def wrk(url, duration, connections):
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", url],
        capture_output=True, text=True).stdout
    rps = p50 = p99 = None
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Requests/sec:"):
            rps = float(line.split()[1])
        elif line.startswith("50%"):
            p50 = line.split()[1]
        elif line.startswith("99%"):
            p99 = line.split()[1]
    return rps, p50, p99, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=100)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--skiff", default=os.path.join(TARGET, "release", "skiff"))
    ap.add_argument("--ml-api", default=os.path.join(TARGET, "release", "ml-api"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (real containers)")

    work = tempfile.mkdtemp(prefix="skiff-bench-workloads-")
    c = None
    try:
        c = Cluster(args.skiff, work)
        subprocess.run([args.skiff, "images", "build-binary", args.ml_api, "--tag", "ml-api:v1",
                        "--env", "MODEL_VERSION=v1.0", "--port", "8080",
                        "-o", os.path.join(work, "ml-api.tar")], check=True)
        subprocess.run([args.skiff, "images", "build-binary", "/bin/busybox", "--tag",
                        "busybox:latest", "-o", os.path.join(work, "busybox.tar")], check=True)
        c.import_image(os.path.join(work, "ml-api.tar"))
        c.import_image(os.path.join(work, "busybox.tar"))

        print(f"# skiff workloads benchmark ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})")
        print(f"load average before: {open('/proc/loadavg').read().split()[:3]}")
        print("\n## pod start latency")
        pod_start_latency(c, args.pods)

        print("\n## the lesson: 3 replicas + LoadBalancer")
        for f in ("deployment.yaml", "service.yaml"):
            c.kubectl("apply", "-f", os.path.join(ROOT, "examples", "ml-api", f))
        c.kubectl("rollout", "status", "deployment/ml-api", "--timeout=120s")
        time.sleep(2)
        skiff_rss = rss_kib(c.proc.pid)
        shims = shim_pids(c.data)
        shim_rss = sum(rss_kib(p) for p in shims)
        print(f"skiff RSS: {skiff_rss / 1024:.1f} MiB; {len(shims)} shims: {shim_rss / 1024:.1f} MiB")

        if shutil.which("wrk") is None:
            print("\nwrk not installed: skipping the Service overhead part (apt-get install wrk)")
            return
        print("\n## Service overhead (GET /health, wrk)")
        # One replica without CPU limits, so that every path ends at the same pod and the
        # pod's quota does not cap the figures.
        c.kubectl("create", "deployment", "bench-api", "--image=ml-api:v1", "--port=8080")
        c.kubectl("patch", "deployment", "bench-api", "-p",
                  '{"spec":{"template":{"spec":{"containers":[{"name":"ml-api","imagePullPolicy":"Never"}]}}}}')
        c.kubectl("expose", "deployment", "bench-api", "--type=LoadBalancer", "--port=8090",
                  "--target-port=8080")
        c.kubectl("rollout", "status", "deployment/bench-api", "--timeout=120s")
        time.sleep(1)
        pods = c.core.list_namespaced_pod("default", label_selector="app=bench-api").items
        svc = c.core.read_namespaced_service("bench-api", "default")
        targets = [
            ("pod IP (direct)", f"http://{pods[0].status.pod_ip}:8080/health"),
            ("ClusterIP", f"http://{svc.spec.cluster_ip}:8090/health"),
            ("LoadBalancer", "http://127.0.0.1:8090/health"),
        ]
        base = None
        print(f"| path | req/s | p50 | p99 | vs direct |\n|---|---|---|---|---|")
        for name, url in targets:
            rps, p50, p99, raw = wrk(url, args.duration, args.connections)
            if rps is None:
                print(f"| {name} | failed | | | |\n{raw}")
                continue
            base = base or rps
            print(f"| {name} | {rps:.0f} | {p50} | {p99} | {rps / base * 100:.0f} % |")
    finally:
        if c is not None:
            c.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
