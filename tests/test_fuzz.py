"""Property tests: random arrays and damaged files end in a report or a clear NandoctorError.

The examples are derandomized, so every run checks the same inputs, and the
example database is off, so no failing example is replayed from an earlier
run. (hypothesis 6.170 still caches constants in a `.hypothesis` folder, which
ignores itself in git.) To search longer with fresh random examples, set
NANDOCTOR_FUZZ_EXAMPLES, for example
`NANDOCTOR_FUZZ_EXAMPLES=500 python -m pytest tests/test_fuzz.py`.
"""

import os
import tempfile
import zipfile

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from nandoctor.errors import DataLoadError, ModelLoadError, NandoctorError
from nandoctor.loading.data import TensorSpec, open_data
from nandoctor.loading.model_config import ModelConfig, read_model_config
from tests.corpus import ModelFiles, error_lines, invoke, read_bytes

_SEARCH_EXAMPLES = int(os.environ.get("NANDOCTOR_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=_SEARCH_EXAMPLES or 25, deadline=None, derandomize=not _SEARCH_EXAMPLES,
                database=None, suppress_health_check=[HealthCheck.too_slow])
CLI_FUZZ = settings(FUZZ, max_examples=_SEARCH_EXAMPLES or 15)

INPUT_SPECS = [TensorSpec("features", (None, 4), "float32")]
OUTPUT_SPECS = [TensorSpec("head", (None, 1), "float32")]

DTYPES = ["float16", "float32", "float64", "int8", "int32", "int64", "uint8", "bool", "complex64", "U3", "S3",
          "datetime64[s]"]


@pytest.fixture(scope="module")
def models(tf, keras, tmp_path_factory):
    return ModelFiles(str(tmp_path_factory.mktemp("models")), keras, tf)


def arrays(min_dims=0):
    """Arrays of the listed dtypes with 0 to 3 axes of 0 to 6 entries, NaN and Inf included."""
    return st.sampled_from(DTYPES).flatmap(
        lambda dtype: hnp.arrays(dtype, hnp.array_shapes(min_dims=min_dims, max_dims=3, min_side=0, max_side=6))
    )


@st.composite
def damage(draw, content):
    """Return `content` truncated, or with a run of bytes XORed with a random non-zero byte."""
    if draw(st.booleans()):
        return content[: draw(st.integers(0, len(content) - 1))]
    start = draw(st.integers(0, len(content) - 1))
    count = draw(st.integers(1, 256))
    mask = draw(st.integers(1, 255))
    changed = bytearray(content)
    for index in range(start, min(start + count, len(changed))):
        changed[index] ^= mask
    return bytes(changed)


def write_data(folder, file_format, x, y):
    """Write x (and y unless None) as npz, npy or h5, and return the path."""
    if file_format == "npy":
        path = os.path.join(folder, "data.npy")
        np.save(path, x, allow_pickle=False)
    elif file_format == "npz":
        path = os.path.join(folder, "data.npz")
        np.savez(path, **({"x": x} if y is None else {"x": x, "y": y}))
    else:
        path = os.path.join(folder, "data.h5")
        with h5py.File(path, "w") as handle:
            for key, values in (("x", x), ("y", y)):
                if values is not None:
                    if values.dtype.kind == "U":
                        values = np.char.encode(values, "utf-8")
                    if values.dtype.kind == "M":
                        values = values.astype("int64")
                    handle.create_dataset(key, data=values)
    return path


def read_all_batches(path, batch_size=3):
    """Open `path` for the Dense model's specs and read every batch; return the sample count."""
    source = open_data(path, INPUT_SPECS, OUTPUT_SPECS)
    try:
        samples = 0
        for batch in source.batches(batch_size, INPUT_SPECS):
            assert batch.inputs[0].dtype == np.float32
            samples += len(batch.inputs[0])
    finally:
        source.close()
    assert samples == source.num_samples
    return samples


# Data loader.


@FUZZ
@given(file_format=st.sampled_from(["npz", "npy", "h5"]), x=arrays(), y=st.none() | arrays())
def test_open_data_random_arrays(file_format, x, y):
    with tempfile.TemporaryDirectory() as folder:
        path = write_data(folder, file_format, x, None if file_format == "npy" else y)
        try:
            samples = read_all_batches(path)
        except DataLoadError as error:
            assert error.format_message()
            return
    assert samples > 0


@FUZZ
@given(x=hnp.arrays(st.sampled_from(["float64", "int64", "uint64"]),
                    st.tuples(st.integers(1, 12), st.just(4))))
def test_open_data_rejects_only_values_beyond_float32(x):
    beyond = np.isfinite(x) & (np.abs(x.astype("float64")) > np.finfo("float32").max)
    with tempfile.TemporaryDirectory() as folder:
        path = write_data(folder, "npz", x, None)
        if beyond.any():
            with pytest.raises(DataLoadError, match="does not fit the float32 of model input 'features'"):
                read_all_batches(path)
        else:
            assert read_all_batches(path) == len(x)


@FUZZ
@given(data=st.data(), file_format=st.sampled_from(["npz", "npy", "h5"]))
def test_open_data_damaged_files(data, file_format):
    x = np.arange(64 * 4, dtype="float32").reshape(64, 4)
    with tempfile.TemporaryDirectory() as folder:
        path = write_data(folder, file_format, x, None if file_format == "npy" else x[:, :1])
        damaged = data.draw(damage(read_bytes(path)))
        with open(path, "wb") as handle:
            handle.write(damaged)
        try:
            read_all_batches(path)
        except DataLoadError as error:
            assert error.format_message()


# Model config reader.


@pytest.fixture(scope="module")
def model_bytes(models):
    return {"keras": read_bytes(models.path("dense")), "h5": read_bytes(models.path("dense_h5"))}


@FUZZ
@given(data=st.data(), extension=st.sampled_from(["keras", "h5"]))
def test_read_model_config_damaged_files(model_bytes, data, extension):
    damaged = data.draw(damage(model_bytes[extension]))
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, f"model.{extension}")
        with open(path, "wb") as handle:
            handle.write(damaged)
        try:
            config = read_model_config(path)
        except ModelLoadError as error:
            assert error.format_message()
            return
    assert isinstance(config, ModelConfig)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["class_name", "config", "module", "name", "function", "function_type", "layers",
                         "registered_name", "compile_config", "loss"]), children, max_size=4),
    max_leaves=20,
)


