#!/usr/bin/env python3
"""Benchmarks skiff serve against MLServer, Flask+gunicorn, FastAPI+uvicorn and in-process onnxruntime.

Every server gets the same scikit-learn model (logistic regression on iris; ONNX for the ONNX
servers, joblib for the Python ones) and the same load: one row per request at fixed concurrency
1, 16 and 64, on 127.0.0.1 only. HTTP load comes from `wrk` (C, so the client is not the
bottleneck); gRPC load from the Rust client `examples/grpc_load.rs` of skiff-serving (the same
closed loop over HTTP/2, one connection per client). Each level runs for --duration seconds.
Prints throughput and p50/p99 latency per server, plus start-to-ready time and resident memory.

The "efficiency" part asks how much of the engine's capacity the server delivers where compute
matters: a 200-tree random forest and a 300-tree gradient boosting regressor (20 features),
requests of 1/32/64 rows at concurrency 16 and 64 (REST binary and JSON, batching on), in rows/s,
against onnxruntime run in-process in a tight loop on the mean batch size skiff actually executed
(from the batch-size histogram in its /metrics) with the same session settings, taking the better
of one session with N intra-op threads and N one-thread sessions side by side. It also reports the
issue's literal reading ("in-process with the same batch sizes"): the loop on the batch size the
clients send, which is what a server without batching would run. The loops and the server alternate
in windows of --window seconds (--windows rounds per point) and each point reports the median of
the paired ratios, because the engine's own speed on a shared machine moves by a third or more
from one second to the next. Each point also drives the HTTP floor (examples/http_floor.rs: the
same HTTP stack, answering without decoding or inference) with the same load and charges the
server CPUs' busy time to its requests; with the engine's time per request from the loop, that
bounds the share of the loop's rate any server on this stack could reach at that point. By default
(--cpu-layout split) skiff and the in-process loop run on one half of the CPUs and wrk on the
other, so that both sides of the ratio have the same CPUs and the load generator takes none of
them, as with a separate client machine; --cpu-layout shared puts everything on all CPUs.

Usage: bench/serving/run.py [--duration 5] [--levels 1,16,64] [--only skiff,mlserver,...,efficiency]
Server command: $SKIFF_SERVE_CMD, else the `serve` example of skiff-serving (release if built).
"""

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "serving"))
from models import build_models, iris  # noqa: E402

ROW = [5.1, 3.5, 1.4, 0.2]

WRK_SCRIPT = r"""
local f = io.open(os.getenv("BENCH_BODY"), "rb")
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE") or "application/json"
local hl = os.getenv("BENCH_HEADER_LEN")
if hl and hl ~= "" then wrk.headers["Inference-Header-Content-Length"] = hl end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, proc, start, timeout=120):
    """Seconds from `start` (taken before the spawn) until `url` answers 200."""
    import requests

    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if requests.get(url, timeout=0.5).status_code == 200:
                return time.monotonic() - start
        except requests.RequestException:
            pass
        time.sleep(0.01)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def rss_mb(pid):
    """Resident memory of a process and its descendants, in MB."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return total / 1024


def stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def spawn(cmd, env=None, cwd=None, log=None):
    """Starts a server in its own process group; returns it with its start time."""
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    proc.started = started
    return proc


def pinned(cpus, cmd):
    """`cmd` restricted to the CPU list `cpus` ("0", "0-1", "0,2"), or as it is when `cpus` is empty."""
    return ["taskset", "-c", cpus] + cmd if cpus else cmd


