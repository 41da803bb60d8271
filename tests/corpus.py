"""Bad inputs for `nandoctor scan`, each with the exit status and message it must produce.

`CASES` is a table of cases. Each case builds its files under a test's
`tmp_path` (or takes a shared saved model from `ModelFiles`) and returns the
arguments after `scan`. test_bad_inputs.py runs every case through the command
line. test_disk_safety.py runs them again to check that no file changes and no
temporary file is left behind.
"""

import os
import textwrap
import zipfile
from dataclasses import dataclass

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from nandoctor.cli import cli

FEATURES = 4
"""Input width of the shared Dense models."""

# Functions for Lambda layers, as a user keeps them in a training script. The
# models are saved with these working versions.
MODEL_FUNCTIONS = '''
import tensorflow as tf


def strict(x):
    return x * 1.0


def value_check(x):
    return x + 0.0


def checked(x):
    tf.debugging.assert_less(x, 100.0, message="checked rejects values of 100 or more")
    return x * 1.0


def checked_py(x):
    def check(values):
        if float(tf.reduce_max(values)) >= 100.0:
            raise ValueError("checked_py rejects values of 100 or more")
        return values

    result = tf.py_function(check, [x], tf.float32)
    result.set_shape(x.shape)
    return result
'''

# The same names, edited so that calling them raises.
BROKEN_FUNCTIONS = '''
def strict(x):
    raise RuntimeError("strict was edited and now always fails")


def value_check(x):
    raise ValueError("value_check rejects every input")
'''


def invoke(*args):
    """Run `nandoctor` in this process and return click's `Result`."""
    return CliRunner().invoke(cli, [str(arg) for arg in args])


def error_lines(result):
    return [line for line in result.stderr.splitlines() if line.startswith("Error:")]


