"""--verify-fixes: each suggested fix is applied in memory and checked on its batch."""

import numpy as np
import pytest

from nandoctor.scanner import scan
from tests.conftest import sample


@pytest.mark.parametrize("name, op", [("exp_overflow", "Exp"), ("division_by_zero", "RealDiv"),
                                      ("sqrt_gradient", "Sqrt"), ("deepiv_mixture", "Exp")])
def test_sample_fix_verified(tf, name, op):
    report = scan(sample(name), sample(name, ".npz"), trust_code=True, verify_fixes=True)
    top = report.findings[0]
    assert top.op == op
    assert top.fix_verified is True
    before, after = top.fix_check["before"], top.fix_check["after"]
    assert before["outputs"] + before["gradients"] > 0 or not before["loss_finite"]
    assert after == {"outputs": 0, "gradients": 0, "loss_finite": True}


def test_verified_exp_bound_in_fix(tf):
    report = scan(sample("exp_overflow"), sample("exp_overflow", ".npz"), verify_fixes=True)
    assert "tf.clip_by_value(z, -22, 22)" in report.findings[0].fix


def test_fix_that_does_not_clear_fault(keras, tmp_path):
    # Clipping the exp cannot help: the Lambda scales its result past float32 afterwards.
    inputs = keras.Input((4,), name="x")
    outputs = keras.layers.Lambda(lambda z: keras.ops.exp(100.0 * z) * 1e30, name="scaled_exp")(inputs)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="mean_squared_error")
    model.save(str(tmp_path / "m.keras"))
    x = np.random.default_rng(0).random((32, 4)).astype("float32")
    np.savez(tmp_path / "d.npz", x=x, y=np.zeros_like(x))

    report = scan(str(tmp_path / "m.keras"), str(tmp_path / "d.npz"), trust_code=True, verify_fixes=True)
    top = report.findings[0]
    assert top.op == "Exp"
    assert top.fix_verified is False
    assert not top.fix_check["after"]["loss_finite"]


def test_not_attempted_without_flag(tf):
    report = scan(sample("sqrt_gradient"), sample("sqrt_gradient", ".npz"))
    assert report.findings[0].fix_verified is None
    assert report.to_dict()["findings"][0]["fix_verified"] is None
    assert report.to_dict()["findings"][0]["fix_check"] is None
