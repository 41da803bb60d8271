"""Read scan defaults and the list of models to check from `nandoctor.toml` or `pyproject.toml`.

The table is `[tool.nandoctor]` in `pyproject.toml`, or the top level of
`nandoctor.toml` (which wins when both exist). Keys use the command-line
option names without the leading dashes:

    [tool.nandoctor]
    fail-on = "error"
    ignore = ["ND502"]

    [[tool.nandoctor.models]]
    model = "models/treatment.keras"
    data = "data/treatment.npz"
    custom-objects = ["train.py"]

    [[tool.nandoctor.models.suppress]]
    code = "ND101"
    layer = "scales"
    reason = "exp is clipped in the next release"

Paths are relative to the folder of the file that names them.
"""

import os
from dataclasses import dataclass, field

from nandoctor.errors import UsageError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

# Options that may appear at the top level (defaults) and per model, with their type.
SCAN_OPTIONS = {
    "trust-code": bool, "custom-objects": list, "x-key": list, "y-key": list, "loss": str,
    "batch-size": int, "max-samples": int, "training-mode": bool, "fit-steps": int,
    "from-init": bool, "optimizer": str, "learning-rate": float, "shuffle-seed": int,
    "verify-fixes": bool, "stress": bool, "save-repro": str,
}
RUN_OPTIONS = {"fail-on": str, "format": str, "select": list, "ignore": list}
FILE_NAMES = ("nandoctor.toml", "pyproject.toml")


@dataclass(frozen=True)
class Suppression:
    """A finding the team accepted for one model, with the reason it gave."""

    code: str
    reason: str
    layer: str | None = None
    """Only findings in this layer; None for every layer."""

    def matches(self, finding):
        return finding.code == self.code and (self.layer is None or finding.layer == self.layer)


@dataclass
class ModelEntry:
    """One model to scan, with its data file and options."""

    model: str
    data: str | None
    options: dict
    """Scan options (command-line names without dashes) for this model."""
    suppress: list = field(default_factory=list)


@dataclass
class Config:
    """Everything a configuration file sets."""

    path: str | None
    """The file read, or None when there is none."""
    defaults: dict
    """Scan and run options that apply to every model."""
    models: list


def find_config(start="."):
    """Return the path of the nearest `nandoctor.toml`, or `pyproject.toml` with a
    `[tool.nandoctor]` table, in `start` or a parent folder; None when there is none."""
    folder = os.path.abspath(start)
    while True:
        for name in FILE_NAMES:
            path = os.path.join(folder, name)
            if os.path.isfile(path) and (name == "nandoctor.toml" or _has_table(path)):
                return path
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def load_config(path):
    """Read and check a configuration file.

    Raises:
        UsageError: The file is not valid TOML, or a key or value is invalid,
            or a suppression has no reason.
    """
    if path is None:
        return Config(None, {}, [])
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError as error:
        raise UsageError(f"configuration file not found: {path}; check the --config path.") from error
    except IsADirectoryError as error:
        raise UsageError(f"{path} is a directory; --config takes a .toml file.") from error
    except OSError as error:
        raise UsageError(f"failed to read the configuration {path}: {error.strerror or error}.") from error
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"failed to read the configuration {path}: {error}; fix the TOML syntax.") from error
    table = document if os.path.basename(path) == "nandoctor.toml" else document.get("tool", {}).get("nandoctor", {})
    if not isinstance(table, dict):
        raise UsageError(f"{path}: the nandoctor table must be a TOML table.")
    base = os.path.dirname(os.path.abspath(path))

    defaults = {}
    models = []
    for key, value in table.items():
        if key == "models":
            if not isinstance(value, list):
                raise UsageError(f"{path}: 'models' must be an array of tables ([[models]] in nandoctor.toml, "
                                 "[[tool.nandoctor.models]] in pyproject.toml).")
            models = [_model_entry(path, base, index, item) for index, item in enumerate(value)]
        else:
            defaults[key] = _checked(path, "the nandoctor table", key, value, {**SCAN_OPTIONS, **RUN_OPTIONS},
                                     extra=("models",))
    if "custom-objects" in defaults:
        defaults["custom-objects"] = [_resolve_source(base, item) for item in defaults["custom-objects"]]
    return Config(path, defaults, models)


def _model_entry(path, base, index, item):
    where = f"models[{index}]"
    if not isinstance(item, dict) or "model" not in item:
        raise UsageError(f"{path}: {where} needs a 'model' path.")
    options = {}
    suppress = []
    for key, value in item.items():
        if key in ("model", "data"):
            if not isinstance(value, str):
                raise UsageError(f"{path}: {where}.{key} must be a string path.")
        elif key == "suppress":
            if not isinstance(value, list):
                raise UsageError(f"{path}: {where}.suppress must be an array of tables.")
            suppress = [_suppression(path, f"{where}.suppress[{n}]", entry) for n, entry in enumerate(value)]
        else:
            options[key] = _checked(path, where, key, value, SCAN_OPTIONS, extra=("model", "data", "suppress"))
    if "custom-objects" in options:
        options["custom-objects"] = [_resolve_source(base, entry) for entry in options["custom-objects"]]
    data = item.get("data")
    return ModelEntry(_resolve(base, item["model"]), _resolve(base, data) if data else None, options, suppress)


def _suppression(path, where, entry):
    if not isinstance(entry, dict) or not isinstance(entry.get("code"), str):
        raise UsageError(f"{path}: {where} needs a 'code' such as \"ND101\".")
    reason = entry.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise UsageError(f"{path}: {where} suppresses {entry['code']} without a 'reason'; say why the finding is accepted.")
    unknown = set(entry) - {"code", "reason", "layer"}
    if unknown:
        raise UsageError(f"{path}: {where} has unknown keys {sorted(unknown)}; use code, layer and reason.")
    return Suppression(entry["code"].upper(), reason.strip(), entry.get("layer"))


_TYPE_NAMES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list"}


def _checked(path, where, key, value, allowed, extra=()):
    if key not in allowed:
        known = ", ".join(sorted(list(allowed) + list(extra)))
        raise UsageError(f"{path}: unknown key '{key}' in {where}; known keys: {known}.")
    expected = allowed[key]
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if expected is list and isinstance(value, str):
        value = [value]
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise UsageError(f"{path}: '{key}' in {where} must be a {_TYPE_NAMES[expected]}, received {value!r}.")
    return value


def _resolve(base, value):
    """Resolve a path against the config's folder, relative to the working directory when inside it.

    Relative paths keep reports the same on every checkout of a repository.
    """
    path = value if os.path.isabs(value) else os.path.normpath(os.path.join(base, value))
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def _resolve_source(base, value):
    """Resolve a custom-objects file against `base`; a dotted module name stays as it is."""
    if value.endswith(".py") or "/" in value or os.sep in value:
        return _resolve(base, value)
    return value


def _has_table(path):
    try:
        with open(path, "rb") as handle:
            return "nandoctor" in tomllib.load(handle).get("tool", {})
    except (OSError, tomllib.TOMLDecodeError):
        return False
