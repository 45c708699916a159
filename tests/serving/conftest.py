"""Fixtures: sklearn models in a repository, and skiff serve processes on free loopback ports."""

import os
import shlex
import socket
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort
import pytest
import requests

sys.path.insert(0, os.path.dirname(__file__))
from models import build_models, iris, write_repository  # noqa: E402

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def serve_cmd():
    """The server command: SKIFF_SERVE_CMD, else the skiff-serving `serve` example (built if missing)."""
    cmd = os.environ.get("SKIFF_SERVE_CMD")
    if cmd:
        return shlex.split(cmd)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO_ROOT, "target"))
    binary = os.path.join(target, "debug", "examples", "serve")
    if not os.path.exists(binary):
        subprocess.run(
            ["cargo", "build", "-p", "skiff-serving", "--example", "serve"],
            cwd=REPO_ROOT,
            check=True,
        )
    return [binary]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running skiff serve process."""

    def __init__(self, args, ready_timeout=60):
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.grpc = f"127.0.0.1:{self.grpc_port}"
        env = dict(os.environ)
        env.setdefault("SKIFF_PYTHON", sys.executable)
        cmd = serve_cmd() + [
            "--host", "127.0.0.1",
            "--http-port", str(self.http_port),
            "--grpc-port", str(self.grpc_port),
        ] + list(args)
        self.log = open(os.path.join(os.environ.get("TMPDIR", "/tmp"), f"skiff-serve-{self.http_port}.log"), "w+")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + ready_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.output()}")
            try:
                if requests.get(self.url + "/v2/health/live", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("server did not become live: " + self.output())
            time.sleep(0.05)

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="session")
def onnx_models():
    return build_models()


@pytest.fixture(scope="session")
def repository(tmp_path_factory, onnx_models):
    root = tmp_path_factory.mktemp("repo")
    write_repository(str(root), onnx_models)
    return root


@pytest.fixture(scope="session")
def server(repository):
    s = Server(["--model-repository", str(repository), "--max-batch-size", "32", "--batch-delay-ms", "2"])
    yield s
    s.stop()


@pytest.fixture
def start_server():
    started = []

    def start(args, **kw):
        s = Server(args, **kw)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


@pytest.fixture(scope="session")
def reference(onnx_models):
    """onnxruntime sessions in Python, the ground truth."""
    return {name: ort.InferenceSession(data, providers=["CPUExecutionProvider"]) for name, data in onnx_models.items()}


@pytest.fixture(scope="session")
def iris_x():
    return iris()[0]


def features_for(name, x):
    return x[:, :3] if name == "boost" else x


def expected(reference, name, x):
    sess = reference[name]
    outs = sess.run(None, {sess.get_inputs()[0].name: x})
    return {o.name: v for o, v in zip(sess.get_outputs(), outs)}


def assert_close(got, want, name=""):
    got = np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
    if want.dtype.kind in "fc":
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=name)
    else:
        np.testing.assert_array_equal(got, want, err_msg=name)