def split_cpus():
    """The CPUs this process may use, halved: (server's, load generator's) as taskset lists."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return "", ""
    half = (len(cpus) + 1) // 2
    return ",".join(map(str, cpus[:half])), ",".join(map(str, cpus[half:]))


def cpu_set(cpus):
    """The CPU numbers a taskset list ("0", "0-1", "0,2") names."""
    out = set()
    for part in cpus.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def cpu_count(cpus):
    """How many CPUs a taskset list names."""
    return len(cpu_set(cpus))


def wrk(url, body, duration, conc, workdir, content_type="application/json", header_len=None, cpus=""):
    body_path = os.path.join(workdir, f"body-{abs(hash(body))}.bin")
    with open(body_path, "wb") as f:
        f.write(body)
    script = os.path.join(workdir, "bench.lua")
    with open(script, "w") as f:
        f.write(WRK_SCRIPT)
    env = dict(os.environ, BENCH_BODY=body_path, BENCH_CONTENT_TYPE=content_type,
               BENCH_HEADER_LEN=str(header_len) if header_len else "")
    threads = min(conc, cpu_count(cpus) if cpus else 2)
    out = subprocess.run(pinned(cpus, ["wrk", "-t", str(threads), "-c", str(conc), "-d", f"{duration}s",
                                       "--timeout", "10s", "-s", script, url]),
                         env=env, capture_output=True, text=True, timeout=duration + 60)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT"):
            n, us, p50, p99, errors = map(int, line.split()[1:])
            return {"rps": n / (us / 1e6), "p50": p50 / 1000, "p99": p99 / 1000, "errors": errors, "n": n}
    raise RuntimeError("wrk failed: " + out.stdout + out.stderr)


def last_json_line(text):
    """The JSON value a helper program printed last (its result)."""
    return json.loads(text.strip().splitlines()[-1])


def example_binary(name):
    """A release (else debug) example binary of skiff-serving from $CARGO_TARGET_DIR."""
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    for profile in ["release", "debug"]:
        p = os.path.join(target, profile, "examples", name)
        if os.path.exists(p):
            return p
    raise SystemExit(f"build it first: cargo build --release -p skiff-serving --example {name}")


def grpc_load(target, model, input_name, duration, conc, workdir):
    """Closed-loop gRPC ModelInfer load from the Rust client (examples/grpc_load.rs), `conc`
    clients with one HTTP/2 connection each, raw_input_contents as tritonclient sends them."""
    data = os.path.join(workdir, "row.f32")
    with open(data, "wb") as f:
        f.write(np.array([ROW], dtype="<f4").tobytes())
    out = subprocess.run([example_binary("grpc_load"), "--target", target, "--model", model, "--input", input_name,
                          "--shape", "1,4", "--datatype", "FP32", "--data-file", data, "--conc", str(conc),
                          "--duration", str(duration), "--threads", str(min(conc, 2))],
                         capture_output=True, text=True, timeout=duration + 60)
    if out.returncode != 0:
        raise RuntimeError("grpc_load failed: " + out.stdout + out.stderr)
    r = last_json_line(out.stdout)
    return {"rps": r["rps"], "p50": r["p50"], "p99": r["p99"], "errors": r["errors"], "n": r["requests"]}


def in_process(onnx_bytes, duration, batch):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])
    x = np.tile(np.array([ROW], dtype=np.float32), (batch, 1))
    lat = []
    deadline = time.monotonic() + duration
    start = time.monotonic()
    while time.monotonic() < deadline:
        t = time.perf_counter()
        sess.run(None, {"X": x})
        lat.append(time.perf_counter() - t)
    elapsed = time.monotonic() - start
    a = np.array(lat) * 1000
    return {"rps": len(lat) * batch / elapsed, "p50": float(np.percentile(a, 50)),
            "p99": float(np.percentile(a, 99)), "errors": 0, "n": len(lat) * batch}


# ---------------------------------------------------------------------------------------------
# Engine efficiency: how much of the engine's capacity the server delivers on models whose compute
# matters, compared with onnxruntime called in-process on the batch sizes the server executed.

N_FEATURES = 20


def compute_models(trees_rf, trees_gb):
    """A random forest classifier and a gradient boosting regressor of realistic size, as ONNX."""
    from skl2onnx import to_onnx
    from sklearn.datasets import make_classification, make_regression
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier

    xc, yc = make_classification(n_samples=4000, n_features=N_FEATURES, n_informative=12, n_classes=3,
                                 random_state=0)
    xc = xc.astype(np.float32)
    rf = RandomForestClassifier(n_estimators=trees_rf, max_depth=10, random_state=0).fit(xc, yc)
    xr, yr = make_regression(n_samples=4000, n_features=N_FEATURES, noise=0.1, random_state=0)
    xr = xr.astype(np.float32)
    gb = GradientBoostingRegressor(n_estimators=trees_gb, max_depth=3, random_state=0).fit(xr, yr)
    return {
        f"forest{trees_rf}": (to_onnx(rf, xc[:1], options={id(rf): {"zipmap": False}},
                                      target_opset=15).SerializeToString(), xc),
        f"boost{trees_gb}": (to_onnx(gb, xr[:1], target_opset=15).SerializeToString(), xr),
    }


def ort_session(onnx_bytes, threads):
    """An onnxruntime session configured like skiff's backend (backend/ort.rs): `threads` intra-op
    threads, one inter-op thread, no spinning, default graph optimisations."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])