@FUZZ
@given(config=JSON_VALUES)
def test_read_model_config_random_json(config):
    import json

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.keras")
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("config.json", json.dumps(config))
        try:
            read_model_config(path)
        except ModelLoadError as error:
            assert error.format_message()


# The whole command line.


def assert_clean_outcome(result):
    assert result.exit_code in (0, 1, 3), result.stderr + result.stdout[-1000:]
    assert "Traceback" not in result.stderr + result.stdout
    if result.exit_code == 3:
        assert len(error_lines(result)) == 1, result.stderr
    else:
        assert error_lines(result) == [], result.stderr


@CLI_FUZZ
@given(data=st.data(), extension=st.sampled_from(["keras", "h5"]))
def test_cli_damaged_model_files(models, model_bytes, data, extension):
    damaged = data.draw(damage(model_bytes[extension]))
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, f"model.{extension}")
        with open(path, "wb") as handle:
            handle.write(damaged)

        result = invoke("scan", path, "--max-samples", "8")

    assert_clean_outcome(result)


@CLI_FUZZ
@given(file_format=st.sampled_from(["npz", "npy", "h5"]), x=arrays(min_dims=1), y=st.none() | arrays(min_dims=1))
def test_cli_random_data(models, file_format, x, y):
    with tempfile.TemporaryDirectory() as folder:
        path = write_data(folder, file_format, x, None if file_format == "npy" else y)

        result = invoke("scan", models.path("dense"), path, "--batch-size", "4")

    assert_clean_outcome(result)


def test_nandoctor_error_is_base_of_loader_errors():
    assert issubclass(DataLoadError, NandoctorError)
    assert issubclass(ModelLoadError, NandoctorError)
