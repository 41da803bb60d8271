"""Each kind of fault, planted in a small saved model, is found at the right layer and op."""

import importlib.util
import inspect
import textwrap

import numpy as np
import pytest

from nandoctor.scanner import scan

# The user's training script: the functions its Lambda layers and loss call.
USER_FUNCTIONS = """
    import tensorflow as tf


    def root(h):
        return tf.sqrt(h)


    def masked_root(h):
        return tf.where(h > 0, tf.sqrt(h), 0.0)


    def masked_power(h):
        return tf.where(h > 0, tf.pow(h, 0.5), 0.0)


    def to_half(h):
        return tf.cast(h * 1000.0, tf.float16)


    def log_loss(y_true, y_pred):
        return tf.square(y_true - tf.math.log(y_pred))


    log_relu = lambda h: tf.math.log(tf.nn.relu(h))
"""


@pytest.fixture
def user_functions(tf, tmp_path):
    """The user's script written to tmp_path and imported: (module, path)."""
    path = tmp_path / "model_functions.py"
    path.write_text(textwrap.dedent(USER_FUNCTIONS))
    spec = importlib.util.spec_from_file_location("model_functions", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, str(path)


def save_chain_model(keras, path, function, lambda_name, seed=0):
    """Save Input(4) -> Dense(4, "dense") -> Lambda(function) -> Dense(1, "head")."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,), name="x")
    hidden = keras.layers.Dense(4, name="dense")(inputs)
    mapped = keras.layers.Lambda(function, name=lambda_name)(hidden)
    outputs = keras.layers.Dense(1, name="head")(mapped)
    model = keras.Model(inputs, outputs, name="chain")
    model.compile(optimizer="adam", loss="mean_squared_error")
    model.save(str(path))
    return str(path)


def save_data(path, samples=64, features=4, scale=1.0, seed=0):
    rng = np.random.default_rng(seed)
    x = (scale * rng.normal(size=(samples, features))).astype("float32")
    y = rng.normal(size=(samples, 1)).astype("float32")
    np.savez(path, x=x, y=y)
    return str(path)


def line_of(function, text):
    """Return the line number of the first line of `function` that contains `text`."""
    source, first_line = inspect.getsourcelines(function)
    return first_line + next(i for i, line in enumerate(source) if text in line)


def build_dense_stack(keras, seed=0):
    """Build and compile Input(4) -> Dense(8, "first") -> Dense(8, "middle") -> Dense(1, "head")."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((4,), name="x"),
        keras.layers.Dense(8, activation="tanh", name="first"),
        keras.layers.Dense(8, activation="tanh", name="middle"),
        keras.layers.Dense(1, name="head"),
    ], name="stack")
    model.compile(optimizer="adam", loss="mean_squared_error")
    return model


# Faults already present in the files.


def test_nan_in_input_data(keras, tmp_path):
    model = build_dense_stack(keras)
    model.save(str(tmp_path / "m.keras"))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 4)).astype("float32")
    x[3, 1] = np.nan
    x[70, 2] = np.nan
    np.savez(tmp_path / "d.npz", x=x, y=rng.normal(size=(100, 1)).astype("float32"))

    report = scan(str(tmp_path / "m.keras"), str(tmp_path / "d.npz"))
    top = report.findings[0]
    assert top.kind == "nonfinite_input"
    assert top.phase == "data"
    assert top.layer == "x"
    assert top.op is None
    assert top.evidence.nan == 2
    assert top.evidence.samples_affected == 2
    assert top.evidence.first_sample_indices == (3, 70)
    assert top.evidence.batch == 0
    assert [f.phase for f in report.findings if f.phase in ("forward", "backward")] == []
    assert top.propagated_to == ("first", "middle", "head")


def test_nan_in_saved_weights(keras, tmp_path):
    model = build_dense_stack(keras)
    kernel, bias = model.get_layer("middle").get_weights()
    kernel[0, 0] = np.nan
    model.get_layer("middle").set_weights([kernel, bias])
    model.save(str(tmp_path / "m.keras"))
    data = save_data(tmp_path / "d.npz")

    report = scan(str(tmp_path / "m.keras"), data)
    top = report.findings[0]
    assert top.kind == "nonfinite_weights"
    assert top.phase == "weights"
    assert top.layer == "middle"
    assert top.layer_class == "Dense"
    assert top.evidence.details["weight"] == "middle/kernel"
    assert top.evidence.nan == 1
    assert [f for f in report.findings if f.layer == "middle" and f.phase == "forward"] == []
    assert [f.kind for f in report.findings] == ["nonfinite_weights"]