def ort_rows_per_s(sess, x, duration):
    """Rows/s of `sess.run` in a tight loop on the batch `x`, plus the mean seconds per run."""
    feed = {sess.get_inputs()[0].name: x}
    sess.run(None, feed)
    n, start = 0, time.perf_counter()
    while True:
        sess.run(None, feed)
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= duration:
            return n * len(x) / elapsed, elapsed / n


INPROCESS_WORKER = """
import json, sys, numpy as np
sys.path.insert(0, sys.argv[1])
import run
model, data, threads, batch, rows = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
sess = run.ort_session(open(model, "rb").read(), threads)
# What the server executes: the request's rows repeated (every client sends the same body), so
# the trees see the same rows and caches behave alike.
feed = np.ascontiguousarray(np.resize(np.load(data)[:rows], (batch, run.N_FEATURES)))
run.ort_rows_per_s(sess, feed, 0.2)
print("ready", flush=True)
# One timed window per line read, so that the benchmark can alternate them with the server's.
for line in sys.stdin:
    print(json.dumps(run.ort_rows_per_s(sess, feed, float(line))), flush=True)
"""


class EngineLoop:
    """onnxruntime in a tight loop, `sessions` sessions of `threads` intra-op threads each, every
    one in a child process of its own session, as the server runs (the kernel shares the CPU per
    session, autogroup), pinned like the server. Idle until `window` times a few seconds of it."""

    def __init__(self, model_path, data_path, sessions, threads, batch, rows, cpus):
        self.layout = f"{sessions}x{threads}"
        cmd = [sys.executable, "-c", INPROCESS_WORKER, HERE, model_path, data_path, str(threads), str(batch),
               str(rows)]
        self.procs = [subprocess.Popen(pinned(cpus, cmd), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                       start_new_session=True) for _ in range(sessions)]
        for p in self.procs:
            if p.stdout.readline().strip() != "ready":
                self.close()
                raise RuntimeError(f"in-process onnxruntime worker failed to start: {cmd}")

    def window(self, seconds):
        """All sessions run for `seconds` at once: (rows/s summed, mean seconds per run)."""
        for p in self.procs:
            p.stdin.write(f"{seconds}\n")
            p.stdin.flush()
        outs = [json.loads(p.stdout.readline()) for p in self.procs]
        return sum(o[0] for o in outs), sum(o[1] for o in outs) / len(outs)

    def close(self):
        for p in self.procs:
            if p.stdin:
                p.stdin.close()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def engine_loop(model_path, data_path, threads, batch, rows, seconds, cpus=""):
    """The in-process loop on `threads` cores in its stronger layout: one session with `threads`
    intra-op threads, or `threads` one-thread sessions side by side (rows/s summed), so that neither
    of skiff's instance layouts is compared against the weaker of the two."""
    if threads == 1:
        return EngineLoop(model_path, data_path, 1, 1, batch, rows, cpus)
    best, best_rps = None, 0.0
    for sessions, t in [(1, threads), (threads, 1)]:
        loop = EngineLoop(model_path, data_path, sessions, t, batch, rows, cpus)
        rps = loop.window(seconds)[0]
        if rps > best_rps:
            if best:
                best.close()
            best, best_rps = loop, rps
        else:
            loop.close()
    return best


def scrape(url, model):
    """This model's batch-size histogram (cumulative buckets), its sum and count, and compute seconds."""
    import requests

    text = requests.get(url, timeout=5).text
    out = {"buckets": {}, "sum": 0.0, "count": 0.0, "compute_sum": 0.0, "compute_count": 0.0}
    tag = f'model="{model}"'
    for line in text.splitlines():
        if tag not in line or line.startswith("#"):
            continue
        name, value = line.rsplit(" ", 1)
        if name.startswith("skiff_inference_batch_size_bucket"):
            le = name.split('le="', 1)[1].split('"', 1)[0]
            out["buckets"][le] = float(value)
        elif name.startswith("skiff_inference_batch_size_sum"):
            out["sum"] = float(value)
        elif name.startswith("skiff_inference_batch_size_count"):
            out["count"] = float(value)
        elif name.startswith("skiff_inference_compute_duration_seconds_sum"):
            out["compute_sum"] = float(value)
        elif name.startswith("skiff_inference_compute_duration_seconds_count"):
            out["compute_count"] = float(value)
    return out


