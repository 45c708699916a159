"""Shared fixtures for the Python end-to-end tests: a real `skiff up` on a free port."""
import os
import re
import signal
import subprocess
import tempfile

import pytest


def skiff_bin():
    path = os.environ.get("SKIFF_BIN")
    if not path:
        target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/skiff-target"))
        path = os.path.join(target, "debug", "skiff")
    if not os.path.exists(path):
        raise RuntimeError(f"skiff binary not found at {path}; run `make build` first")
    return path


class Cluster:
    def __init__(self):
        self.dir = tempfile.TemporaryDirectory(prefix="skiff-py-")
        self.proc = subprocess.Popen(
            [skiff_bin(), "up", "--port", "0", "--disable-agent", "--data-dir", self.dir.name],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        line = self.proc.stdout.readline()
        m = re.match(r"skiff is ready at (https://\S+)", line)
        if not m:
            self.stop()
            raise RuntimeError(f"skiff did not start: {line!r}")
        self.server = m.group(1)
        self.kubeconfig = os.path.join(self.dir.name, "kubeconfig.yaml")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.dir.cleanup()


@pytest.fixture
def cluster():
    c = Cluster()
    yield c
    c.stop()