# Faults created by an op during the forward pass.


def test_sqrt_of_negative(keras, tmp_path, user_functions):
    module, functions = user_functions
    path = save_chain_model(keras, tmp_path / "m.keras", module.root, "root")
    data = save_data(tmp_path / "d.npz")

    report = scan(path, data, custom_objects=[functions])
    top = report.findings[0]
    assert top.kind == "invalid_domain"
    assert top.phase == "forward"
    assert top.layer == "root"
    assert top.op == "Sqrt"
    assert top.evidence.input_min < 0
    assert top.location.file == functions
    assert top.location.function == "root"
    assert top.location.line == line_of(module.root, "tf.sqrt")
    assert top.propagated_to == ("head",)


def test_log_of_zero(keras, tmp_path, user_functions):
    module, _ = user_functions
    path = save_chain_model(keras, tmp_path / "m.keras", module.log_relu, "log_relu")
    data = save_data(tmp_path / "d.npz")

    report = scan(path, data, trust_code=True)
    top = report.findings[0]
    assert top.kind == "division_by_zero"
    assert top.phase == "forward"
    assert top.layer == "log_relu"
    assert top.op == "Log"
    assert top.evidence.neginf > 0
    assert top.location.function == "<lambda>"


def test_cast_to_float16_overflows(keras, tmp_path, user_functions):
    module, functions = user_functions
    path = save_chain_model(keras, tmp_path / "m.keras", module.to_half, "half")
    data = save_data(tmp_path / "d.npz", scale=100.0)

    report = scan(path, data, custom_objects=[functions])
    top = report.findings[0]
    assert top.kind == "overflow"
    assert top.phase == "forward"
    assert top.layer == "half"
    assert top.op == "Cast"
    assert top.evidence.dtype == "float16"
    assert top.evidence.details["dtype_max"] == 65504.0


def test_large_dense_kernel_overflows(keras, tmp_path):
    # No activation: a tanh after the MatMul would turn the Inf back into 1.
    inputs = keras.Input((4,), name="x")
    hidden = keras.layers.Dense(8, name="first")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(hidden))
    model.compile(optimizer="adam", loss="mean_squared_error")
    kernel, bias = model.get_layer("first").get_weights()
    model.get_layer("first").set_weights([np.full_like(kernel, 1e38), bias])
    model.save(str(tmp_path / "m.keras"))
    data = save_data(tmp_path / "d.npz", scale=10.0)

    report = scan(str(tmp_path / "m.keras"), data)
    top = report.findings[0]
    assert top.kind == "overflow"
    assert top.phase == "forward"
    assert top.layer == "first"
    assert top.op == "MatMul"
    assert top.location is None


# Faults that appear only in the backward pass or the loss.


def test_where_hides_pow_nan(keras, tmp_path, user_functions):
    module, functions = user_functions
    path = save_chain_model(keras, tmp_path / "m.keras", module.masked_power, "masked_power")
    data = save_data(tmp_path / "d.npz")

    report = scan(path, data, custom_objects=[functions])
    top = report.findings[0]
    assert top.kind == "infinite_gradient"
    assert top.phase == "backward"
    assert top.layer == "masked_power"
    assert top.op == "Pow"
    assert top.evidence.details["hidden_forward_nan"] is True
    assert "double-where" in top.fix
    assert top.location.function == "masked_power"
    assert top.location.line == line_of(module.masked_power, "tf.pow")
    assert [f.phase for f in report.findings if f.phase == "forward"] == []


def test_where_sqrt_gradient_finite(tf, keras, tmp_path, user_functions):
    module, functions = user_functions
    # TensorFlow 2.21's SqrtGrad returns 0 where the incoming gradient is 0,
    # so tf.where(h > 0, tf.sqrt(h), 0.0) has a finite gradient at h <= 0.
    h = tf.constant([[-1.0, 0.0, 2.0]])
    with tf.GradientTape() as tape:
        tape.watch(h)
        total = tf.reduce_sum(module.masked_root(h))
    assert np.isfinite(tape.gradient(total, h).numpy()).all()

    path = save_chain_model(keras, tmp_path / "m.keras", module.masked_root, "masked_root")
    data = save_data(tmp_path / "d.npz")

    report = scan(path, data, custom_objects=[functions])
    assert report.findings == []


