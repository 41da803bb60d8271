"""Read a saved model's architecture config without building the model.

Keras checks code safety only while it deserializes, and its errors do not
name the layer. Reading the JSON config first lets nandoctor name the Lambda
layers that carry bytecode and list every function or class the file only
refers to by name, before any of the file's code can run.
"""

import json
import os
import zipfile
import zlib
from dataclasses import dataclass, field

from nandoctor.errors import ModelLoadError

# The first 8 bytes of an HDF5 file written from offset 0, as Keras writes it.
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# The first 4 bytes of a zip archive (a local file header), as Keras writes a .keras file.
_ZIP_SIGNATURE = b"PK\x03\x04"

MAX_CONFIG_BYTES = 64 * 2**20
"""Largest config.json read from a .keras archive, in bytes. Keras 3.15 writes
about 1 KB per layer (169 KB for ResNet50's 177 layers), so 64 MiB leaves room
for tens of thousands of layers while a damaged or hostile archive cannot
unpack gigabytes into memory."""

# Config entries with these class names are serialization markers, not classes.
_MARKER_CLASS_NAMES = frozenset(
    {"function", "__lambda__", "__keras_tensor__", "__tensor__", "__numpy__",
     "__bytes__", "__typespec__", "__ellipsis__", "__slice__", "__tuple__",
     "__passive_serialization__"}
)


@dataclass
class ModelConfig:
    """The parts of a saved model's config that decide how to load it."""

    format: str
    """Either "keras" (a Keras 3 zip archive) or "h5" (legacy HDF5)."""
    architecture: dict
    """The model's config as saved."""
    compile_config: dict | None
    """The training config (loss, optimizer), or None when never compiled."""
    bytecode_lambdas: list = field(default_factory=list)
    """Names of Lambda layers whose function is stored as Python bytecode."""
    function_names: list = field(default_factory=list)
    """(layer name or "loss", function name) for functions stored by name."""
    custom_classes: list = field(default_factory=list)
    """(class name, registered name, module) for classes outside Keras."""


def read_model_config(path):
    """Read the architecture and training config of a `.keras` or `.h5` file.

    Args:
        path: Path of the saved model.

    Returns:
        A `ModelConfig`.

    Raises:
        ModelLoadError: The path is missing, is not a saved Keras model, or its
            config is not valid JSON.
    """
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "saved_model.pb")):
            raise ModelLoadError(
                f"{path} is a TensorFlow SavedModel directory, which Keras 3 cannot "
                "rebuild layer by layer; load it in the code that made it and save "
                "it with model.save('model.keras'), then scan that file."
            )
        raise ModelLoadError(f"{path} is a directory; expected a .keras or .h5 model file.")
    if not os.path.exists(path):
        raise ModelLoadError(f"model file not found: {path}")
    try:
        with open(path, "rb") as handle:
            signature = handle.read(8)
    except OSError as error:
        raise ModelLoadError(
            f"cannot read model file {path}: {error.strerror}; check the file's permissions."
        ) from error

    if zipfile.is_zipfile(path):
        architecture, compile_config = _read_keras_zip(path)
        config = ModelConfig("keras", architecture, compile_config)
    elif signature == _HDF5_SIGNATURE:
        architecture, compile_config = _read_h5(path)
        config = ModelConfig("h5", architecture, compile_config)
    elif signature.startswith(_ZIP_SIGNATURE):
        raise ModelLoadError(
            f"{path} starts like a zip archive but lacks the directory at its end, so it is "
            "truncated or corrupted; save the model again."
        )
    else:
        raise ModelLoadError(
            f"{path} is neither a Keras zip archive nor an HDF5 file; save the model "
            "with model.save('model.keras') and scan that file."
        )

    try:
        _collect_references(architecture, None, config)
        if compile_config:
            _collect_references(compile_config.get("loss"), "loss", config)
    except RecursionError as error:
        raise ModelLoadError(
            f"the model config in {path} is nested too deeply to read; a saved Keras model "
            "never is, so the file is corrupted: save the model again."
        ) from error
    return config


