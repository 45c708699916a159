"""Hot reload under load: new version directories and replaced files swap in with zero failed requests."""

import json
import os
import shutil
import threading
import time

import numpy as np
import requests
from conftest import expected


def test_new_version_and_replaced_file_under_load(start_server, tmp_path, onnx_models, reference, iris_x):
    root = tmp_path / "repo"
    (root / "m" / "1").mkdir(parents=True)
    (root / "m" / "1" / "model.onnx").write_bytes(onnx_models["iris"])
    s = start_server(["--model-repository", str(root), "--poll-interval-ms", "100", "--no-grpc"])
    x = iris_x[45:60]  # rows where the models disagree on probabilities
    want = {name: expected(reference, name, x)["probabilities"] for name in ["iris", "forest", "pipeline"]}
    body = json.dumps({"inputs": [{"name": "X", "shape": [15, 4], "datatype": "FP32", "data": x.tolist()}],
                       "outputs": [{"name": "probabilities"}]})
    failures, seen, stop = [], [], threading.Event()

    def load():
        session = requests.Session()
        while not stop.is_set():
            try:
                r = session.post(s.url + "/v2/models/m/infer", data=body, timeout=10)
            except requests.RequestException as e:
                failures.append(repr(e))
                continue
            if r.status_code != 200:
                failures.append(r.text)
                continue
            out = r.json()
            got = np.array(out["outputs"][0]["data"], dtype=np.float32).reshape(15, 3)
            match = [n for n, w in want.items() if np.allclose(got, w, atol=1e-5)]
            seen.append((out["model_version"], match[0] if match else None))

    def wait_for(version, model, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if seen and seen[-1] == (version, model):
                return
            time.sleep(0.05)
        raise AssertionError(f"never served {model} as version {version}; last {seen[-3:]}")

    threads = [threading.Thread(target=load) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        wait_for("1", "iris")
        # A new version directory, written elsewhere and moved in.
        staging = tmp_path / "staging"
        staging.mkdir()
        (staging / "model.onnx").write_bytes(onnx_models["forest"])
        os.rename(staging, root / "m" / "2")
        wait_for("2", "forest")
        # The file of the served version replaced in place (atomic rename over it).
        tmp = root / "m" / "2" / "model.onnx.tmp"
        tmp.write_bytes(onnx_models["pipeline"])
        os.replace(tmp, root / "m" / "2" / "model.onnx")
        wait_for("2", "pipeline")
        # A broken replacement is refused and the good model keeps serving.
        tmp.write_bytes(b"garbage")
        os.replace(tmp, root / "m" / "2" / "model.onnx")
        time.sleep(0.5)
        n = len(seen)
        time.sleep(0.3)
        assert len(seen) > n
        assert all(v == ("2", "pipeline") for v in seen[n:])
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    assert all(model is not None for _, model in seen), "a response matched no model"
    # Old versions leave the index once replaced (latest-only policy).
    assert requests.get(s.url + "/v2/models/m", timeout=10).json()["versions"] == ["2"]
    shutil.rmtree(root / "m" / "2")
    deadline = time.monotonic() + 10
    while requests.get(s.url + "/v2/models/m", timeout=10).json()["versions"] != ["1"]:
        assert time.monotonic() < deadline, "version 1 was not served again after 2 was removed"
        time.sleep(0.05)