class ModelFiles:
    """Saved models shared by the cases, each built on first use.

    A model is saved once per test module into `folder`. Scans only read these
    files, which test_disk_safety.py checks.
    """

    def __init__(self, folder, keras, tf):
        self.folder = folder
        self.keras = keras
        self.tf = tf
        self._paths = {}

    def path(self, name):
        """Return the path of model `name`, saving it on first use."""
        if name not in self._paths:
            self.keras.utils.set_random_seed(0)
            self._paths[name] = getattr(self, "_save_" + name)()
        return self._paths[name]

    def functions_file(self):
        path = os.path.join(self.folder, "model_functions.py")
        if not os.path.exists(path):
            with open(path, "w") as handle:
                handle.write(MODEL_FUNCTIONS)
        return path

    def _dense_model(self):
        keras = self.keras
        inputs = keras.Input((FEATURES,), name="features")
        hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
        outputs = keras.layers.Dense(1, name="head")(hidden)
        model = keras.Model(inputs, outputs, name="dense_model")
        model.compile(optimizer="adam", loss="mean_squared_error")
        return model

    def _save(self, model, filename):
        path = os.path.join(self.folder, filename)
        model.save(path)
        return path

    def _save_dense(self):
        return self._save(self._dense_model(), "dense.keras")

    def _save_dense_h5(self):
        return self._save(self._dense_model(), "dense.h5")

    def _save_weights_only(self):
        path = os.path.join(self.folder, "dense.weights.h5")
        self._dense_model().save_weights(path)
        return path

    def _save_saved_model(self):
        path = os.path.join(self.folder, "saved_model_dir")
        self.tf.saved_model.save(self._dense_model(), path)
        return path

    def _save_exported(self):
        path = os.path.join(self.folder, "exported_dir")
        self._dense_model().export(path, verbose=False)
        return path

    def _save_embedding(self):
        keras = self.keras
        ids = keras.Input((3,), name="ids", dtype="int32")
        vectors = keras.layers.Embedding(10, 2, name="embed")(ids)
        flat = keras.layers.Flatten(name="flat")(vectors)
        model = keras.Model(ids, keras.layers.Dense(1, name="head")(flat))
        model.compile(optimizer="adam", loss="mean_squared_error")
        return self._save(model, "embedding.keras")

    def _stack(self, filename, layers, shape=(FEATURES,)):
        keras = self.keras
        inputs = keras.Input(shape, name="x")
        hidden = inputs
        for layer in layers:
            hidden = layer(hidden)
        model = keras.Model(inputs, keras.layers.Dense(1, name="head")(hidden))
        model.compile(optimizer="adam", loss="mean_squared_error")
        return self._save(model, filename)

    def _save_dropout(self):
        layers = self.keras.layers
        return self._stack("dropout.keras", [layers.Dense(8, name="hidden"), layers.Dropout(0.5, name="drop")])

    def _save_batchnorm(self):
        layers = self.keras.layers
        return self._stack("batchnorm.keras", [layers.Dense(8, name="hidden"), layers.BatchNormalization(name="norm")])

    def _save_lstm(self):
        return self._stack("lstm.keras", [self.keras.layers.LSTM(3, name="lstm")], shape=(5, 2))

    def _save_gru(self):
        return self._stack("gru.keras", [self.keras.layers.GRU(3, name="gru")], shape=(5, 2))

    def _save_noise(self):
        layers = self.keras.layers
        return self._stack("noise.keras", [layers.GaussianNoise(0.1, name="noise"), layers.Dense(4, name="hidden")])

    def _lambda_model(self, function_name, filename, output_shape=(FEATURES,)):
        import importlib.util

        spec = importlib.util.spec_from_file_location("model_functions", self.functions_file())
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        layer = self.keras.layers.Lambda(getattr(module, function_name), name=f"{function_name}_layer",
                                         output_shape=output_shape)
        return self._stack(filename, [layer])

    def _save_lambda_strict(self):
        return self._lambda_model("strict", "lambda_strict.keras")

    def _save_lambda_strict_h5(self):
        return self._lambda_model("strict", "lambda_strict.h5")

    def _save_lambda_strict_unshaped(self):
        # Without output_shape, Keras calls the function while it loads the model.
        return self._lambda_model("strict", "lambda_strict_unshaped.keras", output_shape=None)

    def _save_lambda_value_check(self):
        return self._lambda_model("value_check", "lambda_value_check.keras")

    def _save_lambda_checked(self):
        return self._lambda_model("checked", "lambda_checked.keras")

    def _save_lambda_checked_py(self):
        return self._lambda_model("checked_py", "lambda_checked_py.keras")

    def _save_inline_lambda(self):
        return self._stack("inline_lambda.keras", [self.keras.layers.Lambda(lambda t: t * 2.0, name="doubler")])


# Files written by the cases.


def write_npz(folder, name, **arrays):
    path = os.path.join(folder, name)
    np.savez(path, **arrays)
    return path


def write_h5(folder, name, **datasets):
    path = os.path.join(folder, name)
    with h5py.File(path, "w") as handle:
        for key, values in datasets.items():
            handle.create_dataset(key, data=values)
    return path


def write_bytes(folder, name, content):
    path = os.path.join(folder, name)
    with open(path, "wb") as handle:
        handle.write(content)
    return path


def write_text(folder, name, text):
    path = os.path.join(folder, name)
    with open(path, "w") as handle:
        handle.write(textwrap.dedent(text))
    return path


def read_bytes(path):
    with open(path, "rb") as handle:
        return handle.read()


def invert_bytes(content, start, count):
    """Return `content` with `count` bytes from `start` inverted (XOR 0xFF)."""
    changed = bytearray(content)
    for index in range(start, min(start + count, len(changed))):
        changed[index] ^= 0xFF
    return bytes(changed)


