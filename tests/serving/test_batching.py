"""Dynamic batching under concurrency: mixed batch sizes each get exactly their own rows back."""

import json
import random
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import requests
import tritonclient.grpc as grpcclient
from conftest import assert_close, expected


def metric(text, name):
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def test_concurrent_mixed_batches(start_server, repository, reference, iris_x):
    s = start_server(["--model-repository", str(repository), "--max-batch-size", "16", "--batch-delay-ms", "5"])
    rng = random.Random(3)
    jobs = []
    for i in range(400):
        rows = rng.randint(1, 7)
        start = rng.randint(0, len(iris_x) - rows)
        jobs.append((i, start, rows))
    session = requests.Session()

    def run(job):
        i, start, rows = job
        x = iris_x[start:start + rows]
        body = {"id": str(i), "inputs": [{"name": "X", "shape": [rows, 4], "datatype": "FP32", "data": x.tolist()}]}
        r = session.post(f"{s.url}/v2/models/pipeline/infer", data=json.dumps(body), timeout=30)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["id"] == str(i)
        want = expected(reference, "pipeline", x)
        for o in out["outputs"]:
            assert_close(np.array(o["data"]).reshape(o["shape"]), want[o["name"]], o["name"])
        return rows

    with ThreadPoolExecutor(32) as pool:
        total_rows = sum(pool.map(run, jobs))
    text = requests.get(s.url + "/metrics", timeout=10).text
    labels = '{model="pipeline",version="1"}'
    executions = metric(text, "skiff_inference_batch_size_count" + labels)
    rows_run = metric(text, "skiff_inference_batch_size_sum" + labels)
    assert rows_run == total_rows
    assert executions < len(jobs), "no request was merged with another"
    # No execution went over the limit.
    assert metric(text, 'skiff_inference_batch_size_bucket{le="16.0",model="pipeline",version="1"}') == executions


def test_grpc_concurrent_batches(start_server, repository, reference, iris_x):
    s = start_server(["--model-repository", str(repository), "--max-batch-size", "32", "--batch-delay-ms", "2"])
    c = grpcclient.InferenceServerClient(s.grpc)

    def run(i):
        rows = 1 + i % 5
        x = iris_x[i % 100:i % 100 + rows]
        inp = grpcclient.InferInput("X", [rows, 4], "FP32")
        inp.set_data_from_numpy(x)
        r = c.infer("forest", [inp])
        want = expected(reference, "forest", x)
        for name, value in want.items():
            assert_close(r.as_numpy(name), value, name)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(run, range(200)))


def test_requests_are_not_merged_unless_asked(start_server, tmp_path):
    """A model that combines rows (a cumulative sum over the first axis) must answer each client
    from its own rows: batching is opt-in, as in Triton and MLServer."""
    from onnx import TensorProto, helper

    axis = helper.make_tensor("axis", TensorProto.INT64, [], [0])
    graph = helper.make_graph(
        [helper.make_node("CumSum", ["X", "axis"], ["Y"])], "cumsum",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 2])], [axis])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    path = tmp_path / "cumsum.onnx"
    path.write_bytes(model.SerializeToString())
    s = start_server(["--model", f"cumsum={path}"])
    session = requests.Session()

    def run(i):
        body = {"inputs": [{"name": "X", "shape": [1, 2], "datatype": "FP32", "data": [i, i]}]}
        r = session.post(f"{s.url}/v2/models/cumsum/infer", data=json.dumps(body), timeout=30)
        assert r.status_code == 200, r.text
        return r.json()["outputs"][0]["data"] == [i, i]

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(run, range(1, 801)))
    assert all(answers), f"{answers.count(False)} of {len(answers)} answers mixed other clients' rows"
    text = requests.get(s.url + "/metrics", timeout=10).text
    labels = '{model="cumsum",version="1"}'
    assert metric(text, "skiff_inference_batch_size_sum" + labels) == metric(
        text, "skiff_inference_batch_size_count" + labels) == 800
