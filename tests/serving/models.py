"""Builds small scikit-learn models and exports them to ONNX (zipmap off) for the serving tests."""

import os

import numpy as np
from skl2onnx import to_onnx
from sklearn.datasets import load_iris
from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def iris():
    x, y = load_iris(return_X_y=True)
    return x.astype(np.float32), y


def build_models():
    """Returns {name: onnx bytes} for the four models the tests serve."""
    x, y = iris()
    options = {"zipmap": False}
    out = {}
    lr = LogisticRegression(max_iter=500).fit(x, y)
    out["iris"] = to_onnx(lr, x[:1], options={id(lr): options}, target_opset=15).SerializeToString()
    rf = RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0).fit(x, y)
    out["forest"] = to_onnx(rf, x[:1], options={id(rf): options}, target_opset=15).SerializeToString()
    gb = GradientBoostingRegressor(n_estimators=20, random_state=0).fit(x[:, :3], x[:, 3])
    out["boost"] = to_onnx(gb, x[:1, :3], target_opset=15).SerializeToString()
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y)
    out["pipeline"] = to_onnx(pipe, x[:1], options={id(pipe): options}, target_opset=15).SerializeToString()
    return out


def write_repository(root, models, version=1):
    """Writes DIR/<model>/<version>/model.onnx for each model."""
    for name, data in models.items():
        d = os.path.join(root, name, str(version))
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "model.onnx"), "wb") as f:
            f.write(data)