def histogram_delta(before, after):
    """Executions per batch-size bucket ("le" upper bound -> count) between two scrapes."""
    def key(le):
        return float("inf") if le == "+Inf" else float(le)

    les = sorted(after["buckets"], key=key)
    out, prev = {}, 0.0
    for le in les:
        cum = after["buckets"][le] - before["buckets"].get(le, 0.0)
        if cum - prev > 0:
            out[le] = int(cum - prev)
        prev = cum
    return out


def cpu_busy_seconds(cpus):
    """CPU time the CPUs of a taskset list have spent busy since boot (user, system, interrupts and
    softirqs alike: on loopback much of a server's TCP work runs as softirqs, which the kernel does
    not charge to the process)."""
    wanted = cpu_set(cpus)
    ticks = 0
    with open("/proc/stat") as f:
        for line in f:
            name, *fields = line.split()
            if name.startswith("cpu") and name != "cpu" and int(name[3:]) in wanted:
                user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
                ticks += user + nice + system + irq + softirq + steal
    return ticks / os.sysconf("SC_CLK_TCK")


def wrk_with_cpu(url, body, duration, conc, work, content_type, header_len, load_cpus, server_cpus):
    """`wrk`, plus the server CPUs' busy time per request (µs) when the server has CPUs of its own."""
    busy0 = cpu_busy_seconds(server_cpus) if server_cpus else 0.0
    r = wrk(url, body, duration, conc, work, content_type, header_len, cpus=load_cpus)
    r["cpu_us_per_request"] = ((cpu_busy_seconds(server_cpus) - busy0) / r["n"] * 1e6
                               if server_cpus and r["n"] else float("nan"))
    return r


def answer_bytes(url, body, content_type, header_len):
    """Length of the server's answer to one request (its body; the floor answers with as many)."""
    import requests

    headers = {"Content-Type": content_type}
    if header_len:
        headers["Inference-Header-Content-Length"] = str(header_len)
    resp = requests.post(url, data=body, headers=headers, timeout=10)
    resp.raise_for_status()
    return len(resp.content)


def percent(ratio, ratio_range):
    """`ratio` and its range as the efficiency lines print them: ` 78.0 % (70-86)`."""
    return f"{ratio * 100:5.1f} % ({ratio_range[0] * 100:.0f}-{ratio_range[1] * 100:.0f})"