def member_data_offset(archive_path, member):
    """Return the offset of a zip member's stored bytes in the archive."""
    with zipfile.ZipFile(archive_path) as archive:
        info = archive.getinfo(member)
    with open(archive_path, "rb") as handle:
        handle.seek(info.header_offset + 26)
        name_length = int.from_bytes(handle.read(2), "little")
        extra_length = int.from_bytes(handle.read(2), "little")
    return info.header_offset + 30 + name_length + extra_length


def rewrite_keras_config(source, folder, name, edit):
    """Copy a .keras archive with its config.json replaced by `edit(text)`."""
    path = os.path.join(folder, name)
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(path, "w") as copy:
        for member in original.namelist():
            content = original.read(member)
            if member == "config.json":
                content = edit(content.decode("utf-8"))
            copy.writestr(member, content)
    return path


def unreadable(path):
    """Remove every permission bit of `path`, or skip when this user can still read it."""
    os.chmod(path, 0)
    if os.access(path, os.R_OK):
        pytest.skip("the test runs as a user who reads files without read permission (root)")
    return path


def features(samples=8, value=1.0, dtype="float32"):
    return np.full((samples, FEATURES), value, dtype=dtype)


def targets(samples=8, dtype="float32"):
    return np.ones((samples, 1), dtype=dtype)


def with_nan(array):
    array = array.copy()
    array[1, 0] = np.nan
    return array


# The table.


@dataclass(frozen=True)
class Case:
    """One bad input and the outcome `nandoctor scan` must produce.

    `build(tmp, models)` writes the case's files under `tmp` and returns the
    arguments after `scan`. Each fragment is formatted with `tmp` and must
    appear in stderr for an error (status 2 or 3) or in stdout for a report
    (status 0 or 1).
    """

    name: str
    build: object
    status: int
    fragments: tuple = ()
    xfail: str | None = None
    """Reason the case fails today, for a strict xfail."""


def _model(name):
    return lambda tmp, models: [models.path(name)]


def _dense_with(data_builder, *options):
    return lambda tmp, models: [models.path("dense"), data_builder(tmp), *options]


