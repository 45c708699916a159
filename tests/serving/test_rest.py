"""Open Inference Protocol REST, KServe V1, /predict, errors and metrics against onnxruntime in Python."""

import json
import shutil
import struct
import time

import numpy as np
import pytest
import requests
from conftest import assert_close, expected, features_for

MODELS = ["iris", "forest", "boost", "pipeline"]
DT = {"tensor(float)": "FP32", "tensor(int64)": "INT64", "tensor(double)": "FP64"}


def infer(server, model, body, **kw):
    return requests.post(f"{server.url}/v2/models/{model}/infer", data=json.dumps(body), timeout=30, **kw)


@pytest.mark.parametrize("model", MODELS)
def test_metadata_comes_from_the_graph(server, reference, model):
    r = requests.get(f"{server.url}/v2/models/{model}", timeout=10)
    assert r.status_code == 200, r.text
    meta = r.json()
    sess = reference[model]
    assert meta["name"] == model
    assert meta["versions"] == ["1"]
    assert meta["platform"] == "onnxruntime_onnx"
    for got, want in [(meta["inputs"], sess.get_inputs()), (meta["outputs"], sess.get_outputs())]:
        assert [t["name"] for t in got] == [w.name for w in want]
        assert [t["datatype"] for t in got] == [DT[w.type] for w in want]
        assert [t["shape"] for t in got] == [[-1 if d is None or isinstance(d, str) else d for d in w.shape] for w in want]
    assert requests.get(f"{server.url}/v2/models/{model}/versions/1", timeout=10).status_code == 200
    # A version asked for as "01" is version 1, and is named as the server names it.
    assert requests.get(f"{server.url}/v2/models/{model}/versions/01", timeout=10).json()["versions"] == ["1"]
    assert requests.get(f"{server.url}/v2/models/{model}/ready", timeout=10).json()["ready"] is True


def test_server_endpoints(server):
    assert requests.get(server.url + "/v2/health/live", timeout=10).status_code == 200
    assert requests.get(server.url + "/v2/health/ready", timeout=10).status_code == 200
    assert requests.get(server.url + "/health", timeout=10).json() == {"status": "ok"}
    meta = requests.get(server.url + "/v2", timeout=10).json()
    assert meta["name"] == "skiff"
    assert "binary_tensor_data" in meta["extensions"]