def _read_keras_zip(path):
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if "config.json" not in names:
                raise ModelLoadError(
                    f"{path} is a zip archive without config.json, so it is not a Keras "
                    "model; save the model with model.save('model.keras')."
                )
            size = archive.getinfo("config.json").file_size
            if size > MAX_CONFIG_BYTES:
                raise ModelLoadError(
                    f"{path}: config.json unpacks to {size} bytes, more than the "
                    f"{MAX_CONFIG_BYTES} bytes any Keras model config needs, so the file is "
                    "damaged or not a Keras model; save the model again."
                )
            text = archive.read("config.json")
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, RuntimeError, ValueError) as error:
        raise ModelLoadError(
            f"failed to read {path} as a .keras archive ({error}); the file may be "
            "truncated or corrupted, so save the model again."
        ) from error
    config = _parse_json(text, path)
    compile_config = config.get("compile_config") if isinstance(config, dict) else None
    return config, compile_config if isinstance(compile_config, dict) else None


def _read_h5(path):
    try:
        import h5py
    except ImportError as error:  # pragma: no cover - h5py is a dependency
        raise ModelLoadError("reading .h5 models requires h5py: pip install h5py") from error
    try:
        with h5py.File(path, "r") as handle:
            raw = handle.attrs.get("model_config")
            training = handle.attrs.get("training_config")
            empty = len(handle) == 0
    except (OSError, KeyError, ValueError, RuntimeError) as error:  # h5py's errors for a damaged file
        raise ModelLoadError(
            f"failed to read {path} as HDF5 ({error}); the file may be truncated or "
            "corrupted, so save the model again."
        ) from error
    if raw is None and empty:
        raise ModelLoadError(
            f"{path} is an HDF5 file without a model: it has no model_config and no "
            "weights; scan the file saved with model.save()."
        )
    if raw is None:
        raise ModelLoadError(
            f"{path} contains weights only (no model_config); scan the file saved with "
            "model.save(), or rebuild the model in code, load these weights and save it."
        )
    config = _parse_json(raw, path)
    compile_config = _parse_json(training, path) if training is not None else None
    return config, compile_config if isinstance(compile_config, dict) else None


def _parse_json(raw, path):
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    if not isinstance(raw, str):
        raise ModelLoadError(
            f"the model config in {path} is stored as {type(raw).__name__}, not as JSON text; "
            "save the model again with model.save()."
        )
    try:
        return json.loads(raw)
    except RecursionError as error:
        raise ModelLoadError(
            f"the model config in {path} is nested too deeply to parse; a saved Keras model "
            "never is, so the file is corrupted: save the model again."
        ) from error
    except ValueError as error:
        raise ModelLoadError(
            f"the model config in {path} is not valid JSON ({error}); save the model again."
        ) from error


def _collect_references(node, layer_name, config):
    """Walk a config tree and record lambdas, named functions and custom classes."""
    if isinstance(node, list):
        for item in node:
            _collect_references(item, layer_name, config)
        return
    if not isinstance(node, dict):
        return

    class_name = node.get("class_name")
    inner = node.get("config")
    if class_name == "__lambda__":
        return  # Bytecode, defaults and closure values, not Keras objects.
    if class_name == "Lambda" and isinstance(inner, dict):
        name = inner.get("name", node.get("name"))
        function = inner.get("function")
        legacy_lambda = inner.get("function_type") == "lambda"
        if legacy_lambda or (isinstance(function, dict) and function.get("class_name") == "__lambda__"):
            config.bytecode_lambdas.append(name)
        if inner.get("function_type") == "function" and isinstance(function, str):
            config.function_names.append((name, function))
        layer_name = name
    elif isinstance(inner, dict) and isinstance(inner.get("name"), str):
        layer_name = inner["name"]

    if class_name == "function" and isinstance(inner, str):
        config.function_names.append((layer_name, inner))
    elif isinstance(class_name, str) and class_name not in _MARKER_CLASS_NAMES:
        # A damaged config can hold any JSON value here; only strings are names.
        module = _text_or_none(node.get("module"))
        if "module" in node and not (module or "").startswith("keras"):
            config.custom_classes.append((class_name, _text_or_none(node.get("registered_name")), module))

    for key, value in node.items():
        # The training config is walked on its own, so its loss is not
        # attributed to the model's top-level layer.
        if key != "compile_config" and isinstance(value, (dict, list)):
            _collect_references(value, layer_name, config)


def _text_or_none(value):
    return value if isinstance(value, str) else None
