"""Load a saved Keras model with Keras's safe mode kept on unless the user opts out."""

import contextlib
import logging
import re
import types
import warnings

from nandoctor.errors import (
    MissingCustomObjectsError,
    ModelLoadError,
    UntrustedCodeError,
)
from nandoctor.loading.code_errors import model_code_error
from nandoctor.loading.custom_objects import import_custom_objects
from nandoctor.loading.model_config import read_model_config

logger = logging.getLogger(__name__)

# Modules searched, in order, for a function that Keras saved by its bare name,
# such as `Lambda(keras.ops.exp)`, which is saved as "exp".
_LIBRARY_MODULES = ("keras.ops", "keras.activations", "tf.math", "tf.nn")

# Keras's own deserializer searches these submodules for functions saved by name.
_KERAS_BUILTIN_MODULES = (
    "activations", "constraints", "initializers", "losses", "metrics",
    "optimizers", "regularizers",
)


class LoadedModel:
    """A Keras model with what the scan needs to know about its file."""

    def __init__(self, model, path, config, custom_objects, loss=None):
        self.model = model
        """The rebuilt `keras.Model`."""
        self.path = path
        """Path of the model file."""
        self.config = config
        """The `ModelConfig` read before loading."""
        self.custom_objects = custom_objects
        """Names supplied to Keras while loading."""
        self.loss = loss
        """The compiled loss (a name, function, `Loss`, list or dict), or None."""


def load_model(path, trust_code=False, custom_object_sources=()):
    """Load a `.keras` or `.h5` model for a scan.

    Args:
        path: Path of the saved model.
        trust_code: When False (the default), Keras's safe mode stays on and a
            Lambda layer stored as Python bytecode is rejected before any of the
            file's code runs. When True, such code runs, and saved lambdas see
            the module names `tf`, `keras`, `K`, `ops` and `np`.
        custom_object_sources: Python files or module names that define the
            functions and classes the file refers to by name.

    Returns:
        A `LoadedModel`.

    Raises:
        UntrustedCodeError: The file carries bytecode and `trust_code` is False.
        MissingCustomObjectsError: The file names objects that cannot be found.
        CustomObjectsError: A custom-objects source failed to import.
        ModelLoadError: Keras failed to rebuild the model.
    """
    config = read_model_config(path)
    if config.bytecode_lambdas and not trust_code:
        layers = ", ".join(repr(name) for name in config.bytecode_lambdas)
        raise UntrustedCodeError(
            f"{path}: Lambda layer {layers} stores Python bytecode, which runs when the "
            "model is loaded; Keras safe mode rejects it by default. If you trust this "
            "file, rerun with --trust-code."
        )

    import keras

    import nandoctor.sample_functions  # noqa: F401  (registers the sample models' functions)

    custom_objects = import_custom_objects(custom_object_sources)
    missing, library = _unresolved_names(config, custom_objects)
    if library and trust_code:
        for name, function in library.items():
            logger.info("resolving %s as %s", name, function)
            custom_objects[name] = function
    elif library:
        names = ", ".join(f"'{name}' ({_describe(fn)})" for name, fn in library.items())
        raise MissingCustomObjectsError(
            f"{path}: Keras saved the function {names} by its bare name and cannot locate "
            "it; rerun with --trust-code to resolve it to that library function, or pass "
            "--custom-objects FILE that defines it."
        )
    if missing:
        raise MissingCustomObjectsError(
            f"{path} refers to objects that are not defined: {', '.join(missing)}; pass "
            "--custom-objects FILE (the Python file or module that defines them, "
            "such as your training script)."
        )

    try:
        with _lambda_globals(custom_objects, enabled=trust_code), warnings.catch_warnings():
            # The optimizer's slots are not needed for a scan; Keras warns when it skips them.
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            # Keras 3's legacy HDF5 loader fails to compile a model saved with
            # a loss alias such as "mse", so .h5 models load uncompiled and
            # the loss is read from their training config below.
            model = keras.saving.load_model(
                path, custom_objects=custom_objects, compile=config.format == "keras",
                safe_mode=not trust_code,
            )
            loss = getattr(model, "loss", None)
            if config.format == "h5" and config.compile_config:
                loss = _deserialize_loss(config.compile_config.get("loss"), custom_objects)
    except Exception as error:  # Keras raises many types for a bad file.
        raise ModelLoadError(_explain_load_error(path, error)) from error
    if not isinstance(model, keras.Model):
        raise ModelLoadError(f"{path} contains a {type(model).__name__}, not a Keras model.")
    return LoadedModel(model, path, config, custom_objects, loss)


