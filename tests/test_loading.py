"""Loading models and data: safe mode, custom objects, and unreadable or mismatched files."""

import importlib.util
import textwrap
import zipfile

import numpy as np
import pytest

from nandoctor.errors import (
    CustomObjectsError,
    DataLoadError,
    MissingCustomObjectsError,
    ModelLoadError,
    UntrustedCodeError,
)
from nandoctor.scanner import scan


def import_user_file(path, module_name):
    """Import a Python file written by the test, the way a user's script is imported."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_user_file(path, source):
    path.write_text(textwrap.dedent(source))
    return path


def save_lambda_model(keras, path, function, lambda_name="step"):
    """Save Input(4) -> Dense(4) -> Lambda(function) -> Dense(1), compiled with MSE.

    The loss is spelled "mean_squared_error" because Keras 3.15 cannot load a
    compiled .h5 file whose loss is the alias "mse" (see test_h5_compiled_with_mse_alias).
    """
    inputs = keras.Input((4,), name="x")
    hidden = keras.layers.Dense(4, name="dense")(inputs)
    mapped = keras.layers.Lambda(function, name=lambda_name)(hidden)
    outputs = keras.layers.Dense(1, name="head")(mapped)
    model = keras.Model(inputs, outputs, name="lambda_model")
    model.compile(optimizer="adam", loss="mean_squared_error")
    model.save(str(path))
    return str(path)


def file_creating_lambda(marker):
    """Return a lambda that creates the file `marker`.

    The path is a constant inside the lambda's bytecode, so the saved model
    needs neither default arguments nor a closure to reach it.
    """
    return eval(f"lambda h: (open({str(marker)!r}, 'w').close(), h)[1]")


def save_data(path, samples=32, features=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, features)).astype("float32")
    y = rng.normal(size=(samples, 1)).astype("float32")
    np.savez(path, x=x, y=y)
    return str(path)


@pytest.fixture(scope="module")
def dense_model(keras, tmp_path_factory):
    """A saved healthy model with input shape (None, 4) and output shape (None, 1)."""
    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("dense") / "dense.keras"
    inputs = keras.Input((4,), name="features")
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    outputs = keras.layers.Dense(1, name="head")(hidden)
    model = keras.Model(inputs, outputs, name="dense_model")
    model.compile(optimizer="adam", loss="mse")
    model.save(str(path))
    return str(path)


# Safe mode and --trust-code.


@pytest.mark.parametrize("extension", [".keras", ".h5"])
def test_inline_lambda_needs_trust_code(keras, tmp_path, extension):
    path = save_lambda_model(keras, tmp_path / f"m{extension}", lambda h: h * 2.0, "doubler")

    with pytest.raises(UntrustedCodeError) as error:
        scan(path)
    message = error.value.format_message()
    assert "'doubler'" in message
    assert "--trust-code" in message
    assert error.value.exit_code == 3

    report = scan(path, trust_code=True)
    assert report.findings == []
    assert report.model["format"] == extension.lstrip(".")


@pytest.mark.parametrize("extension", [".keras", ".h5"])
def test_safe_mode_runs_no_lambda_code(keras, tmp_path, extension):
    marker = tmp_path / "lambda_ran"
    path = save_lambda_model(keras, tmp_path / f"m{extension}", file_creating_lambda(marker), "touch")
    # Building the model calls the lambda once on symbolic tensors.
    assert marker.exists()
    marker.unlink()

    with pytest.raises(UntrustedCodeError):
        scan(path)
    assert not marker.exists()

    # The same file with --trust-code does run the lambda, so the check above can fail.
    scan(path, trust_code=True)
    assert marker.exists()


def test_h5_compiled_with_mse_alias(keras, tmp_path):
    inputs = keras.Input((4,), name="x")
    outputs = keras.layers.Dense(1, name="head")(inputs)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="mse")
    path = tmp_path / "m.h5"
    model.save(str(path))
    data = tmp_path / "d.npz"
    np.savez(data, x=np.ones((8, 4), "float32"), y=np.zeros((8, 1), "float32"))

    report = scan(str(path), str(data))
    assert report.findings == []
    assert "mean_squared_error" in report.loss


# Functions defined in the user's own Python file.


@pytest.fixture
def user_function_model(keras, tmp_path):
    """A model whose Lambda calls `shift_down` from a user file, and that file's marker."""
    marker = tmp_path / "main_block_ran"
    functions = write_user_file(tmp_path / "train_script.py", f"""
        def shift_down(x):
            return x - 1.0


        if __name__ == "__main__":
            open({str(marker)!r}, "w").close()
    """)
    module = import_user_file(functions, "train_script")
    path = save_lambda_model(keras, tmp_path / "m.keras", module.shift_down, "shift")
    return path, str(functions), marker


