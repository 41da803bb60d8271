"""The training replay: break steps agree with a plain model.fit, causes and fixes are named."""

import math

import numpy as np
import pytest

from nandoctor.scanner import scan
from tests.conftest import sample

BATCH = 32


def fit_first_nonfinite_step(keras, name, epochs=3):
    """Run plain model.fit on a sample and return the first step whose loss or weights are non-finite."""
    model = keras.saving.load_model(sample(name))
    if any(layer.dtype_policy.compute_dtype == "float16" for layer in model.layers):
        # The script that built the sample compiled under the mixed_float16
        # policy, which wraps the optimizer; the file records the inner one.
        model.compile(optimizer=keras.optimizers.LossScaleOptimizer(model.optimizer), loss=model.loss)
    data = np.load(sample(name, ".npz"))
    steps_per_epoch = math.ceil(len(data["x"]) / BATCH)
    state = {}

    class Watch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            state["epoch"] = epoch

        def on_train_batch_end(self, batch, logs=None):
            weights_finite = all(np.isfinite(w).all() for w in self.model.get_weights())
            if not math.isfinite(logs["loss"]) or not weights_finite:
                state.setdefault("step", state["epoch"] * steps_per_epoch + batch)
                self.model.stop_training = True

    model.fit(data["x"], data["y"], batch_size=BATCH, shuffle=False, epochs=epochs, verbose=0,
              callbacks=[Watch()])
    return state.get("step")


@pytest.mark.parametrize(
    "name, layer, op, cause",
    [
        ("lr_divergence", None, "Square", "learning rate too high"),
        ("deepiv_training", "scales", "Exp", "unbounded op"),
        ("float16_overflow", "hidden", "MatMul", "float16 range exceeded"),
    ],
)
def test_training_sample_breaks_like_fit(keras, name, layer, op, cause):
    report = scan(sample(name), sample(name, ".npz"), fit_steps=48, batch_size=BATCH)
    training = [f for f in report.findings if f.phase == "training"]
    top = training[0]
    assert report.training["break_step"] == top.step
    assert top.layer == layer
    assert top.op == op
    assert cause in top.evidence.details["causes"]
    assert fit_first_nonfinite_step(keras, name) == top.step


def test_lr_divergence_fix_names_value(tf):
    report = scan(sample("lr_divergence"), sample("lr_divergence", ".npz"), fit_steps=10, batch_size=BATCH)
    top = [f for f in report.findings if f.phase == "training"][0]
    assert "0.001" in top.fix
    assert "Normalization" in top.fix
    assert "hidden/kernel" in top.evidence.details["chain"]


def test_suggested_fix_removes_break(tf, tmp_path):
    # Apply the two fixes the finding names: targets scaled to unit variance
    # and a learning rate ten times lower.
    data = np.load(sample("lr_divergence", ".npz"))
    np.savez(tmp_path / "d.npz", x=data["x"], y=data["y"] / data["y"].std())
    report = scan(sample("lr_divergence"), str(tmp_path / "d.npz"), fit_steps=24, batch_size=BATCH,
                  learning_rate=0.001)
    assert report.training["break_step"] is None
    assert [f for f in report.findings if f.severity == "error"] == []


def test_float16_overflow_names_limit(tf):
    report = scan(sample("float16_overflow"), sample("float16_overflow", ".npz"), fit_steps=48, batch_size=BATCH)
    top = [f for f in report.findings if f.phase == "training"][0]
    assert top.kind == "overflow"
    assert top.evidence.dtype == "float16"
    assert "float16 max of 6.55e+04" in top.evidence.sentence
    assert report.training["optimizer"]["loss_scaling"] is True


def test_healthy_replay_has_no_error(tf):
    report = scan(sample("healthy"), sample("healthy", ".npz"), fit_steps=8, batch_size=BATCH)
    assert report.training["steps_run"] == 8
    assert report.training["break_step"] is None
    assert [f for f in report.findings if f.severity == "error"] == []


def test_replay_does_not_write_model(tf, tmp_path):
    path = tmp_path / "m.keras"
    path.write_bytes(open(sample("lr_divergence"), "rb").read())
    before = path.read_bytes()
    scan(str(path), sample("lr_divergence", ".npz"), fit_steps=6, batch_size=BATCH)
    assert path.read_bytes() == before


def test_nan_weights_suggest_from_init(keras, tmp_path):
    model = keras.saving.load_model(sample("lr_divergence"))
    kernel, bias = model.get_layer("hidden").get_weights()
    kernel[0, 0] = np.nan
    model.get_layer("hidden").set_weights([kernel, bias])
    model.save(str(tmp_path / "m.keras"))

    report = scan(str(tmp_path / "m.keras"), sample("lr_divergence", ".npz"), fit_steps=6, batch_size=BATCH)
    weights = [f for f in report.findings if f.kind == "nonfinite_weights"]
    assert weights[0].layer == "hidden"
    assert weights[0].step == -1
    assert "--from-init" in weights[0].fix
    assert report.training is None

    fresh = scan(str(tmp_path / "m.keras"), sample("lr_divergence", ".npz"), fit_steps=10, batch_size=BATCH,
                 from_init=True)
    assert fresh.training["from_init"] is True
    assert fresh.training["break_step"] is not None
    assert [f for f in fresh.findings if f.phase == "training"][0].op == "Square"


def test_exploding_gradient_warning(tf):
    report = scan(sample("lr_divergence"), sample("lr_divergence", ".npz"), fit_steps=3, batch_size=BATCH)
    kinds = [f.kind for f in report.findings]
    assert report.training["break_step"] is None
    assert "exploding_gradient" in kinds


def test_fit_steps_need_targets(tf):
    from nandoctor.errors import UsageError

    with pytest.raises(UsageError, match="needs targets"):
        scan(sample("healthy"), fit_steps=3)


def test_callback_stops_fit_and_diagnoses(keras, capsys):
    from nandoctor.keras import NanDoctorCallback

    model = keras.saving.load_model(sample("lr_divergence"))
    data = np.load(sample("lr_divergence", ".npz"))
    callback = NanDoctorCallback(data["x"], data["y"], batch_size=BATCH)
    history = model.fit(data["x"], data["y"], batch_size=BATCH, shuffle=False, epochs=3, verbose=0,
                        callbacks=[callback])
    assert callback.failed_batch == (0, 3)
    assert len(history.history["loss"]) == 1
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert callback.report.findings[0].op == "Square"
    assert "ND101" in capsys.readouterr().out