@pytest.mark.parametrize("model", MODELS)
def test_json_infer_matches_onnxruntime(server, reference, iris_x, model):
    x = features_for(model, iris_x)
    want = expected(reference, model, x)
    r = infer(server, model, {"id": "q1", "inputs": [
        {"name": "X", "shape": list(x.shape), "datatype": "FP32", "data": x.tolist()}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == model and body["model_version"] == "1" and body["id"] == "q1"
    assert [o["name"] for o in body["outputs"]] == list(want)
    for o in body["outputs"]:
        assert_close(np.array(o["data"]).reshape(o["shape"]), want[o["name"]], o["name"])


@pytest.mark.parametrize("model", MODELS)
def test_binary_infer_matches_onnxruntime(server, reference, iris_x, model):
    x = features_for(model, iris_x[:37])
    want = expected(reference, model, x)
    raw = x.astype("<f4").tobytes()
    header = json.dumps({
        "inputs": [{"name": "X", "shape": list(x.shape), "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)}}],
        "parameters": {"binary_data_output": True},
    }).encode()
    r = requests.post(f"{server.url}/v2/models/{model}/infer", data=header + raw, timeout=30,
                      headers={"Inference-Header-Content-Length": str(len(header)),
                               "Content-Type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    n = int(r.headers["Inference-Header-Content-Length"])
    head = json.loads(r.content[:n])
    offset = n
    for o in head["outputs"]:
        size = o["parameters"]["binary_data_size"]
        dtype = {"FP32": "<f4", "INT64": "<i8"}[o["datatype"]]
        got = np.frombuffer(r.content[offset:offset + size], dtype=dtype).reshape(o["shape"])
        offset += size
        assert_close(got, want[o["name"]], o["name"])
    assert offset == len(r.content)


def test_output_selection_and_mixed_binary(server, reference, iris_x):
    x = iris_x[:5]
    want = expected(reference, "iris", x)
    header = {"inputs": [{"name": "X", "shape": [5, 4], "datatype": "FP32", "data": x.flatten().tolist()}],
              "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}]}
    r = infer(server, "iris", header)
    assert r.status_code == 200, r.text
    n = int(r.headers["Inference-Header-Content-Length"])
    head = json.loads(r.content[:n])
    assert [o["name"] for o in head["outputs"]] == ["probabilities"]
    assert_close(np.frombuffer(r.content[n:], dtype="<f4").reshape(5, 3), want["probabilities"])
    r = infer(server, "iris", {"inputs": header["inputs"], "outputs": [{"name": "label"}]})
    assert [o["name"] for o in r.json()["outputs"]] == ["label"]
    assert r.json()["outputs"][0]["data"] == want["label"].tolist()


def test_simple_predict_and_kserve_v1(server, reference, iris_x):
    x = iris_x[10:14]
    want = expected(reference, "pipeline", x)
    r = requests.post(server.url + "/predict?model=pipeline", json={"instances": x.tolist()}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == want["label"].tolist()
    assert r.json()["model_version"] == "1"
    assert_close(np.array(r.json()["outputs"]["probabilities"], dtype=np.float32), want["probabilities"])
    r = requests.post(server.url + "/predict", json={"model": "pipeline", "features": x[0].tolist()}, timeout=10)
    assert r.json()["predictions"] == want["label"][:1].tolist()
    r = requests.post(server.url + "/v1/models/boost:predict", json={"instances": x[:, :3].tolist()}, timeout=10)
    assert r.status_code == 200, r.text
    assert_close(np.array(r.json()["predictions"], dtype=np.float32), expected(reference, "boost", x[:, :3])["variable"])
    assert requests.get(server.url + "/v1/models/iris", timeout=10).json() == {"name": "iris", "ready": True}
    # Several models are served: /predict must be told which.
    r = requests.post(server.url + "/predict", json={"features": x[0].tolist()}, timeout=10)
    assert r.status_code == 400 and "model" in r.json()["error"]
    # Ambiguous bodies are refused, saying what clashes, rather than one reading picked.
    for url, body, needle in [
        ("/predict?model=iris", {"features": x[0].tolist(), "instances": x.tolist()},
         'rows under "instances" and "features"; give them once'),
        ("/predict?model=iris", {"model": "boost", "features": x[0].tolist()},
         'the query names the model "iris" and the body "boost"'),
        ("/predict", {"model": 5, "features": x[0].tolist()}, '"model" must be a string'),
        ("/predict?model=iris", {"features": []}, "features is empty"),
        ("/v1/models/iris:predict", {"inputs": x.tolist(), "instances": x.tolist()}, "give them once"),
    ]:
        r = requests.post(server.url + url, json=body, timeout=10)
        assert r.status_code == 400 and needle in r.json()["error"], (body, r.text)
    # A null model is no model named.
    r = requests.post(server.url + "/predict?model=iris", json={"model": None, "features": x[0].tolist()}, timeout=10)
    assert r.status_code == 200, r.text
    # Python's json writes NaN bare; it is read as the string "NaN" would be.
    r = requests.post(server.url + "/predict?model=boost", data=json.dumps({"features": [float("nan"), 1.0, 2.0]}),
                      timeout=10)
    assert r.status_code == 200, r.text


def x_input(shape, datatype="FP32", data=None):
    n = int(np.prod(shape))
    return {"name": "X", "shape": shape, "datatype": datatype, "data": data if data is not None else [1.0] * n}


@pytest.mark.parametrize("body,status,needle", [
    ({"inputs": [x_input([1, 3])]}, 400, "expected shape [-1, 4]"),
    ({"inputs": [x_input([1, 4], "FP64")]}, 400, "expected datatype FP32"),
    ({"inputs": [x_input([2, 4], data=[1.0] * 7)]}, 400, "needs 8 elements but 7"),
    ({"inputs": [x_input([1, 4], data=["a", 1, 2, 3])]}, 400, "not a valid FP32"),
    ({"inputs": [{"name": "Y", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}, 400, "not an input"),
    ({"inputs": []}, 400, 'missing input "X"'),
    ({"inputs": [x_input([1, 4])], "outputs": [{"name": "nope"}]}, 400, "unknown output"),
    ({"inputs": [x_input([1, 4])], "outputs": [{"name": "label"}, {"name": "label"}]}, 400, "requested twice"),
    ({"inputs": [x_input([1, 4], "FP99")]}, 400, "unknown datatype"),
])
def test_bad_inputs_are_400_with_reason(server, body, status, needle):
    r = infer(server, "iris", body)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]


def test_malformed_and_unknown(server):
    r = requests.post(f"{server.url}/v2/models/iris/infer", data=b"{not json", timeout=10)
    assert r.status_code == 400 and "malformed JSON" in r.json()["error"]
    r = requests.post(f"{server.url}/v2/models/nope/infer", data=b"{}", timeout=10)
    assert r.status_code == 404 and "nope" in r.json()["error"]
    assert requests.get(f"{server.url}/v2/models/nope", timeout=10).status_code == 404
    assert requests.get(f"{server.url}/v2/models/iris/versions/9", timeout=10).status_code == 404
    r = requests.post(f"{server.url}/v2/models/iris/infer", data=b"{}",
                      headers={"Inference-Header-Content-Length": "5000"}, timeout=10)
    assert r.status_code == 400
    r = requests.post(f"{server.url}/v2/models/iris/infer", data=b"\xff\xfe\x00garbage", timeout=10)
    assert r.status_code == 400
    r = requests.post(f"{server.url}/v2/models/iris/infer", data=b"\x1f\x8b", timeout=10,
                      headers={"Content-Encoding": "gzip"})
    assert r.status_code == 415 and "send the request body uncompressed" in r.json()["error"]
    r = requests.post(f"{server.url}/predict?model=iris", json={"instances": []}, timeout=10)
    assert r.status_code == 400 and "instances is empty" in r.json()["error"]
    r = requests.get(f"{server.url}/v2/models/iris/infer", timeout=10)
    assert r.status_code == 405 and "GET is not allowed" in r.json()["error"]
    # The server survived all of that.
    assert requests.get(server.url + "/v2/health/live", timeout=10).status_code == 200


def test_oversized_body_is_400(start_server, repository):
    s = start_server(["--model-repository", str(repository), "--max-body-bytes", "1000", "--no-grpc"])
    r = requests.post(f"{s.url}/v2/models/iris/infer",
                      data=json.dumps({"inputs": [x_input([100, 4])]}), timeout=10)
    assert r.status_code == 400 and "larger than the 1000 byte limit" in r.json()["error"]
    # A body cut off before its Content-Length is not called too large.
    import socket
    with socket.create_connection((s.url.removeprefix("http://").split(":")[0], int(s.url.rsplit(":", 1)[1]))) as c:
        c.sendall(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 150\r\n\r\n" + b'{"inputs": [{"name": "X"')
        c.shutdown(socket.SHUT_WR)
        c.settimeout(10)
        answer = b""
        while chunk := c.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400"), answer
    assert b"could not be read to its end" in answer, answer


def test_metrics_count_requests_and_failures(server, iris_x):
    before = requests.get(server.url + "/metrics", timeout=10).text
    infer(server, "forest", {"inputs": [x_input([2, 4])]})
    infer(server, "forest", {"inputs": [x_input([2, 3])]})
    # A body that does not decode counts as a failed request of the model it was sent to.
    requests.post(f"{server.url}/v2/models/forest/infer", data=b"{not json", timeout=10)
    text = requests.get(server.url + "/metrics", timeout=10).text

    def value(t, name):
        for line in t.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        return 0.0

    labels = '{model="forest",version="1"}'
    assert value(text, "skiff_inference_requests_total" + labels) == value(before, "skiff_inference_requests_total" + labels) + 3
    assert value(text, "skiff_inference_failures_total" + labels) == value(before, "skiff_inference_failures_total" + labels) + 2
    for family in ["queue_duration_seconds", "compute_duration_seconds", "batch_size", "request_duration_seconds"]:
        assert f"skiff_inference_{family}_count{labels}" in text, family


def test_repository_extension_rest(start_server, repository):
    s = start_server(["--model-repository", str(repository), "--no-grpc"])
    index = requests.post(s.url + "/v2/repository/index", timeout=10).json()
    assert {(m["name"], m["state"]) for m in index} >= {("iris", "READY"), ("boost", "READY")}
    assert requests.post(s.url + "/v2/repository/models/iris/unload", timeout=10).status_code == 200
    assert requests.get(s.url + "/v2/models/iris/ready", timeout=10).status_code == 503
    assert requests.get(s.url + "/v2/health/ready", timeout=10).status_code == 200
    ready_only = requests.post(s.url + "/v2/repository/index", json={"ready": True}, timeout=10).json()
    assert "iris" not in {m["name"] for m in ready_only}
    assert requests.post(s.url + "/v2/repository/models/iris/load", timeout=10).status_code == 200
    assert requests.get(s.url + "/v2/models/iris/ready", timeout=10).status_code == 200
    assert requests.post(s.url + "/v2/repository/models/nope/load", timeout=10).status_code == 404


def test_short_form_and_settings(start_server, tmp_path, onnx_models, reference, iris_x):
    path = tmp_path / "m.onnx"
    path.write_bytes(onnx_models["forest"])
    s = start_server(["--model", f"trees={path}", "--no-grpc"])
    r = requests.post(s.url + "/predict", json={"instances": iris_x[:3].tolist()}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == expected(reference, "forest", iris_x[:3])["label"].tolist()
    # model-settings.json pins an older version.
    root = tmp_path / "repo"
    for v, name in [(1, "iris"), (2, "forest")]:
        (root / "m" / str(v)).mkdir(parents=True)
        (root / "m" / str(v) / "model.onnx").write_bytes(onnx_models[name])
    s = start_server(["--model-repository", str(root), "--no-grpc"])
    assert requests.get(s.url + "/v2/models/m", timeout=10).json()["versions"] == ["2"]
    s.stop()
    (root / "m" / "model-settings.json").write_text(json.dumps({"name": "m", "parameters": {"version": "1"}}))
    s = start_server(["--model-repository", str(root), "--no-grpc"])
    assert requests.get(s.url + "/v2/models/m", timeout=10).json()["versions"] == ["1"]
    r = requests.post(s.url + "/predict", json={"instances": iris_x[:3].tolist()}, timeout=10)
    assert r.json()["model_version"] == "1"


def test_bad_model_exits_or_is_reported(start_server, tmp_path, onnx_models):
    from conftest import Server

    (tmp_path / "good" / "1").mkdir(parents=True)
    (tmp_path / "good" / "1" / "model.onnx").write_bytes(onnx_models["iris"])
    (tmp_path / "bad" / "1").mkdir(parents=True)
    (tmp_path / "bad" / "1" / "model.onnx").write_bytes(b"not a model")
    # By default a model that cannot load stops the start, naming it (a pod crash-loops with
    # the reason in its log instead of serving half a repository).
    with pytest.raises(RuntimeError, match=r'1 of 2 models failed to load[\s\S]*model "bad": cannot load'):
        Server(["--model-repository", str(tmp_path), "--no-grpc"])
    with pytest.raises(RuntimeError, match="failed to load"):
        Server(["--model", f"x={tmp_path / 'missing.onnx'}", "--no-grpc"])
    (tmp_path / "empty").mkdir()
    # Told to go on, it serves the others, reports and logs the bad ones, and is ready.
    s = start_server(["--model-repository", str(tmp_path), "--no-grpc", "--exit-on-error", "false"])
    assert requests.get(s.url + "/v2/models/good/ready", timeout=10).status_code == 200
    r = requests.get(s.url + "/v2/models/bad/ready", timeout=10)
    assert r.status_code == 503 and "cannot load" in r.json()["error"]
    assert requests.get(s.url + "/v2/health/ready", timeout=10).status_code == 200
    index = requests.post(s.url + "/v2/repository/index", timeout=10).json()
    assert {(m["name"], m["state"]) for m in index} == {
        ("good", "READY"), ("bad", "UNAVAILABLE"), ("empty", "UNAVAILABLE")}
    log = s.output()
    assert 'model="bad"' in log and 'cannot load model="empty"' in log, log
    # The only model that serves is the one /predict uses when none is named.
    r = requests.post(s.url + "/predict", json={"features": [5.1, 3.5, 1.4, 0.2]}, timeout=10)
    assert r.status_code == 200, r.text


def test_removed_model_directory_is_no_longer_served(start_server, tmp_path, onnx_models):
    for name in ["keep", "gone"]:
        (tmp_path / name / "1").mkdir(parents=True)
        (tmp_path / name / "1" / "model.onnx").write_bytes(onnx_models["iris"])
    s = start_server(["--model-repository", str(tmp_path), "--no-grpc", "--poll-interval-ms", "100"])
    assert requests.get(s.url + "/v2/models/gone/ready", timeout=10).status_code == 200
    shutil.rmtree(tmp_path / "gone")
    deadline = time.monotonic() + 10
    while requests.get(s.url + "/v2/models/gone", timeout=10).status_code != 404:
        assert time.monotonic() < deadline, "the removed model is still served"
        time.sleep(0.05)
    assert requests.get(s.url + "/v2/health/ready", timeout=10).status_code == 200
    assert [m["name"] for m in requests.post(s.url + "/v2/repository/index", timeout=10).json()] == ["keep"]


def test_settings_name_must_match_the_directory(start_server, tmp_path, onnx_models):
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "model.onnx").write_bytes(onnx_models["iris"])
    (tmp_path / "m" / "model-settings.json").write_text(json.dumps({"name": "other"}))
    s = start_server(["--model-repository", str(tmp_path), "--no-grpc", "--exit-on-error", "false"])
    r = requests.get(s.url + "/v2/models/m/ready", timeout=10)
    assert r.status_code == 503 and 'name the model "other" but its directory is "m"' in r.json()["error"]


def test_command_line_conflicts_are_refused(tmp_path, onnx_models, repository):
    from conftest import Server

    path = tmp_path / "m.onnx"
    path.write_bytes(onnx_models["iris"])
    for args, needle in [
        (["--model", f"a={path}", "--model", f"a={path}"], "given twice"),
        (["--model", f"iris={path}", "--model-repository", str(repository)], "also holds"),
        (["--model", f"a={path}", "--instances", "0"], "at least 1"),
        (["--model", f"a={path}", "--max-batch-size", "0"], "at least 1"),
    ]:
        with pytest.raises(RuntimeError, match=needle):
            Server(args + ["--no-grpc"])


TRITON_CONFIG = """
name: "m"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "X", data_type: TYPE_FP32, dims: [ 4 ] } ]
dynamic_batching { max_queue_delay_microseconds: 100 }
instance_group [ { count: 2, kind: KIND_CPU } ]
version_policy: { specific: { versions: [ 1 ] } }
"""


def test_triton_config_pbtxt(start_server, tmp_path, onnx_models, iris_x):
    for v, name in [(1, "iris"), (2, "forest")]:
        (tmp_path / "m" / str(v)).mkdir(parents=True)
        (tmp_path / "m" / str(v) / "model.onnx").write_bytes(onnx_models[name])
    (tmp_path / "m" / "config.pbtxt").write_text(TRITON_CONFIG)
    (tmp_path / "typo" / "1").mkdir(parents=True)
    (tmp_path / "typo" / "1" / "model.onnx").write_bytes(onnx_models["iris"])
    (tmp_path / "typo" / "config.pbtxt").write_text("max_batch_size: 8\nmax_queue_delay: 5\n")
    s = start_server(["--model-repository", str(tmp_path), "--no-grpc", "--exit-on-error", "false"])
    meta = requests.get(s.url + "/v2/models/m", timeout=10).json()
    assert meta["versions"] == ["1"] and meta["platform"] == "onnxruntime_onnx", meta
    r = requests.post(s.url + "/predict?model=m", json={"instances": iris_x[:3].tolist()}, timeout=10)
    assert r.status_code == 200 and r.json()["model_version"] == "1", r.text
    # max_batch_size bounds each request, as in Triton.
    r = requests.post(s.url + "/predict?model=m", json={"instances": iris_x[:9].tolist()}, timeout=10)
    assert r.status_code == 400 and "batch-size must be <= 8" in r.json()["error"], r.text
    r = requests.get(s.url + "/v2/models/typo/ready", timeout=10)
    assert r.status_code == 503 and "unknown field max_queue_delay" in r.json()["error"], r.text


def test_errors_wait_for_the_body_and_keep_the_connection(server):
    """A client that sends headers and body apart (Python's requests does) gets the error for
    its request and can go on using the connection."""
    import socket
    host, port = server.url.removeprefix("http://").split(":")
    body = b'{"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}'
    head = (b"POST /v2/models/nosuch/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
    with socket.create_connection((host, int(port))) as c:
        c.settimeout(10)
        for _ in range(2):
            c.sendall(head)
            time.sleep(0.2)
            c.sendall(body)
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                chunk = c.recv(4096)
                assert chunk, f"connection closed after {answer!r}"
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 404"), answer