def test_named_function_needs_custom_objects(user_function_model):
    path, _, _ = user_function_model

    with pytest.raises(MissingCustomObjectsError) as error:
        scan(path)
    message = error.value.format_message()
    assert "'shift_down'" in message
    assert "--custom-objects" in message


def test_custom_objects_file_loads_model(user_function_model):
    path, functions, marker = user_function_model

    report = scan(path, custom_objects=[functions])
    assert report.findings == []
    assert [row.name for row in report.layers] == ["dense", "shift", "head"]
    assert not marker.exists()


def test_custom_objects_import_error(user_function_model, tmp_path):
    path, _, _ = user_function_model
    broken = write_user_file(tmp_path / "broken.py", """
        def shift_down(x):
            return x - 1.0

        raise RuntimeError("configuration file missing")
    """)

    with pytest.raises(CustomObjectsError) as error:
        scan(path, custom_objects=[str(broken)])
    message = error.value.format_message()
    assert str(broken) in message
    assert "RuntimeError" in message


def test_trusted_lambda_using_tf(tf, keras, tmp_path):
    builder = write_user_file(tmp_path / "build_exp.py", """
        import keras
        import tensorflow as tf


        def build(path):
            inputs = keras.Input((4,), name="x")
            hidden = keras.layers.Dense(4, name="dense")(inputs)
            exp = keras.layers.Lambda(lambda t: tf.exp(t), name="tf_exp")(hidden)
            outputs = keras.layers.Dense(1, name="head")(exp)
            model = keras.Model(inputs, outputs)
            model.compile(optimizer="adam", loss="mse")
            model.save(path)
    """)
    path = str(tmp_path / "m.keras")
    import_user_file(builder, "build_exp").build(path)
    data = save_data(tmp_path / "d.npz")

    report = scan(path, data, trust_code=True)
    assert report.findings == []
    assert [row.name for row in report.layers] == ["dense", "tf_exp", "head"]


def test_library_function_lambda(keras, tmp_path):
    path = save_lambda_model(keras, tmp_path / "m.keras", keras.ops.exp, "exp_layer")
    data = save_data(tmp_path / "d.npz")

    with pytest.raises(MissingCustomObjectsError) as error:
        scan(path, data)
    message = error.value.format_message()
    assert "'exp'" in message
    assert "--trust-code" in message

    report = scan(path, data, trust_code=True)
    assert report.findings == []
    assert report.samples == 32


# Model files that cannot be read.


def test_model_file_missing(tmp_path):
    with pytest.raises(ModelLoadError) as error:
        scan(str(tmp_path / "absent.keras"))
    assert "not found" in error.value.format_message()


def test_model_path_is_directory(tmp_path):
    with pytest.raises(ModelLoadError) as error:
        scan(str(tmp_path))
    assert "directory" in error.value.format_message()


def test_model_file_random_bytes(tmp_path):
    path = tmp_path / "noise.keras"
    path.write_bytes(np.random.default_rng(0).bytes(4096))

    with pytest.raises(ModelLoadError):
        scan(str(path))