def efficiency_point(args, work, metrics_url, url, name, rows, proto, conc, load, model_path, data_path, threads,
                     floor_port):
    """One point of the efficiency table: skiff under `load` and the in-process loop, alternating in
    windows of --window seconds, --windows times each. The engine's speed on a shared machine moves
    by a third from one second to the next, so each window of the server is set against the loop's
    window right after it and the table gives the median of those paired ratios."""
    # A first window finds the batch size skiff executes under this load, which the loop then runs.
    before = scrape(metrics_url, name)
    wrk(url, load[0], args.window, conc, work, *load[1:], cpus=args.load_cpus)
    probe = scrape(metrics_url, name)
    execs = probe["count"] - before["count"]
    # Run time is close to linear in the batch size for these models, so the engine's rows/s on the
    # mean executed batch is its rows/s over the mix.
    b = max(1, int(round((probe["sum"] - before["sum"]) / execs))) if execs else rows
    loop = engine_loop(model_path, data_path, threads, b, rows, args.window, args.server_cpus)
    # The issue's own reading of the limit: the loop on the batch size the clients send, which is
    # what the server would run without batching. Where skiff's batches are the requests' size the
    # two loops are one.
    try:
        req_loop = (engine_loop(model_path, data_path, threads, rows, rows, args.window, args.server_cpus)
                    if b != rows else None)
    except BaseException:
        loop.close()
        raise
    load0 = os.getloadavg()[0]
    server, engine, req_engine = [], [], []
    try:
        before = scrape(metrics_url, name)
        for _ in range(args.windows):
            server.append(wrk_with_cpu(url, load[0], args.window, conc, work, *load[1:], args.load_cpus,
                                       args.server_cpus))
            engine.append(loop.window(args.window))
            req_engine.append(req_loop.window(args.window) if req_loop else engine[-1])
        after = scrape(metrics_url, name)
    finally:
        loop.close()
        if req_loop:
            req_loop.close()
    execs = after["count"] - before["count"]
    served_rows = after["sum"] - before["sum"]
    mean_batch = served_rows / execs if execs else float("nan")
    compute_s = ((after["compute_sum"] - before["compute_sum"])
                 / max(after["compute_count"] - before["compute_count"], 1))
    median = lambda xs: float(np.median(xs))  # noqa: E731
    n = sum(r["n"] for r in server)

    def paired(loop_windows):
        """Median and range of the server's rows/s over the loop's, window by window."""
        ratios = [r["rps"] * rows / e[0] for r, e in zip(server, loop_windows)]
        return median(ratios), [min(ratios), max(ratios)]

    ratio, ratio_range = paired(engine)
    req_ratio, req_ratio_range = paired(req_engine)
    row = {"model": name, "rows_per_request": rows, "protocol": proto, "concurrency": conc,
           "windows": [{"rows_per_s": r["rps"] * rows, "inprocess_rows_per_s": e[0]} for r, e in zip(server, engine)],
           "req_per_s": median([r["rps"] for r in server]),
           "rows_per_s": median([r["rps"] * rows for r in server]),
           "p50_ms": median([r["p50"] for r in server]), "p99_ms": max(r["p99"] for r in server),
           "errors": sum(r["errors"] for r in server), "executions": int(execs),
           "mean_batch": mean_batch, "batch_histogram": histogram_delta(before, after),
           "server_compute_ms_per_request": compute_s * 1000,
           "inprocess_batch": b, "inprocess_rows_per_s": median([e[0] for e in engine]),
           "inprocess_ms_per_run": median([e[1] for e in engine]) * 1000, "inprocess_layout": loop.layout,
           "instances": args.instances, "server_cpus": args.server_cpus, "load_cpus": args.load_cpus,
           "ratio": ratio, "ratio_range": ratio_range,
           "request_batch_rows_per_s": median([e[0] for e in req_engine]),
           "request_batch_ratio": req_ratio, "request_batch_ratio_range": req_ratio_range,
           "load_average": (load0 + os.getloadavg()[0]) / 2,
           "server_cpu_us_per_request": (sum(r["cpu_us_per_request"] * r["n"] for r in server) / n
                                         if n else float("nan"))}
    # Share of the wall time skiff's inference threads spent in the engine, from its own compute
    # histogram: 100 % means the server keeps the engine saturated.
    row["engine_busy"] = ((served_rows / (args.window * args.windows)) * compute_s / mean_batch / args.instances
                          if execs else 0.0)
    if floor_port:
        size = answer_bytes(url, *load)
        f = wrk_with_cpu(f"http://127.0.0.1:{floor_port}/infer?bytes={size}", load[0], args.duration, conc, work,
                         *load[1:], args.load_cpus, args.server_cpus)
        # The engine's CPU time for one request's rows at the in-process rate, against that plus
        # what the floor spends moving the request: the share of the in-process rate a server on
        # this stack could reach at best.
        engine_us = rows * threads / row["inprocess_rows_per_s"] * 1e6
        row["floor_cpu_us_per_request"] = f["cpu_us_per_request"]
        row["floor_bound"] = engine_us / (engine_us + f["cpu_us_per_request"])
    print(f"{name:<10} rows={rows:<3} {proto:<11} c={conc:<3} {row['rows_per_s']:>10.0f} rows/s"
          f"  p50 {row['p50_ms']:6.2f} p99 {row['p99_ms']:6.2f} ms  batch {mean_batch:5.1f}"
          f" {row['batch_histogram']}  ORT b={b} {loop.layout} {row['inprocess_rows_per_s']:>10.0f} rows/s"
          f" ({row['inprocess_ms_per_run']:.3f} ms/run)  ratio {percent(ratio, ratio_range)}"
          f"  ORT b={rows} {row['request_batch_rows_per_s']:>10.0f} rows/s ratio {percent(req_ratio, req_ratio_range)}"
          f"  engine busy {row['engine_busy'] * 100:4.0f} %  err {row['errors']}  load {row['load_average']:.1f}"
          f"  cpu/req {row['server_cpu_us_per_request']:.1f} us"
          + (f", floor {row['floor_cpu_us_per_request']:.1f} us, bound {row['floor_bound'] * 100:.0f} %"
             if floor_port else ""),
          flush=True)
    return row


