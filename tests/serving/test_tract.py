"""The tract backend (cargo feature `tract`): same answers as onnxruntime where tract has the operators."""

import json

import numpy as np
import pytest
import requests
from conftest import Server, assert_close, expected


@pytest.fixture(scope="module")
def tract_server(repository):
    try:
        s = Server(["--model-repository", str(repository), "--backend", "tract", "--no-grpc",
                    # boost and pipeline use operators tract lacks; the test reads their errors.
                    "--exit-on-error", "false"])
    except RuntimeError as e:
        if "not built in" in str(e):
            pytest.skip("server built without the tract feature")
        raise
    yield s
    s.stop()


@pytest.mark.parametrize("model", ["iris", "forest"])
def test_tract_matches_onnxruntime(tract_server, reference, iris_x, model):
    meta = requests.get(f"{tract_server.url}/v2/models/{model}", timeout=10).json()
    assert meta["platform"] == "tract_onnx"
    body = {"inputs": [{"name": "X", "shape": list(iris_x.shape), "datatype": "FP32", "data": iris_x.tolist()}]}
    r = requests.post(f"{tract_server.url}/v2/models/{model}/infer", data=json.dumps(body), timeout=30)
    assert r.status_code == 200, r.text
    want = expected(reference, model, iris_x)
    for o in r.json()["outputs"]:
        assert_close(np.array(o["data"]).reshape(o["shape"]), want[o["name"]], o["name"])


@pytest.mark.parametrize("model,operator", [("boost", "TreeEnsembleRegressor"), ("pipeline", "Scaler")])
def test_unsupported_operator_is_named(tract_server, model, operator):
    r = requests.get(f"{tract_server.url}/v2/models/{model}/ready", timeout=10)
    assert r.status_code == 503
    assert operator in r.json()["error"]
