"""Every Open Inference Protocol datatype through an ONNX Identity graph, over REST (JSON, binary) and gRPC."""

import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from onnx import TensorProto, helper

TYPES = {
    "BOOL": (TensorProto.BOOL, np.bool_),
    "UINT8": (TensorProto.UINT8, np.uint8),
    "UINT16": (TensorProto.UINT16, np.uint16),
    "UINT32": (TensorProto.UINT32, np.uint32),
    "UINT64": (TensorProto.UINT64, np.uint64),
    "INT8": (TensorProto.INT8, np.int8),
    "INT16": (TensorProto.INT16, np.int16),
    "INT32": (TensorProto.INT32, np.int32),
    "INT64": (TensorProto.INT64, np.int64),
    "FP16": (TensorProto.FLOAT16, np.float16),
    "FP32": (TensorProto.FLOAT, np.float32),
    "FP64": (TensorProto.DOUBLE, np.float64),
    "BYTES": (TensorProto.STRING, np.object_),
}


def sample(dt):
    if dt == "BOOL":
        return np.array([[True, False], [False, True]])
    if dt == "BYTES":
        return np.array([[b"a", b""], ["é".encode(), b"hello"]], dtype=np.object_)
    np_type = TYPES[dt][1]
    if np.issubdtype(np_type, np.integer):
        info = np.iinfo(np_type)
        return np.array([[info.min, 0], [1, info.max]], dtype=np_type)
    return np.array([[0.5, -1.25], [0.0, 1024.0]], dtype=np_type)


@pytest.fixture(scope="module")
def identity_server(tmp_path_factory):
    from conftest import Server

    nodes, inputs, outputs = [], [], []
    for dt, (proto, _) in TYPES.items():
        x, y = f"x_{dt.lower()}", f"y_{dt.lower()}"
        nodes.append(helper.make_node("Identity", [x], [y]))
        inputs.append(helper.make_tensor_value_info(x, proto, ["batch", 2]))
        outputs.append(helper.make_tensor_value_info(y, proto, ["batch", 2]))
    graph = helper.make_graph(nodes, "identity", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    root = tmp_path_factory.mktemp("identity")
    (root / "id" / "1").mkdir(parents=True)
    onnx.save(model, str(root / "id" / "1" / "model.onnx"))
    s = Server(["--model-repository", str(root)])
    yield s
    s.stop()


def run(kind, binary, server):
    if kind == "http":
        mod, c = httpclient, httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    else:
        mod, c = grpcclient, grpcclient.InferenceServerClient(server.grpc)
    inputs, outputs = [], []
    for dt in TYPES:
        inp = mod.InferInput(f"x_{dt.lower()}", [2, 2], dt)
        if kind == "http":
            inp.set_data_from_numpy(sample(dt), binary_data=binary or dt == "FP16")
            outputs.append(mod.InferRequestedOutput(f"y_{dt.lower()}", binary_data=binary or dt == "FP16"))
        else:
            inp.set_data_from_numpy(sample(dt))
        inputs.append(inp)
    return c.infer("id", inputs, outputs=outputs or None)


@pytest.mark.parametrize("kind,binary", [("http", False), ("http", True), ("grpc", True)])
def test_every_datatype_round_trips(identity_server, kind, binary):
    r = run(kind, binary, identity_server)
    for dt in TYPES:
        got = r.as_numpy(f"y_{dt.lower()}")
        want = sample(dt)
        assert got.shape == want.shape, dt
        if dt == "BYTES":
            assert [bytes(v) if not isinstance(v, str) else v.encode() for v in got.flatten()] == list(want.flatten()), dt
        else:
            np.testing.assert_array_equal(got, want, err_msg=dt)


@pytest.mark.parametrize("bad,why", [(b"\xff", "is not UTF-8"), (b"a\x00b", "contains a NUL byte")])
@pytest.mark.parametrize("kind", ["http", "grpc"])
def test_bytes_that_are_not_text_are_a_client_error(identity_server, kind, bad, why):
    from tritonclient.utils import InferenceServerException

    if kind == "http":
        mod, c = httpclient, httpclient.InferenceServerClient(identity_server.url.removeprefix("http://"))
    else:
        mod, c = grpcclient, grpcclient.InferenceServerClient(identity_server.grpc)
    inputs = []
    for dt in TYPES:
        data = sample(dt)
        if dt == "BYTES":
            data = np.array([[b"a", bad], [b"b", b"c"]], dtype=np.object_)
        inp = mod.InferInput(f"x_{dt.lower()}", [2, 2], dt)
        if kind == "http":
            inp.set_data_from_numpy(data, binary_data=True)
        else:
            inp.set_data_from_numpy(data)
        inputs.append(inp)
    with pytest.raises(InferenceServerException, match=f"element 1 {why}") as e:
        c.infer("id", inputs)
    status = e.value.status()
    assert status in ("400", "StatusCode.INVALID_ARGUMENT"), status


def test_non_finite_floats_over_json(identity_server):
    """tritonclient's JSON (Python's json) writes NaN and the infinities as bare literals, which
    Triton reads; so does skiff, and answers them as the strings "NaN", "Infinity", "-Infinity"."""
    c = httpclient.InferenceServerClient(identity_server.url.removeprefix("http://"))
    special = {dt: np.array([[np.nan, np.inf], [-np.inf, 1.5]], dtype=TYPES[dt][1]) for dt in ["FP32", "FP64"]}
    inputs, outputs = [], []
    for dt in TYPES:
        inp = httpclient.InferInput(f"x_{dt.lower()}", [2, 2], dt)
        inp.set_data_from_numpy(special.get(dt, sample(dt)), binary_data=dt == "FP16")
        inputs.append(inp)
        outputs.append(httpclient.InferRequestedOutput(f"y_{dt.lower()}", binary_data=dt == "FP16"))
    r = c.infer("id", inputs, outputs=outputs)
    for dt, want in special.items():
        np.testing.assert_array_equal(r.as_numpy(f"y_{dt.lower()}"), want, err_msg=dt)
