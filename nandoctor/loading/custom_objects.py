"""Import the user's Python files or modules that define custom objects.

Users keep Lambda functions, custom layers and custom losses in their
training script. The script is imported as a module under a name other than
`__main__`, so the code under `if __name__ == "__main__":` (where a training
run usually starts) does not execute. Everything at the top level does.
"""

import importlib
import importlib.util
import inspect
import os
import sys

from nandoctor.errors import CustomObjectsError


def import_custom_objects(sources):
    """Import each file or module and collect the functions and classes it defines.

    Args:
        sources: Paths of `.py` files or dotted module names, in order. Later
            sources win when two define the same name.

    Returns:
        A dict from name to object, for `keras.saving.load_model(custom_objects=...)`.
        Classes and functions registered with
        `keras.saving.register_keras_serializable` are also found through the
        Keras registry, because importing runs the decorator.

    Raises:
        CustomObjectsError: A source is not found or raises while importing.
    """
    objects = {}
    # Importing would write a __pycache__ folder next to each user file and its
    # sibling imports; a scan leaves the user's folders as they were.
    writes_bytecode = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        for source in sources:
            module = _import_source(source)
            objects.update(_public_objects(module))
    finally:
        sys.dont_write_bytecode = writes_bytecode
    return objects


def _import_source(source):
    if source.endswith(".py") or os.path.sep in source or os.path.exists(source):
        return _import_file(source)
    try:
        return importlib.import_module(source)
    except ImportError as error:
        raise CustomObjectsError(
            f"--custom-objects {source}: no such file or importable module ({error}); "
            "pass the path of the .py file that defines the objects."
        ) from error
    except Exception as error:
        raise CustomObjectsError(
            f"--custom-objects {source}: importing the module raised "
            f"{type(error).__name__}: {error}; fix the module or pass a file that "
            "only defines the objects."
        ) from error


def _import_file(path):
    if not os.path.isfile(path):
        raise CustomObjectsError(f"--custom-objects {path}: file not found.")
    stem = os.path.splitext(os.path.basename(path))[0]
    module_name = f"nandoctor_user_{stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise CustomObjectsError(f"--custom-objects {path}: not a Python source file.")
    module = importlib.util.module_from_spec(spec)

    # The file's own folder goes on the path so that its sibling imports work.
    folder = os.path.dirname(os.path.abspath(path))
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SystemExit as error:
        raise CustomObjectsError(
            f"--custom-objects {path}: the file called sys.exit({error.code}) at import; "
            "move that call under `if __name__ == \"__main__\":`."
        ) from error
    except Exception as error:
        del sys.modules[module_name]
        raise CustomObjectsError(
            f"--custom-objects {path}: importing the file raised "
            f"{type(error).__name__}: {error}; fix the file or pass one that only "
            "defines the objects."
        ) from error
    finally:
        if added:
            sys.path.remove(folder)
    return module


def _public_objects(module):
    objects = {}
    for name, value in vars(module).items():
        if name.startswith("__"):
            continue
        if inspect.isfunction(value) or inspect.isclass(value):
            objects[name] = value
    return objects