def test_custom_loss_log_fault(keras, tmp_path, user_functions):
    module, functions = user_functions
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,), name="x")
    outputs = keras.layers.Dense(1, name="head")(inputs)
    model = keras.Model(inputs, outputs, name="regressor")
    model.compile(optimizer="adam", loss=module.log_loss)
    model.save(str(tmp_path / "m.keras"))
    data = save_data(tmp_path / "d.npz")

    report = scan(str(tmp_path / "m.keras"), data, custom_objects=[functions])
    top = report.findings[0]
    assert top.layer is None
    assert top.layer_class is None
    assert top.op == "Log"
    assert top.kind == "invalid_domain"
    assert top.phase == "forward"
    assert top.location.function == "log_loss"
    assert "log_loss" in report.loss


# Model structures.


def test_nested_model_layer_name(keras, tmp_path, user_functions):
    module, functions = user_functions
    keras.utils.set_random_seed(0)
    inner_inputs = keras.Input((4,), name="inner_x")
    inner_hidden = keras.layers.Dense(4, name="project")(inner_inputs)
    inner_outputs = keras.layers.Lambda(module.root, name="root")(inner_hidden)
    encoder = keras.Model(inner_inputs, inner_outputs, name="encoder")

    inputs = keras.Input((4,), name="x")
    hidden = keras.layers.Dense(4, name="pre")(inputs)
    outputs = keras.layers.Dense(1, name="head")(encoder(hidden))
    model = keras.Model(inputs, outputs, name="outer")
    model.compile(optimizer="adam", loss="mean_squared_error")
    model.save(str(tmp_path / "m.keras"))
    data = save_data(tmp_path / "d.npz")

    report = scan(str(tmp_path / "m.keras"), data, custom_objects=[functions])
    top = report.findings[0]
    assert top.layer == "encoder/root"
    assert top.kind == "invalid_domain"
    assert top.op == "Sqrt"
    assert [row.name for row in report.layers] == ["pre", "encoder/project", "encoder/root", "head"]


def test_healthy_sequential_clean(keras, tmp_path):
    model = build_dense_stack(keras)
    model.save(str(tmp_path / "m.keras"))
    data = save_data(tmp_path / "d.npz", samples=128)

    report = scan(str(tmp_path / "m.keras"), data)
    assert report.findings == []
    assert report.samples == 128
    assert all(row.output_nonfinite == 0 for row in report.layers)
    assert all(row.gradient_nonfinite == 0 for row in report.layers)


def test_healthy_cnn_clean(keras, tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1), name="image"),
        keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
        keras.layers.MaxPooling2D(2, name="pool"),
        keras.layers.BatchNormalization(name="norm"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(3, activation="softmax", name="classes"),
    ], name="cnn")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.random((64, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, size=64).astype("int64")
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    model.save(str(tmp_path / "m.keras"))
    np.savez(tmp_path / "d.npz", x=x, y=y)

    report = scan(str(tmp_path / "m.keras"), str(tmp_path / "d.npz"), batch_size=32)
    assert report.findings == []
    assert report.data["target_keys"] == ["y"]
    assert "sparse_categorical_crossentropy" in report.loss
    assert [row.layer_class for row in report.layers] == [
        "Conv2D", "MaxPooling2D", "BatchNormalization", "Flatten", "Dense"]


def test_multi_input_output_fault_branch(keras, tmp_path, user_functions):
    module, functions = user_functions
    keras.utils.set_random_seed(0)
    left = keras.Input((4,), name="left")
    right = keras.Input((3,), name="right")
    left_hidden = keras.layers.Dense(4, activation="tanh", name="left_dense")(left)
    right_hidden = keras.layers.Dense(4, name="right_dense")(right)
    right_root = keras.layers.Lambda(module.root, name="right_root")(right_hidden)
    score = keras.layers.Dense(1, name="score")(left_hidden)
    level = keras.layers.Dense(1, name="level")(right_root)
    model = keras.Model([left, right], [score, level], name="two_heads")
    model.compile(optimizer="adam", loss={"score": "mean_squared_error", "level": "mean_squared_error"})
    model.save(str(tmp_path / "m.keras"))
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "d.npz",
        left=rng.normal(size=(48, 4)).astype("float32"),
        right=rng.normal(size=(48, 3)).astype("float32"),
        score=rng.normal(size=(48, 1)).astype("float32"),
        level=rng.normal(size=(48, 1)).astype("float32"),
    )

    report = scan(str(tmp_path / "m.keras"), str(tmp_path / "d.npz"), custom_objects=[functions])
    assert report.data["input_keys"] == ["left", "right"]
    assert report.data["target_keys"] == ["score", "level"]
    top = report.findings[0]
    assert top.kind == "invalid_domain"
    assert top.layer == "right_root"
    assert top.op == "Sqrt"
    assert top.propagated_to == ("level",)
    assert {f.layer for f in report.findings}.isdisjoint({"left", "left_dense", "score"})


