"""Attribution of exceptions to the model's own code (exit 3) or to nandoctor (exit 4)."""

import importlib.util

import numpy as np
import pytest

from nandoctor.errors import ModelCodeError
from nandoctor.loading.code_errors import model_code_error
from tests.corpus import write_text

USER_FUNCTIONS = """
import tensorflow as tf

from nandoctor.loading.data import _shape_text


def explode(x):
    raise RuntimeError("explode always fails")


def call_nandoctor(x):
    return _shape_text(5)


def py_explode(x):
    def check(values):
        raise ValueError("py_explode always fails")

    return tf.py_function(check, [x], tf.float32)


def assert_negative(x):
    tf.debugging.assert_negative(x, message="assert_negative wants negative values")
    return x
"""


@pytest.fixture
def user_module(tf, tmp_path):
    path = write_text(str(tmp_path), "user_functions.py", USER_FUNCTIONS)
    spec = importlib.util.spec_from_file_location("user_functions", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, path


def raised_by(function, *args):
    with pytest.raises(Exception) as info:
        function(*args)
    return info.value


def test_lambda_error_names_layer_and_line(keras, user_module):
    module, path = user_module
    layer = keras.layers.Lambda(module.explode, name="blast")

    error = model_code_error(raised_by(layer, np.ones((1, 4), "float32")))

    assert isinstance(error, ModelCodeError)
    message = error.format_message()
    assert message.startswith("layer 'blast' (Lambda) raised RuntimeError in explode at ")
    assert f"{path}:8: explode always fails" in message
    assert error.exit_code == 3


def test_error_inside_nandoctor_stays_internal(keras, user_module):
    module, _ = user_module
    layer = keras.layers.Lambda(module.call_nandoctor, name="calls_nandoctor")

    error = raised_by(layer, np.ones((1, 4), "float32"))

    assert isinstance(error, TypeError)
    assert model_code_error(error) is None


def test_user_code_not_called_by_keras_stays_internal(user_module):
    module, _ = user_module

    assert model_code_error(raised_by(module.explode, None)) is None


def test_failed_py_function_names_user_function(tf, user_module):
    module, path = user_module

    error = model_code_error(raised_by(module.py_explode, tf.ones((2, 2))))

    assert isinstance(error, ModelCodeError)
    message = error.format_message()
    assert f"in check at {path}:" in message
    assert "ValueError: py_explode always fails" in message


def test_failed_assertion_stays_internal(tf, user_module):
    # A failed assertion shows no frames in eager mode either; see the NOTE in model_code_error.
    module, _ = user_module

    error = raised_by(module.assert_negative, tf.ones((2,)))

    assert isinstance(error, tf.errors.InvalidArgumentError)
    assert model_code_error(error) is None