def _deserialize_loss(spec, custom_objects):
    """Rebuild the loss of a legacy training config: a name, a config, or a list or dict of them."""
    import keras

    if spec is None or isinstance(spec, str):
        return spec
    if isinstance(spec, list):
        return [_deserialize_loss(item, custom_objects) for item in spec]
    if isinstance(spec, dict) and "class_name" not in spec:
        return {key: _deserialize_loss(item, custom_objects) for key, item in spec.items()}
    with keras.saving.custom_object_scope(custom_objects):
        return keras.losses.deserialize(spec)


def _unresolved_names(config, custom_objects):
    """List names Keras will not find, and the library functions that match some."""
    import keras

    missing = []
    library = {}
    for layer, name in config.function_names:
        if _keras_finds_function(name, custom_objects):
            continue
        function = _library_function(name)
        if function is not None:
            library[name] = function
        else:
            where = "the loss" if layer == "loss" else f"layer '{layer}'"
            missing.append(f"function '{name}' (used by {where})")
    for class_name, registered_name, module in config.custom_classes:
        if class_name in custom_objects or (registered_name or "") in custom_objects:
            continue
        if keras.saving.get_registered_object(registered_name or class_name) is not None:
            continue
        label = f"class '{class_name}'" + (f" from module '{module}'" if module else "")
        if label not in missing:
            missing.append(label)
    return missing, library


def _keras_finds_function(name, custom_objects):
    import keras

    if name in custom_objects or keras.saving.get_registered_object(name) is not None:
        return True
    if ">" not in name and any(key.endswith(">" + name) for key in custom_objects):
        return True
    return any(
        hasattr(getattr(keras, module, None), name) for module in _KERAS_BUILTIN_MODULES
    )


def _library_function(name):
    import keras
    import tensorflow as tf

    roots = {"keras": keras, "tf": tf}
    for dotted in _LIBRARY_MODULES:
        root, _, attribute = dotted.partition(".")
        module = getattr(roots[root], attribute)
        function = getattr(module, name, None)
        if callable(function) and not isinstance(function, type):
            return function
    return None


def _describe(function):
    module = getattr(function, "__module__", "") or ""
    public = "keras.ops" if module.startswith("keras") else "tf"
    return f"{public}.{function.__name__}"


class _BackendNames(types.SimpleNamespace):
    """Stand-in for `K`: `keras.backend` names first, then `keras.ops`."""

    def __getattr__(self, name):
        import keras

        for module in (keras.backend, keras.ops):
            if hasattr(module, name):
                return getattr(module, name)
        raise AttributeError(name)


@contextlib.contextmanager
def _lambda_globals(custom_objects, enabled):
    """Give saved lambdas the module names users write in them.

    Keras rebuilds a saved lambda with the globals of its own
    `keras.src.utils.python_utils` module, so `tf.exp(x)` in a lambda fails
    with a misleading output-shape error. While active, this swaps in a
    `func_load` that adds `tf`, `keras`, `K`, `ops`, `np` and the custom
    objects to those globals, and rebuilds modules saved in closures. The
    original is restored on exit.
    """
    if not enabled:
        yield
        return

    import keras
    import numpy as np
    import tensorflow as tf
    from keras.src.utils import python_utils

    original = python_utils.func_load
    names = dict(vars(python_utils))
    names.update({"tf": tf, "keras": keras, "K": _BackendNames(), "ops": keras.ops, "np": np})
    names.update(custom_objects)

    def func_load(code, defaults=None, closure=None, globs=None):
        if closure:
            closure = tuple(_closure_value(value) for value in closure)
        return original(code, defaults=defaults, closure=closure, globs=globs or names)

    python_utils.func_load = func_load
    try:
        yield
    finally:
        python_utils.func_load = original


def _closure_value(value):
    """Rebuild a module that a lambda's closure held; Keras saves it by name only.

    A lambda defined in a function that imports `keras` locally closes over the
    module, and Keras writes `{"class_name": "module", "config": "keras"}`.
    """
    if isinstance(value, dict) and value.get("class_name") == "module" and isinstance(value.get("config"), str):
        import importlib

        try:
            return importlib.import_module(value["config"])
        except ImportError:
            return value
    return value


def _explain_load_error(path, error):
    chain = []
    cause = error
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    for item in chain:
        if isinstance(item, NameError):
            match = re.search(r"name '([^']+)'", str(item))
            name = match.group(1) if match else str(item)
            return (
                f"{path}: a Lambda layer uses the name '{name}', which is not defined "
                "when Keras rebuilds it; pass --custom-objects FILE that defines "
                f"'{name}'."
            )
    code_error = model_code_error(error)
    if code_error is not None:
        return f"failed to load {path}: {code_error.format_message()}"
    # Keras wraps the error of a nested layer in one error per enclosing
    # object; the innermost one names the actual problem.
    root = chain[-1]
    text = " ".join(str(root).split())
    if len(text) > 300:
        text = text[:300] + "..."
    return (
        f"failed to load {path}: {type(root).__name__}: {text}; check that the file "
        "was saved with Keras 3 (model.save) and is complete."
    )
