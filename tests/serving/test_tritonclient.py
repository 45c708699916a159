"""tritonclient (HTTP and gRPC) as a real client: metadata, JSON and binary infer, repository calls."""

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from conftest import assert_close, expected, features_for
from tritonclient.utils import InferenceServerException

MODELS = ["iris", "forest", "boost", "pipeline"]


def client(kind, server):
    if kind == "http":
        return httpclient, httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    return grpcclient, grpcclient.InferenceServerClient(server.grpc)


@pytest.mark.parametrize("kind", ["http", "grpc"])
def test_health_and_metadata(server, reference, kind):
    mod, c = client(kind, server)
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready("iris")
    meta = c.get_model_metadata("iris")
    if kind == "grpc":
        names = [i.name for i in meta.inputs]
        outs = [(o.name, o.datatype, list(o.shape)) for o in meta.outputs]
        server_name = c.get_server_metadata().name
    else:
        names = [i["name"] for i in meta["inputs"]]
        outs = [(o["name"], o["datatype"], o["shape"]) for o in meta["outputs"]]
        server_name = c.get_server_metadata()["name"]
    assert server_name == "skiff"
    assert names == ["X"]
    assert outs == [("label", "INT64", [-1]), ("probabilities", "FP32", [-1, 3])]


@pytest.mark.parametrize("kind", ["http", "grpc"])
@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("model", MODELS)
def test_infer_matches_onnxruntime(server, reference, iris_x, kind, binary, model):
    mod, c = client(kind, server)
    x = features_for(model, iris_x[::3])
    want = expected(reference, model, x)
    inp = mod.InferInput("X", list(x.shape), "FP32")
    if kind == "http":
        inp.set_data_from_numpy(x, binary_data=binary)
        outputs = [mod.InferRequestedOutput(n, binary_data=binary) for n in want]
    else:
        inp.set_data_from_numpy(x)
        outputs = [mod.InferRequestedOutput(n) for n in want]
    r = c.infer(model, [inp], outputs=outputs)
    for name, value in want.items():
        assert_close(r.as_numpy(name), value, name)


@pytest.mark.parametrize("kind", ["http", "grpc"])
@pytest.mark.parametrize("binary", [True, False])
def test_classification_extension(server, reference, iris_x, kind, binary):
    """An output asked for with class_count comes back as the top classes, "<score>:<index>",
    best first, as Triton answers."""
    mod, c = client(kind, server)
    x = iris_x[::7]
    probabilities = expected(reference, "iris", x)["probabilities"]
    inp = mod.InferInput("X", list(x.shape), "FP32")
    if kind == "http":
        inp.set_data_from_numpy(x, binary_data=binary)
        out = mod.InferRequestedOutput("probabilities", binary_data=binary, class_count=2)
    else:
        inp.set_data_from_numpy(x)
        out = mod.InferRequestedOutput("probabilities", class_count=2)
    got = c.infer("iris", [inp], outputs=[out]).as_numpy("probabilities")
    assert got.shape == (len(x), 2)
    for row, scores in zip(got, probabilities):
        classes = [(b if isinstance(b, bytes) else str(b).encode()).decode().split(":") for b in row]
        assert [int(i) for _, i in classes] == list(np.argsort(-scores, kind="stable")[:2])
        for value, i in classes:
            assert abs(float(value) - scores[int(i)]) <= 1e-5
    # iris's label output is INT64 [batch]: one value per row, not a row of class scores.
    bad = mod.InferRequestedOutput("label", class_count=1) if kind == "grpc" else \
        mod.InferRequestedOutput("label", binary_data=binary, class_count=1)
    with pytest.raises(InferenceServerException, match="classification needs") as e:
        c.infer("iris", [inp], outputs=[bad])
    assert e.value.status() in ("400", "StatusCode.INVALID_ARGUMENT"), e.value.status()