def efficiency(args, work, log):
    """Runs the engine-efficiency table; returns its rows."""
    # "split": the server and the in-process loop get the same CPUs and the load generator the
    # others, as with a separate client machine, so both sides of the ratio have the same CPUs.
    # "shared": all three share every CPU, and the loop has them to itself while it runs.
    if args.cpu_layout == "split" and not (args.server_cpus or args.load_cpus):
        args.server_cpus, args.load_cpus = split_cpus()
    threads = cpu_count(args.server_cpus) if args.server_cpus else args.threads
    models = compute_models(args.forest_trees, args.boost_trees)
    repo = os.path.join(work, "compute-repo")
    for name, (data, _) in models.items():
        os.makedirs(os.path.join(repo, name, "1"))
        with open(os.path.join(repo, name, "1", "model.onnx"), "wb") as f:
            f.write(data)
    hp = free_port()
    env = dict(os.environ, SKIFF_PYTHON=sys.executable, RUST_LOG="warn")
    cmd = pinned(args.server_cpus, skiff_cmd()) + [
        "--model-repository", repo, "--host", "127.0.0.1", "--http-port", str(hp), "--no-grpc",
        "--threads", str(threads), "--instances", str(args.instances), "--max-batch-size", str(args.max_batch_size),
        "--batch-delay-ms", str(args.batch_delay_ms), "--poll-interval-ms", "0"]
    print(f"\nengine efficiency: {' '.join(cmd)}; load generator on CPUs {args.load_cpus or 'all'}", flush=True)
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    for name, (_, x) in models.items():
        np.save(os.path.join(work, f"{name}.npy"), x[:256])
    proc = spawn(cmd, env=env, log=log)
    # The HTTP floor (examples/http_floor.rs) runs on the server's CPUs beside it, idle except while
    # it is driven; it needs CPUs of its own to charge its time to, so the shared layout skips it.
    floor, fp = None, free_port()
    if args.server_cpus:
        floor = spawn(pinned(args.server_cpus, [example_binary("http_floor"), "--port", str(fp)]), log=log)
    rows_out = []
    try:
        wait_http(f"http://127.0.0.1:{hp}/v2/health/ready", proc, proc.started)
        if floor is not None:
            wait_http(f"http://127.0.0.1:{fp}/", floor, floor.started)
        metrics_url = f"http://127.0.0.1:{hp}/metrics"
        for name, (_, x) in models.items():
            url = f"http://127.0.0.1:{hp}/v2/models/{name}/infer"
            for rows in args.rows:
                batch = np.ascontiguousarray(x[:rows])
                raw = batch.astype("<f4").tobytes()
                header = json.dumps({"inputs": [{"name": "X", "shape": [rows, N_FEATURES], "datatype": "FP32",
                                                 "parameters": {"binary_data_size": len(raw)}}],
                                     "parameters": {"binary_data_output": True}}).encode()
                js = json.dumps({"inputs": [{"name": "X", "shape": [rows, N_FEATURES], "datatype": "FP32",
                                             "data": batch.flatten().tolist()}]}).encode()
                for conc in args.eff_levels:
                    for proto in ["REST binary", "REST JSON"]:
                        if proto == "REST binary":
                            load = (header + raw, "application/octet-stream", len(header))
                        else:
                            load = (js, "application/json", None)
                        row = efficiency_point(args, work, metrics_url, url, name, rows, proto, conc, load,
                                               os.path.join(repo, name, "1", "model.onnx"),
                                               os.path.join(work, f"{name}.npy"), threads,
                                               fp if floor is not None else None)
                        rows_out.append(row)
    finally:
        stop(proc)
        if floor is not None:
            stop(floor)
    return rows_out


def v2_json(input_name):
    return json.dumps({"inputs": [{"name": input_name, "shape": [1, 4], "datatype": "FP32", "data": [ROW]}]}).encode()