def test_nan_input_named_by_model_input(keras, tmp_path):
    inputs = keras.Input((4,), name="features")
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(inputs))
    model.compile(optimizer="adam", loss="mean_squared_error")
    model.save(str(tmp_path / "m.keras"))
    x = np.ones((8, 4), "float32")
    x[2, 0] = np.inf
    np.savez(tmp_path / "d.npz", x=x, y=np.zeros((8, 1), "float32"))

    report = scan(str(tmp_path / "m.keras"), str(tmp_path / "d.npz"))
    top = report.findings[0]
    assert top.layer == "features"
    assert top.evidence.details["array"] == "x"
    assert top.evidence.posinf == 1


def test_nan_target_fix_names_y(keras, tmp_path):
    model = build_dense_stack(keras)
    model.save(str(tmp_path / "m.keras"))
    y = np.zeros((8, 1), "float32")
    y[5, 0] = np.nan
    np.savez(tmp_path / "d.npz", x=np.ones((8, 4), "float32"), y=y)

    report = scan(str(tmp_path / "m.keras"), str(tmp_path / "d.npz"))
    top = report.findings[0]
    assert top.kind == "nonfinite_input"
    assert top.layer is None
    assert top.evidence.first_sample_indices == (5,)
    assert "np.isfinite(y)" in top.fix


def test_stand_in_loss_reaches_softmax(keras, tmp_path):
    # Without targets, the stand-in gradient must not vanish behind a softmax,
    # or sqrt at 0 before it would go unnoticed.
    inputs = keras.Input((4,), name="x")
    hidden = keras.layers.Dense(6, name="dense")(inputs)
    root = keras.layers.Lambda(keras.ops.sqrt, name="root")(keras.layers.ReLU(name="relu")(hidden))
    outputs = keras.layers.Dense(3, activation="softmax", name="probs")(root)
    model = keras.Model(inputs, outputs)
    model.save(str(tmp_path / "m.keras"))
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    np.save(tmp_path / "x.npy", x)

    report = scan(str(tmp_path / "m.keras"), str(tmp_path / "x.npy"), trust_code=True)
    top = report.findings[0]
    assert top.kind == "infinite_gradient"
    assert top.layer == "root"
    assert top.op == "Sqrt"


def test_training_mode_uses_batch_statistics(keras, tmp_path):
    # Moving variance 0 with epsilon 0 divides by zero in inference mode only:
    # training mode normalizes with the batch variance instead.
    inputs = keras.Input((4,), name="x")
    normalized = keras.layers.BatchNormalization(epsilon=0.0, name="norm")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(normalized))
    model.compile(optimizer="adam", loss="mean_squared_error")
    gamma, beta, mean, variance = model.get_layer("norm").get_weights()
    model.get_layer("norm").set_weights([gamma, beta, mean + 5.0, np.zeros_like(variance)])
    model.save(str(tmp_path / "m.keras"))
    data = save_data(tmp_path / "d.npz")

    inference = scan(str(tmp_path / "m.keras"), data)
    training = scan(str(tmp_path / "m.keras"), data, training=True)
    assert inference.findings[0].layer == "norm"
    assert inference.findings[0].kind == "division_by_zero"
    assert training.findings == []
    assert any("training mode" in note for note in training.notes)