@pytest.mark.parametrize("kind", ["http", "grpc"])
def test_errors_are_exceptions_not_crashes(server, kind):
    mod, c = client(kind, server)
    bad = mod.InferInput("X", [1, 3], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(InferenceServerException, match="expected shape"):
        c.infer("iris", [bad])
    with pytest.raises(InferenceServerException, match="unknown model"):
        c.infer("nope", [bad])
    wrong_type = mod.InferInput("X", [1, 4], "FP64")
    wrong_type.set_data_from_numpy(np.zeros((1, 4), dtype=np.float64))
    with pytest.raises(InferenceServerException, match="datatype"):
        c.infer("iris", [wrong_type])
    # Unknown models and versions are not ready, over both protocols (Triton's answer).
    assert not c.is_model_ready("nope")
    assert not c.is_model_ready("iris", "9")
    assert c.is_server_live()


@pytest.mark.parametrize("kind", ["http", "grpc"])
def test_repository_load_unload(start_server, repository, kind):
    s = start_server(["--model-repository", str(repository)])
    mod, c = client(kind, s)
    index = c.get_model_repository_index()
    names = [m.name for m in index.models] if kind == "grpc" else [m["name"] for m in index]
    assert sorted(names) == sorted(MODELS)
    c.unload_model("boost")
    assert not c.is_model_ready("boost")
    c.load_model("boost")
    assert c.is_model_ready("boost")
    with pytest.raises(InferenceServerException):
        c.load_model("does-not-exist")
    # Overrides are refused, naming the parameter, rather than ignored under a success.
    for kw, key in [({"config": '{"max_batch_size": 2}'}, "config"),
                    ({"files": {"file:1/model.onnx": b"garbage"}}, "file:1/model.onnx")]:
        with pytest.raises(InferenceServerException, match=f"load parameter \"{key}\" is not supported") as e:
            c.load_model("boost", **kw)
        assert e.value.status() in ("400", "StatusCode.INVALID_ARGUMENT"), e.value.status()
        assert c.is_model_ready("boost")


def test_repository_load_body_is_checked(start_server, repository):
    import requests

    s = start_server(["--model-repository", str(repository)])
    url = f"{s.url}/v2/repository/models/boost/load"
    for body in ["garbage", '{"parameter": {}}', "[]"]:
        r = requests.post(url, data=body, timeout=10)
        assert r.status_code == 400, (body, r.text)
        assert "malformed load request" in r.json()["error"], r.text
    for body in ["", " ", "{}", '{"parameters": {}}', '{"parameters": null}']:
        assert requests.post(url, data=body, timeout=10).status_code == 200, body


@pytest.mark.parametrize("kind", ["http", "grpc"])
def test_model_config(start_server, tmp_path, onnx_models, kind):
    """get_model_config describes the model as Triton would: inputs and outputs from the graph,
    the batch dimension left out when max_batch_size is above 0, batching and instances."""
    (tmp_path / "plain" / "1").mkdir(parents=True)
    (tmp_path / "plain" / "1" / "model.onnx").write_bytes(onnx_models["iris"])
    (tmp_path / "batched" / "2").mkdir(parents=True)
    (tmp_path / "batched" / "2" / "model.onnx").write_bytes(onnx_models["iris"])
    (tmp_path / "batched" / "config.pbtxt").write_text(
        "max_batch_size: 16\ndynamic_batching { max_queue_delay_microseconds: 300 }\n"
        "instance_group [ { count: 2 } ]\n")
    s = start_server(["--model-repository", str(tmp_path)])
    mod, c = client(kind, s)
    if kind == "grpc":
        from google.protobuf.json_format import MessageToDict
        get = lambda m: MessageToDict(c.get_model_config(m).config, preserving_proto_field_name=True)
    else:
        get = c.get_model_config
    plain = get("plain")
    assert plain["name"] == "plain" and plain["platform"] == "onnxruntime_onnx"
    assert plain.get("max_batch_size", 0) == 0 and "dynamic_batching" not in plain
    assert [(i["name"], i["data_type"], [int(d) for d in i["dims"]]) for i in plain["input"]] == [("X", "TYPE_FP32", [-1, 4])]
    assert {o["name"] for o in plain["output"]} == {"label", "probabilities"}
    batched = get("batched")
    assert batched["max_batch_size"] == 16
    assert int(batched["dynamic_batching"]["max_queue_delay_microseconds"]) == 300
    assert [int(d) for d in batched["input"][0]["dims"]] == [4]
    assert batched["instance_group"][0]["count"] == 2 and batched["instance_group"][0]["kind"] == "KIND_CPU"
    meta = c.get_server_metadata()
    extensions = meta.extensions if kind == "grpc" else meta["extensions"]
    assert "model_configuration" in extensions and "classification" in extensions
    with pytest.raises(InferenceServerException):
        get("nope")


@pytest.mark.parametrize("kind", ["http", "grpc"])
def test_inference_statistics(start_server, repository, iris_x, kind):
    """get_inference_statistics counts what the server did: requests that succeeded and
    failed, rows inferred, executions, and time queued and computing."""
    s = start_server(["--model-repository", str(repository)])
    mod, c = client(kind, s)
    for rows in (1, 3, 5):
        inp = mod.InferInput("X", [rows, 4], "FP32")
        inp.set_data_from_numpy(iris_x[:rows])
        c.infer("iris", [inp])
    bad = mod.InferInput("X", [1, 3], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(InferenceServerException):
        c.infer("iris", [bad])
    if kind == "grpc":
        from google.protobuf.json_format import MessageToDict
        stats = MessageToDict(c.get_inference_statistics("iris"), preserving_proto_field_name=True)
        everything = MessageToDict(c.get_inference_statistics(), preserving_proto_field_name=True)
    else:
        stats = c.get_inference_statistics("iris")
        everything = c.get_inference_statistics()
    [m] = stats["model_stats"]
    assert (m["name"], m["version"]) == ("iris", "1")
    assert int(m["inference_count"]) == 9 and int(m["execution_count"]) == 3
    inf = m["inference_stats"]
    assert int(inf["success"]["count"]) == 3 and int(inf["success"]["ns"]) > 0
    assert int(inf["fail"]["count"]) == 1
    assert int(inf["queue"]["count"]) == 3 and int(inf["compute_infer"]["count"]) == 3
    assert int(inf["compute_infer"]["ns"]) > 0 and int(m["last_inference"]) > 0
    assert sorted(x["name"] for x in everything["model_stats"]) == sorted(MODELS)
    with pytest.raises(InferenceServerException):
        c.get_inference_statistics("nope")


def test_grpc_message_over_the_limit_is_resource_exhausted(start_server, repository):
    s = start_server(["--model-repository", str(repository), "--max-body-bytes", "4096"])
    c = grpcclient.InferenceServerClient(s.grpc)
    inp = grpcclient.InferInput("X", [512, 4], "FP32")
    inp.set_data_from_numpy(np.zeros((512, 4), dtype=np.float32))
    with pytest.raises(InferenceServerException) as e:
        c.infer("iris", [inp])
    assert e.value.status() == "StatusCode.RESOURCE_EXHAUSTED", e.value
    assert c.is_server_live()