def v2_binary(input_name):
    raw = np.array([ROW], dtype="<f4").tobytes()
    header = json.dumps({"inputs": [{"name": input_name, "shape": [1, 4], "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(raw)}}],
                         "parameters": {"binary_data_output": True}}).encode()
    return header + raw, len(header)


def skiff_cmd():
    cmd = os.environ.get("SKIFF_SERVE_CMD")
    if cmd:
        return shlex.split(cmd)
    return [example_binary("serve")]


FLASK_APP = """
import os, joblib, numpy as np
from flask import Flask, request, jsonify
app = Flask(__name__)
model = joblib.load(os.environ["MODEL_PATH"])

@app.post("/predict")
def predict():
    x = np.array(request.get_json()["instances"], dtype=np.float32)
    return jsonify({"predictions": model.predict(x).tolist()})

@app.get("/health")
def health():
    return {"status": "ok"}
"""

FASTAPI_APP = """
import os, numpy as np, onnxruntime as ort
from fastapi import FastAPI
from pydantic import BaseModel
so = ort.SessionOptions()
so.intra_op_num_threads = 1
sess = ort.InferenceSession(os.environ["MODEL_PATH"], so, providers=["CPUExecutionProvider"])
app = FastAPI()

class Req(BaseModel):
    instances: list[list[float]]

@app.post("/predict")
def predict(req: Req):
    label, _ = sess.run(None, {"X": np.array(req.instances, dtype=np.float32)})
    return {"predictions": label.tolist()}

@app.get("/health")
def health():
    return {"status": "ok"}
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=5, help="seconds per concurrency level")
    ap.add_argument("--levels", default="1,16,64")
    ap.add_argument("--only", default="",
                    help="comma list of: skiff,mlserver,flask,fastapi,inprocess,efficiency")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="efficiency: intra-op threads, for skiff (--threads) and in-process onnxruntime alike")
    ap.add_argument("--max-batch-size", type=int, default=64, help="efficiency: skiff --max-batch-size")
    ap.add_argument("--instances", type=int, default=1,
                    help="efficiency: skiff --instances (each gets threads/instances intra-op threads)")
    ap.add_argument("--batch-delay-ms", type=float, default=0.0,
                    help="efficiency: skiff --batch-delay-ms (0, the server default: merge what is queued)")
    ap.add_argument("--rows", default="1,32,64", help="efficiency: rows per request")
    ap.add_argument("--eff-levels", default="16,64", help="efficiency: concurrency levels")
    ap.add_argument("--forest-trees", type=int, default=200)
    ap.add_argument("--boost-trees", type=int, default=300)
    ap.add_argument("--window", type=int, default=1,
                    help="efficiency: seconds of each alternating window (server, then in-process loop)")
    ap.add_argument("--windows", type=int, default=5, help="efficiency: windows of each per point")
    ap.add_argument("--cpu-layout", choices=["split", "shared"], default="split",
                    help="efficiency: split = skiff and the in-process loop on one half of the CPUs, wrk on "
                         "the other; shared = everything on all CPUs")
    ap.add_argument("--server-cpus", default="",
                    help="efficiency: pin skiff and the in-process loop to these CPUs (taskset list, e.g. 0); "
                         "threads follow their count (overrides --cpu-layout)")
    ap.add_argument("--load-cpus", default="", help="efficiency: pin wrk to these CPUs (e.g. 1)")
    ap.add_argument("--json", help="also write results here")
    args = ap.parse_args()
    levels = [int(c) for c in args.levels.split(",")]
    args.rows = [int(r) for r in args.rows.split(",")]
    args.eff_levels = [int(c) for c in args.eff_levels.split(",")]
    only = set(filter(None, args.only.split(",")))
    want = lambda name: not only or name in only  # noqa: E731
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed for HTTP load (apt-get install wrk)")
    py = sys.executable
    bindir = os.path.dirname(py)
    work = tempfile.mkdtemp(prefix="skiff-bench-")
    log = open(os.path.join(work, "servers.log"), "w")
    models = build_models()
    x, y = iris()
    from sklearn.linear_model import LogisticRegression
    import joblib

    sk = LogisticRegression(max_iter=500).fit(x, y)
    joblib.dump(sk, os.path.join(work, "model.joblib"))
    onnx_path = os.path.join(work, "model.onnx")
    with open(onnx_path, "wb") as f:
        f.write(models["iris"])
    results, extra = [], {}

    def record(server, proto, conc, r):
        results.append({"server": server, "protocol": proto, "concurrency": conc, **r})
        print(f"{server:<24} {proto:<12} c={conc:<3} {r['rps']:>9.0f} req/s  p50 {r['p50']:7.2f} ms"
              f"  p99 {r['p99']:7.2f} ms  errors {r['errors']}", flush=True)

    if want("skiff"):
        repo = os.path.join(work, "repo")
        for name in ["iris", "forest", "boost"]:
            os.makedirs(os.path.join(repo, name, "1"))
            with open(os.path.join(repo, name, "1", "model.onnx"), "wb") as f:
                f.write(models[name])
        hp, gp = free_port(), free_port()
        env = dict(os.environ, SKIFF_PYTHON=py, RUST_LOG="warn")
        proc = spawn(skiff_cmd() + ["--model-repository", repo, "--host", "127.0.0.1", "--http-port", str(hp),
                                    "--grpc-port", str(gp), "--max-batch-size", "32", "--batch-delay-ms", "0"],
                     env=env, log=log)
        try:
            extra["skiff start-to-ready (s)"] = wait_http(f"http://127.0.0.1:{hp}/v2/health/ready", proc, proc.started)
            url = f"http://127.0.0.1:{hp}/v2/models/iris/infer"
            body, hl = v2_binary("X")
            for c in levels:
                record("skiff serve", "REST JSON", c, wrk(url, v2_json("X"), args.duration, c, work))
                record("skiff serve", "REST binary", c,
                       wrk(url, body, args.duration, c, work, "application/octet-stream", hl))
                record("skiff serve", "/predict", c,
                       wrk(f"http://127.0.0.1:{hp}/predict?model=iris", json.dumps({"instances": [ROW]}).encode(),
                           args.duration, c, work))
                record("skiff serve", "gRPC", c, grpc_load(f"127.0.0.1:{gp}", "iris", "X", args.duration, c, work))
            extra["skiff RSS with 3 models (MB)"] = rss_mb(proc.pid)
        finally:
            stop(proc)

    if want("mlserver"):
        mdir = os.path.join(work, "mlserver")
        os.makedirs(os.path.join(mdir, "iris"))
        shutil.copy(os.path.join(work, "model.joblib"), os.path.join(mdir, "iris", "model.joblib"))
        hp, gp, mp = free_port(), free_port(), free_port()
        with open(os.path.join(mdir, "settings.json"), "w") as f:
            json.dump({"host": "127.0.0.1", "http_port": hp, "grpc_port": gp, "metrics_port": mp}, f)
        with open(os.path.join(mdir, "iris", "model-settings.json"), "w") as f:
            json.dump({"name": "iris", "implementation": "mlserver_sklearn.SKLearnModel",
                       "parameters": {"uri": "./model.joblib", "version": "1"}}, f)
        proc = spawn([os.path.join(bindir, "mlserver"), "start", mdir], log=log)
        try:
            extra["MLServer start-to-ready (s)"] = wait_http(f"http://127.0.0.1:{hp}/v2/models/iris/ready", proc, proc.started)
            url = f"http://127.0.0.1:{hp}/v2/models/iris/infer"
            for c in levels:
                record("MLServer (sklearn)", "REST JSON", c, wrk(url, v2_json("predict"), args.duration, c, work))
                record("MLServer (sklearn)", "gRPC", c,
                       grpc_load(f"127.0.0.1:{gp}", "iris", "predict", args.duration, c, work))
            extra["MLServer RSS (MB)"] = rss_mb(proc.pid)
        finally:
            stop(proc)

    for name, app_src, cmd in [
        ("flask", FLASK_APP, lambda port: [os.path.join(bindir, "gunicorn"), "-w", "2", "-b",
                                           f"127.0.0.1:{port}", "flask_bench:app"]),
        ("fastapi", FASTAPI_APP, lambda port: [os.path.join(bindir, "uvicorn"), "--workers", "2", "--host",
                                               "127.0.0.1", "--port", str(port), "--log-level", "warning",
                                               "fastapi_bench:app"]),
    ]:
        if not want(name):
            continue
        with open(os.path.join(work, f"{name}_bench.py"), "w") as f:
            f.write(app_src)
        port = free_port()
        model = os.path.join(work, "model.joblib" if name == "flask" else "model.onnx")
        proc = spawn(cmd(port), env=dict(os.environ, MODEL_PATH=model), cwd=work, log=log)
        label = {"flask": "Flask + gunicorn (2 w)", "fastapi": "FastAPI + ORT (2 w)"}[name]
        try:
            extra[f"{label} start-to-ready (s)"] = wait_http(f"http://127.0.0.1:{port}/health", proc, proc.started)
            for c in levels:
                record(label, "/predict", c, wrk(f"http://127.0.0.1:{port}/predict",
                                                 json.dumps({"instances": [ROW]}).encode(), args.duration, c, work))
            extra[f"{label} RSS (MB)"] = rss_mb(proc.pid)
        finally:
            stop(proc)

    if want("inprocess"):
        for batch in [1, 32]:
            record("onnxruntime in-process", f"batch {batch}", 1, in_process(models["iris"], args.duration, batch))

    efficiency_rows = efficiency(args, work, log) if want("efficiency") else []

    print()
    for k, v in extra.items():
        print(f"{k}: {v:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "extra": extra, "efficiency": efficiency_rows}, f, indent=1)
    log.close()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