def test_model_file_truncated(dense_model, tmp_path):
    content = open(dense_model, "rb").read()
    path = tmp_path / "truncated.keras"
    path.write_bytes(content[: len(content) // 2])

    with pytest.raises(ModelLoadError):
        scan(str(path))


def test_keras_archive_missing_weights(dense_model, tmp_path):
    path = tmp_path / "no_weights.keras"
    with zipfile.ZipFile(dense_model) as source, zipfile.ZipFile(path, "w") as target:
        for name in source.namelist():
            if name != "model.weights.h5":
                target.writestr(name, source.read(name))

    with pytest.raises(ModelLoadError):
        scan(str(path))


# Data files.


def test_data_missing_key(dense_model, tmp_path):
    data = tmp_path / "d.npz"
    np.savez(data, inputs=np.zeros((8, 4), "float32"), labels=np.zeros((8, 1), "float32"))

    with pytest.raises(DataLoadError) as error:
        scan(dense_model, str(data))
    message = error.value.format_message()
    assert "'inputs'" in message
    assert "'labels'" in message
    assert "--x-key" in message


def test_data_x_key_selects_array(dense_model, tmp_path):
    data = tmp_path / "d.npz"
    np.savez(data, inputs=np.zeros((8, 4), "float32"), labels=np.zeros((8, 1), "float32"))

    report = scan(dense_model, str(data), x_keys=["inputs"], y_keys=["labels"])
    assert report.data["input_keys"] == ["inputs"]
    assert report.data["target_keys"] == ["labels"]
    assert report.samples == 8


def test_data_wrong_feature_shape(dense_model, tmp_path):
    data = tmp_path / "d.npz"
    np.savez(data, x=np.zeros((10, 5), "float32"))

    with pytest.raises(DataLoadError) as error:
        scan(dense_model, str(data))
    message = error.value.format_message()
    assert "(10, 5)" in message
    assert "(None, 4)" in message


def test_data_npy_inputs(dense_model, tmp_path):
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(1).normal(size=(20, 4)).astype("float32"))

    report = scan(dense_model, str(data))
    assert report.data["format"] == "npy"
    assert report.samples == 20
    assert report.findings == []


def test_data_h5_file(dense_model, tmp_path):
    import h5py

    data = tmp_path / "d.h5"
    rng = np.random.default_rng(2)
    with h5py.File(data, "w") as handle:
        handle.create_dataset("x", data=rng.normal(size=(24, 4)).astype("float32"))
        handle.create_dataset("y", data=rng.normal(size=(24, 1)).astype("float32"))

    report = scan(dense_model, str(data), batch_size=16)
    assert report.data["format"] == "h5"
    assert report.data["target_keys"] == ["y"]
    assert report.samples == 24
    assert report.batches == 2
    assert report.findings == []


def test_data_object_array_rejected(dense_model, tmp_path):
    data = tmp_path / "d.npz"
    rows = np.empty(4, dtype=object)
    for i in range(4):
        rows[i] = [0.0, 1.0, 2.0, 3.0]
    np.savez(data, x=rows)

    with pytest.raises(DataLoadError) as error:
        scan(dense_model, str(data))
    assert "pickle" in error.value.format_message()


def test_data_lengths_differ(dense_model, tmp_path):
    data = tmp_path / "d.npz"
    np.savez(data, x=np.zeros((10, 4), "float32"), y=np.zeros((8, 1), "float32"))

    with pytest.raises(DataLoadError) as error:
        scan(dense_model, str(data))
    message = error.value.format_message()
    assert "x: 10" in message
    assert "y: 8" in message


def test_data_file_missing(dense_model, tmp_path):
    with pytest.raises(DataLoadError) as error:
        scan(dense_model, str(tmp_path / "absent.npz"))
    assert "not found" in error.value.format_message()


def test_target_shape_mismatch_rejected(keras, tmp_path):
    inputs = keras.Input((4,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(inputs))
    model.compile(optimizer="adam", loss="mean_squared_error")
    model.save(str(tmp_path / "m.keras"))
    np.savez(tmp_path / "d.npz", x=np.ones((10, 4), "float32"), y=np.ones((10, 3), "float32"))

    with pytest.raises(DataLoadError) as error:
        scan(str(tmp_path / "m.keras"), str(tmp_path / "d.npz"))
    message = error.value.format_message()
    assert "(10, 3)" in message
    assert "--y-key" in message


def test_text_file_as_npz_rejected(keras, tmp_path):
    inputs = keras.Input((4,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(inputs))
    model.save(str(tmp_path / "m.keras"))
    data = tmp_path / "d.npz"
    data.write_text("not numpy data\n")

    with pytest.raises(DataLoadError) as error:
        scan(str(tmp_path / "m.keras"), str(data))
    message = error.value.format_message()
    assert "not a valid npz archive" in message
    assert "pickle" not in message
