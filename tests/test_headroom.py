"""Headroom warnings: risky ops close to failing on the data, and none on healthy networks."""

import numpy as np
import pytest

from nandoctor.scanner import scan
from tests.conftest import sample


def save_lambda_model(keras, tmp_path, function, x, name="risky"):
    # The Lambda is the output and the loss is the mean absolute error, so large
    # but finite values do not overflow in a loss that squares them.
    inputs = keras.Input(x.shape[1:], name="x")
    outputs = keras.layers.Lambda(function, name=name)(inputs)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="mean_absolute_error")
    model.save(str(tmp_path / "m.keras"))
    np.savez(tmp_path / "d.npz", x=x, y=np.zeros_like(x))
    return str(tmp_path / "m.keras"), str(tmp_path / "d.npz")


def warnings_of(report):
    return [f for f in report.findings if f.severity == "warning"]


def test_exp_argument_near_limit(keras, tmp_path):
    x = np.linspace(0.0, 0.995, 64, dtype="float32").reshape(16, 4)
    model, data = save_lambda_model(keras, tmp_path, lambda z: keras.ops.exp(80.0 * z), x)
    report = scan(model, data, trust_code=True)
    top = warnings_of(report)[0]
    assert report.findings[0].severity == "warning"
    assert top.kind == "overflow_risk"
    assert top.layer == "risky"
    assert top.op == "Exp"
    assert top.evidence.details["measured"] == pytest.approx(79.6, abs=0.01)
    assert top.evidence.details["scale_headroom"] == pytest.approx(88.72 / 79.6, rel=1e-3)


def test_small_denominator(keras, tmp_path):
    x = np.full((16, 2), 2.0, "float32")
    x[3, 0] = 0.5 + 1e-7  # 0.50000012 in float32, whose spacing near 0.5 is 6e-8
    model, data = save_lambda_model(keras, tmp_path, lambda v: 1.0 / (v - 0.5), x)
    report = scan(model, data, trust_code=True)
    top = warnings_of(report)[0]
    assert top.kind == "division_risk"
    assert top.op == "RealDiv"
    assert 0 < top.evidence.details["min_abs_denominator"] < 1e-6


def test_sqrt_argument_near_zero(keras, tmp_path):
    x = np.full((16, 2), 1.0, "float32")
    x[5, 1] = 1e-10
    model, data = save_lambda_model(keras, tmp_path, lambda v: keras.ops.sqrt(v), x)
    report = scan(model, data, trust_code=True)
    top = warnings_of(report)[0]
    assert top.kind == "gradient_risk"
    assert top.op == "Sqrt"
    assert top.evidence.details["derivative"] == pytest.approx(0.5 / np.sqrt(1e-10), rel=1e-3)


def test_acos_argument_near_one(keras, tmp_path):
    x = np.full((16, 2), 0.5, "float32")
    x[0, 0] = 0.99999994  # the largest float32 below 1
    model, data = save_lambda_model(keras, tmp_path, lambda v: keras.ops.arccos(v), x)
    report = scan(model, data, trust_code=True)
    top = warnings_of(report)[0]
    assert top.kind == "domain_risk"
    assert top.op == "Acos"


def test_thresholds_are_options(keras, tmp_path):
    x = np.full((16, 2), 1.0, "float32")
    x[5, 1] = 1e-10
    model, data = save_lambda_model(keras, tmp_path, lambda v: keras.ops.sqrt(v), x)
    assert warnings_of(scan(model, data, trust_code=True, max_derivative=1e6)) == []
    assert warnings_of(scan(model, data, trust_code=True, headroom=False)) == []


def test_safe_exp_no_warning(keras, tmp_path):
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    model, data = save_lambda_model(keras, tmp_path, lambda z: keras.ops.exp(z), x)
    assert scan(model, data, trust_code=True).findings == []


def test_healthy_cnn_no_warning(keras, tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 3), name="x")
    hidden = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    hidden = keras.layers.BatchNormalization()(hidden)
    hidden = keras.layers.MaxPooling2D()(hidden)
    hidden = keras.layers.Flatten()(hidden)
    outputs = keras.layers.Dense(4, activation="softmax")(hidden)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.save(str(tmp_path / "m.keras"))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(48, 12, 12, 3)).astype("float32"),
             y=rng.integers(0, 4, 48))
    assert scan(str(tmp_path / "m.keras"), str(tmp_path / "d.npz")).findings == []


def test_risk_not_reported_downstream_of_fault(tf):
    report = scan(sample("exp_overflow"), sample("exp_overflow", ".npz"))
    assert [f.kind for f in report.findings] == ["overflow"]


def test_applied_fixes_raise_no_warning(keras, tmp_path):
    # The fixes the findings suggest leave values at their bounds on purpose.
    x = np.full((16, 2), 1.0, "float32")
    x[2, 0] = 0.0
    x[3, 1] = 0.5
    fixed = [
        lambda v: keras.ops.log(keras.ops.maximum(v, 1e-7)),
        lambda v: 1.0 / keras.ops.where(keras.ops.abs(v - 0.5) < 1e-6, 1e-6, v - 0.5),
        lambda v: keras.ops.sqrt(v + 1e-8),
    ]
    for index, function in enumerate(fixed):
        folder = tmp_path / str(index)
        folder.mkdir()
        model, data = save_lambda_model(keras, folder, function, x)
        assert warnings_of(scan(model, data, trust_code=True)) == [], index