def _truncated_keras(tmp, models):
    content = read_bytes(models.path("dense"))
    return [write_bytes(tmp, "truncated.keras", content[: len(content) // 2])]


def _corrupted_keras_weights(tmp, models):
    source = models.path("dense")
    offset = member_data_offset(source, "model.weights.h5")
    return [write_bytes(tmp, "corrupted.keras", invert_bytes(read_bytes(source), offset + 512, 64))]


def _truncated_h5(tmp, models):
    content = read_bytes(models.path("dense_h5"))
    return [write_bytes(tmp, "truncated.h5", content[: len(content) // 2])]


def _corrupted_h5(tmp, models):
    content = read_bytes(models.path("dense_h5"))
    return [write_bytes(tmp, "corrupted.h5", invert_bytes(content, len(content) // 2, 256))]


def _keras_without_config(tmp, models):
    path = os.path.join(tmp, "no_config.keras")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "not a model")
    return [path]


def _keras_config(name, edit):
    return lambda tmp, models: [rewrite_keras_config(models.path("dropout"), tmp, name, edit)]


def _unknown_custom_class(text):
    return text.replace('"module": "keras.layers", "class_name": "Dropout"',
                        '"module": "my_layers", "class_name": "MysteryDropout"')


def _unknown_keras_class(text):
    return text.replace('"class_name": "Dropout"', '"class_name": "NoSuchKerasLayer"')


def _custom_objects(source, model="lambda_strict"):
    def build(tmp, models):
        return [models.path(model), "--custom-objects", write_text(tmp, "objects.py", source)]
    return build


def _broken_functions(model, *data):
    def build(tmp, models):
        args = [models.path(model)]
        args += [builder(tmp) for builder in data]
        return args + ["--custom-objects", write_text(tmp, "broken_functions.py", BROKEN_FUNCTIONS)]
    return build


def _model_functions(model, data_builder):
    def build(tmp, models):
        return [models.path(model), data_builder(tmp), "--custom-objects", models.functions_file()]
    return build


def _large_values(tmp):
    return write_npz(tmp, "large.npz", x=features(value=500.0))


def _object_array(tmp, name):
    rows = np.empty(4, dtype=object)
    for index in range(4):
        rows[index] = [0.0] * FEATURES
    path = os.path.join(tmp, name)
    if name.endswith(".npy"):
        np.save(path, rows, allow_pickle=True)
    else:
        np.savez(path, x=rows)
    return path


def _sequences(tmp):
    rng = np.random.default_rng(0)
    return write_npz(tmp, "sequences.npz", x=rng.normal(size=(6, 5, 2)).astype("float32"), y=targets(6))


def _with_model(name, data_builder, *options):
    return lambda tmp, models: [models.path(name), data_builder(tmp), *options]


CASES = [
    # Model paths.
    Case("model_missing", lambda tmp, models: [os.path.join(tmp, "absent.keras")], 3,
         ("model file not found: {tmp}/absent.keras",)),
    Case("model_empty", lambda tmp, models: [write_bytes(tmp, "empty.keras", b"")], 3,
         ("{tmp}/empty.keras is neither a Keras zip archive nor an HDF5 file", "model.save('model.keras')")),
    Case("model_unreadable", lambda tmp, models: [unreadable(write_bytes(tmp, "locked.keras", read_bytes(models.path("dense"))))], 3,
         ("cannot read model file {tmp}/locked.keras", "permissions")),
    Case("model_directory", lambda tmp, models: [tmp], 3, ("{tmp} is a directory", ".keras or .h5 model file")),
    Case("model_saved_model_directory", _model("saved_model"), 3,
         ("TensorFlow SavedModel directory", "model.save('model.keras')")),
    Case("model_exported_directory", _model("exported"), 3,
         ("TensorFlow SavedModel directory", "model.save('model.keras')")),
    Case("model_random_bytes", lambda tmp, models: [write_bytes(tmp, "noise.keras", np.random.default_rng(0).bytes(4096))], 3,
         ("{tmp}/noise.keras is neither",)),
    Case("model_is_npz_data", lambda tmp, models: [write_npz(tmp, "data.npz", x=features())], 3,
         ("{tmp}/data.npz is a zip archive without config.json",)),
    Case("keras_truncated", _truncated_keras, 3, ("{tmp}/truncated.keras", "truncated or corrupted", "save the model again")),
    Case("keras_corrupted_weights", _corrupted_keras_weights, 3, ("{tmp}/corrupted.keras", "Bad CRC-32", "model.save")),
    Case("keras_without_config", _keras_without_config, 3, ("without config.json", "model.save('model.keras')")),
    Case("keras_config_not_json", _keras_config("bad_json.keras", lambda text: text[:200]), 3,
         ("{tmp}/bad_json.keras is not valid JSON", "save the model again")),
    Case("keras_config_nested_too_deep", _keras_config("deep.keras", lambda text: "[" * 100_000 + "]" * 100_000), 3,
         ("{tmp}/deep.keras is nested too deeply",)),
    Case("keras_unknown_custom_class", _keras_config("custom_class.keras", _unknown_custom_class), 3,
         ("class 'MysteryDropout' from module 'my_layers'", "--custom-objects FILE")),
    Case("keras_unknown_keras_class", _keras_config("keras_class.keras", _unknown_keras_class), 3,
         ("{tmp}/keras_class.keras", "NoSuchKerasLayer")),
    Case("h5_truncated", _truncated_h5, 3, ("{tmp}/truncated.h5", "truncated", "save the model again")),
    Case("h5_corrupted", _corrupted_h5, 3, ("{tmp}/corrupted.h5",)),
    Case("h5_weights_only", _model("weights_only"), 3, ("contains weights only", "model.save()")),
    Case("h5_without_model", lambda tmp, models: [write_h5(tmp, "empty_model.h5")], 3,
         ("{tmp}/empty_model.h5 is an HDF5 file without a model", "model.save()")),
    Case("lambda_untrusted_bytecode", _model("inline_lambda"), 3, ("'doubler'", "--trust-code")),

    # Code from --custom-objects files and in Lambda layers.
    Case("custom_objects_raise_on_import", _custom_objects('raise RuntimeError("no GPU config found")\n'), 3,
         ("--custom-objects {tmp}/objects.py", "RuntimeError: no GPU config found", "fix the file")),
    Case("custom_objects_syntax_error", _custom_objects("def broken(:\n"), 3, ("{tmp}/objects.py", "SyntaxError")),
    Case("custom_objects_sys_exit", _custom_objects("import sys\nsys.exit(2)\n"), 3,
         ("{tmp}/objects.py", "sys.exit(2)", "if __name__ == \"__main__\":")),
    Case("custom_objects_missing_file", lambda tmp, models: [models.path("lambda_strict"), "--custom-objects", os.path.join(tmp, "absent.py")], 3,
         ("--custom-objects {tmp}/absent.py: file not found",)),
    Case("custom_objects_unknown_module", lambda tmp, models: [models.path("lambda_strict"), "--custom-objects", "no_such_module_for_nandoctor"], 3,
         ("no_such_module_for_nandoctor", "no such file or importable module")),
    Case("custom_objects_not_given", _model("lambda_strict"), 3, ("function 'strict'", "--custom-objects FILE")),
    Case("lambda_raises_when_traced", _broken_functions("lambda_strict"), 3,
         ("layer 'strict_layer' (Lambda)", "RuntimeError", "{tmp}/broken_functions.py:3",
          "strict was edited and now always fails", "fix that code")),
    Case("lambda_raises_when_traced_h5", _broken_functions("lambda_strict_h5"), 3,
         ("layer 'strict_layer' (Lambda)", "RuntimeError", "{tmp}/broken_functions.py:3")),
    Case("lambda_raises_while_loading", _broken_functions("lambda_strict_unshaped"), 3,
         ("failed to load", "layer 'strict_layer' (Lambda)", "{tmp}/broken_functions.py:3")),
    Case("lambda_raises_value_error", _broken_functions("lambda_value_check", lambda tmp: write_npz(tmp, "d.npz", x=features())), 3,
         ("layer 'value_check_layer' (Lambda)", "ValueError", "value_check rejects every input")),
    Case("lambda_py_function_raises", _model_functions("lambda_checked_py", _large_values), 3,
         ("checked_py rejects values of 100 or more", "model_functions.py", "fix that code")),
    Case("lambda_assertion_fails", _model_functions("lambda_checked", _large_values), 3,
         ("checked rejects values of 100 or more", "checked_layer"),),
    Case("embedding_ids_out_of_range", _with_model("embedding", lambda tmp: write_npz(tmp, "ids.npz", x=np.full((4, 3), 100, "int64"))), 3,
         ("ids.npz", "embed"),),

    # Data paths.
    Case("data_missing", _dense_with(lambda tmp: os.path.join(tmp, "absent.npz")), 3,
         ("data file not found: {tmp}/absent.npz",)),
    Case("data_directory", _dense_with(lambda tmp: str(tmp)), 3, ("{tmp} is a directory", ".npz, .npy, .h5 or .hdf5")),
    Case("data_unreadable", _dense_with(lambda tmp: unreadable(write_npz(tmp, "locked.npz", x=features()))), 3,
         ("cannot read data file {tmp}/locked.npz", "permissions")),
    Case("data_unsupported_extension", _dense_with(lambda tmp: write_bytes(tmp, "data.csv", b"1,2,3,4\n")), 3,
         ("unsupported data file extension '.csv'", "use .npz, .npy, .h5 or .hdf5")),
    Case("npz_empty_file", _dense_with(lambda tmp: write_bytes(tmp, "empty.npz", b"")), 3,
         ("{tmp}/empty.npz", "not a valid npz archive", "numpy.savez")),
    Case("npy_empty_file", _dense_with(lambda tmp: write_bytes(tmp, "empty.npy", b"")), 3,
         ("{tmp}/empty.npy", "numpy.save")),
    Case("h5_data_empty_file", _dense_with(lambda tmp: write_bytes(tmp, "empty.h5", b"")), 3,
         ("{tmp}/empty.h5", "HDF5")),
    Case("npz_truncated", _dense_with(lambda tmp: write_bytes(tmp, "truncated.npz", read_bytes(write_npz(tmp, "full.npz", x=features(1000)))[:5000])), 3,
         ("{tmp}/truncated.npz", "not a valid npz archive")),
    Case("npz_corrupted_array", _dense_with(lambda tmp: write_bytes(tmp, "corrupted.npz", invert_bytes(read_bytes(write_npz(tmp, "full.npz", x=features(1000))), 8000, 64))), 3,
         ("failed to read array 'x' from {tmp}/corrupted.npz", "Bad CRC-32", "numpy.savez")),
    Case("npy_truncated", _dense_with(lambda tmp: write_bytes(tmp, "truncated.npy", (np.save(os.path.join(tmp, "full.npy"), features(1000)), read_bytes(os.path.join(tmp, "full.npy"))[:3000])[1])), 3,
         ("{tmp}/truncated.npy", "numpy.save")),
    Case("h5_data_truncated", _dense_with(lambda tmp: write_bytes(tmp, "truncated.h5", read_bytes(write_h5(tmp, "full.h5", x=features(1000)))[:3000])), 3,
         ("{tmp}/truncated.h5", "HDF5")),

    # Arrays that are missing or do not fit.
    Case("npz_object_array", _dense_with(lambda tmp: _object_array(tmp, "objects.npz")), 3,
         ("array 'x' is an object array", "never loads pickles")),
    Case("npy_object_array", _dense_with(lambda tmp: _object_array(tmp, "objects.npy")), 3,
         ("{tmp}/objects.npy contains an object array", "never loads pickles")),
    Case("npz_missing_key", _dense_with(lambda tmp: write_npz(tmp, "d.npz", inputs=features(), labels=targets())), 3,
         ("no array 'x'", "it has 'inputs', 'labels'", "--x-key")),
    Case("npz_y_key_missing", _dense_with(lambda tmp: write_npz(tmp, "d.npz", x=features()), "--y-key", "labels"), 3,
         ("no array 'labels' for --y-key", "it has 'x'")),
    Case("x_key_count_mismatch", _dense_with(lambda tmp: write_npz(tmp, "d.npz", x=features(), z=features()), "--x-key", "x", "--x-key", "z"), 3,
         ("2 --x-key values for a model with 1 inputs", "one per input")),
    Case("h5_x_key_missing", _dense_with(lambda tmp: write_h5(tmp, "d.h5", x=features()), "--x-key", "inputs/missing"), 3,
         ("{tmp}/d.h5 has no array 'inputs/missing'", "it has 'x'", "--x-key")),
    Case("h5_x_key_is_group", _dense_with(lambda tmp: write_h5(tmp, "d.h5", **{"inputs/x": features()}), "--x-key", "inputs"), 3,
         ("no array 'inputs'", "it has 'inputs/x'")),
    Case("npz_wrong_feature_count", _dense_with(lambda tmp: write_npz(tmp, "d.npz", x=np.zeros((10, 5), "float32"))), 3,
         ("shape (10, 5)", "expects (None, 4)", "reshape the data")),
    Case("npz_wrong_rank", _dense_with(lambda tmp: write_npz(tmp, "d.npz", x=np.zeros((10, 2, 2), "float32"))), 3,
         ("shape (10, 2, 2)", "expects (None, 4)")),
    Case("npz_scalar_inputs", _dense_with(lambda tmp: write_npz(tmp, "d.npz", x=np.float32(1.0))), 3,
         ("array 'x' has shape ()",)),
    Case("npz_string_inputs", _dense_with(lambda tmp: write_npz(tmp, "d.npz", x=np.full((8, FEATURES), "a"))), 3,
         ("array 'x' has dtype <U1, which is not numeric", "float32")),
    Case("npz_bytes_inputs", _dense_with(lambda tmp: write_npz(tmp, "d.npz", x=np.full((8, FEATURES), b"a"))), 3,
         ("dtype |S1, which is not numeric",)),
    Case("npz_complex_inputs", _dense_with(lambda tmp: write_npz(tmp, "d.npz", x=features(dtype="complex64"))), 3,
         ("complex dtype complex64", "real part")),
    Case("h5_compound_inputs", _dense_with(lambda tmp: write_h5(tmp, "d.h5", x=np.zeros((8, FEATURES), dtype=[("a", "f4"), ("b", "f4")]))), 3,
         ("{tmp}/d.h5: array 'x'", "not numeric")),
    Case("float64_beyond_float32", _dense_with(lambda tmp: write_npz(tmp, "d.npz", x=features(value=1e300, dtype="float64"))), 3,
         ("array 'x' contains 1e+300 at sample 0", "float32 of model input 'features'", "rescale the data")),
    Case("float_ids_for_embedding", _with_model("embedding", lambda tmp: write_npz(tmp, "ids.npz", x=np.full((4, 3), 1.5, "float32"))), 3,
         ("array 'x' has dtype float32", "expects int32", "integer ids")),
    Case("int64_ids_beyond_int32", _with_model("embedding", lambda tmp: write_npz(tmp, "ids.npz", x=np.full((4, 3), 2**40, "int64"))), 3,
         ("contains 1.09951e+12 at sample 0", "int32 of model input 'ids'")),
    Case("zero_samples", _dense_with(lambda tmp: write_npz(tmp, "d.npz", x=features(0), y=targets(0))), 3,
         ("{tmp}/d.npz: the arrays hold zero samples",)),
    Case("lengths_differ", _dense_with(lambda tmp: write_npz(tmp, "d.npz", x=features(10), y=targets(8))), 3,
         ("different numbers of samples (x: 10, y: 8)",)),
    Case("targets_string", _dense_with(lambda tmp: write_npz(tmp, "d.npz", x=features(), y=np.full((8, 1), "a"))), 3,
         ("array 'y' has dtype <U1, which is not numeric",)),
    Case("targets_scalar", _dense_with(lambda tmp: write_npz(tmp, "d.npz", x=features(), y=np.float32(1.0))), 3,
         ("target array 'y' has shape ()", "--y-key")),
    Case("targets_rank_too_high", _dense_with(lambda tmp: write_npz(tmp, "d.npz", x=features(), y=np.ones((8, 1, 1, 1), "float32"))), 3,
         ("target array 'y' has shape (8, 1, 1, 1)",)),
    Case("targets_wrong_width", _dense_with(lambda tmp: write_npz(tmp, "d.npz", x=features(), y=np.ones((8, 3), "float32"))), 3,
         ("target array 'y' has shape (8, 3)", "(None, 1)")),
    Case("npy_with_y_key", _dense_with(lambda tmp: (np.save(os.path.join(tmp, "x.npy"), features()), os.path.join(tmp, "x.npy"))[1], "--y-key", "y"), 3,
         ("--y-key needs a .npz or .h5 file",)),

    # Usage errors.
    Case("x_key_without_data", lambda tmp, models: [models.path("dense"), "--x-key", "x"], 2,
         ("--x-key and --y-key select arrays in DATA",)),
    Case("unknown_loss", _dense_with(lambda tmp: write_npz(tmp, "d.npz", x=features(), y=targets()), "--loss", "no_such_loss"), 2,
         ("--loss no_such_loss",)),
    Case("max_samples_zero", lambda tmp, models: [models.path("dense"), "--max-samples", "0"], 2,
         ("--max-samples must be at least 1, received 0",)),
    Case("batch_size_negative", lambda tmp, models: [models.path("dense"), "--batch-size", "-3"], 2,
         ("--batch-size must be at least 1, received -3",)),

    # Accepted inputs: integer and narrower float data are cast to the model's float32 input.
    Case("integer_inputs_accepted", _dense_with(lambda tmp: write_npz(tmp, "d.npz", x=features(dtype="int64"), y=targets()), "--format", "json"), 0,
         ('"samples": 8',)),
    Case("bool_inputs_accepted", _dense_with(lambda tmp: write_npz(tmp, "d.npz", x=features(dtype="bool")), "--format", "json"), 0,
         ('"samples": 8',)),
    Case("float16_inputs_accepted", _dense_with(lambda tmp: write_npz(tmp, "d.npz", x=features(dtype="float16"), y=targets(dtype="float16")), "--format", "json"), 0,
         ('"samples": 8',)),
    Case("integer_targets_accepted", _dense_with(lambda tmp: write_npz(tmp, "d.npz", x=features(), y=targets(dtype="int64")), "--format", "json"), 0,
         ('"samples": 8', '"loss": "mean_squared_error"')),

    # Non-finite data is a finding (exit 1), not an error.
    Case("nan_in_inputs", _dense_with(lambda tmp: write_npz(tmp, "d.npz", x=with_nan(features()), y=targets()), "--format", "json"), 1,
         ('"code": "ND601"', '"nan": 1')),
    Case("inf_in_targets", _dense_with(lambda tmp: write_npz(tmp, "d.npz", x=features(), y=np.full((8, 1), np.inf, "float32")), "--format", "json"), 1,
         ('"code": "ND601"', '"posinf": 8')),
    Case("nan_in_h5_inputs", _dense_with(lambda tmp: write_h5(tmp, "d.h5", x=with_nan(features(40)), y=targets(40)), "--batch-size", "16", "--format", "json"), 1,
         ('"code": "ND601"', '"format": "h5"')),

    # Layers whose behaviour depends on the replay mode, recurrent and random layers.
    Case("dropout_inference_mode", lambda tmp, models: [models.path("dropout"), "--format", "json"], 0,
         ("inference mode (training=False)", "rerun with --training-mode")),
    Case("dropout_training_mode", lambda tmp, models: [models.path("dropout"), "--training-mode", "--format", "json"], 0,
         ("training mode (training=True)", "rerun without --training-mode")),
    Case("batchnorm_inference_mode", lambda tmp, models: [models.path("batchnorm"), "--format", "json"], 0,
         ("BatchNormalization uses its moving statistics", "--training-mode")),
    Case("batchnorm_training_mode", lambda tmp, models: [models.path("batchnorm"), "--training-mode", "--format", "json"], 0,
         ("BatchNormalization uses batch statistics",)),
    Case("lstm", _with_model("lstm", _sequences, "--format", "json"), 0, ('"layer_class": "LSTM"', '"samples": 6')),
    Case("gru", _with_model("gru", _sequences, "--format", "json"), 0, ('"layer_class": "GRU"',)),
    Case("lstm_training_mode", _with_model("lstm", _sequences, "--training-mode", "--format", "json"), 0,
         ('"layer_class": "LSTM"', "training mode")),
    Case("gaussian_noise", lambda tmp, models: [models.path("noise"), "--format", "json"], 0,
         ('"layer_class": "GaussianNoise"',)),
    Case("gaussian_noise_training_mode", lambda tmp, models: [models.path("noise"), "--training-mode", "--format", "json"], 0,
         ('"layer_class": "GaussianNoise"', "training mode")),
]
