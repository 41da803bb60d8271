"""--stress finds inputs just outside the data that make a risky op fail, and --save-repro keeps them."""

import os

import numpy as np
from click.testing import CliRunner

from nandoctor.cli import cli
from nandoctor.scanner import scan
from tests.conftest import sample


def save_exp_model(keras, tmp_path):
    # Finite on inputs in [0, 5], where exp(10 * x) stays below e^50, but it
    # overflows float32 once an input passes 8.87.
    inputs = keras.Input((3,), name="x")
    hidden = keras.layers.Dense(3, name="dense")(inputs)
    scaled = keras.layers.Lambda(lambda z: keras.ops.exp(10.0 * z), name="boost")(inputs)
    outputs = keras.layers.Concatenate(name="merge")([hidden, scaled])
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="mean_absolute_error")
    model.save(str(tmp_path / "m.keras"))
    x = np.random.default_rng(0).uniform(0.0, 5.0, (64, 3)).astype("float32")
    np.savez(tmp_path / "d.npz", x=x, y=np.zeros((64, 6), "float32"))
    return str(tmp_path / "m.keras"), str(tmp_path / "d.npz")


def test_stress_finds_fault_outside_data(keras, tmp_path):
    model, data = save_exp_model(keras, tmp_path)
    plain = scan(model, data, trust_code=True, headroom=False)
    assert plain.findings == []

    report = scan(model, data, trust_code=True, headroom=False, stress=True, save_repro=str(tmp_path / "repro"))
    top = report.findings[0]
    assert top.phase == "stress"
    assert top.kind == "overflow"
    assert top.layer == "boost"
    assert top.op == "Exp"
    assert os.path.exists(top.repro)
    assert any("stress search:" in note for note in report.notes)

    reproduced = scan(model, top.repro, trust_code=True, headroom=False)
    assert [(f.kind, f.layer, f.op) for f in reproduced.findings][0] == ("overflow", "boost", "Exp")


def test_stress_quiet_on_healthy_model(tf):
    report = scan(sample("healthy"), sample("healthy", ".npz"), stress=True)
    assert [f for f in report.findings if f.severity == "error"] == []


def test_save_repro_needs_stress(tf, tmp_path):
    result = CliRunner().invoke(cli, ["scan", sample("healthy"), "--save-repro", str(tmp_path)])
    assert result.exit_code == 2
    assert "add --stress" in result.stderr
