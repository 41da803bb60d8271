"""Tell exceptions raised by the model's own code from bugs in nandoctor.

The model's own code is what the user wrote: Lambda functions, custom layers
and losses, from `--custom-objects` files or from bytecode saved in the model.
When it raises while Keras rebuilds the model or while the replay runs it, the
user has to fix it. So the error becomes a `ModelCodeError` (exit status 3)
that names the layer, the function and its file and line.
"""

import os
import re
import sys
import traceback

from nandoctor.errors import ModelCodeError

# A frame of a Python traceback, and the failing node, in a TensorFlow error message.
_FRAME_PATTERN = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')
_NODE_PATTERN = re.compile(r"(?:\{\{node |Detected at node '?)([^}'\s]+)")
_DETAIL_LIMIT = 300
# The nandoctor package, two levels above this file.
_PACKAGE_FOLDER = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), "")


def model_code_error(error):
    """Describe an exception that the model's own code raised as a user error.

    User code is code in a file outside nandoctor, the standard library and
    the installed packages. A Python exception qualifies when the innermost
    frame outside the standard library and the installed packages is user
    code, and Keras or TensorFlow called that code. A failed TensorFlow op
    qualifies when its message shows a frame of user code: a failed
    `tf.py_function` includes the function's traceback.

    NOTE: a failed op inside a nested function, such as a `tf.debugging`
    assertion in a `tf.cond` branch, shows no frames, so it stays an internal
    error. So does an exception raised in user code installed as a package.

    Args:
        error: An exception raised during a scan that is not a `NandoctorError`.

    Returns:
        A `ModelCodeError` naming the layer (when known), the function, its
        file and line and the original message, or None when the exception
        did not come from the model's code.
    """
    if _is_tensorflow_op_error(error):
        return _op_error(error)

    chain = _exception_chain(error)
    origin = chain[-1]
    frames = list(traceback.walk_tb(origin.__traceback__))
    non_library = [index for index, (frame, _) in enumerate(frames) if not _is_library_file(frame.f_code.co_filename)]
    if not non_library:
        return None
    innermost = non_library[-1]
    frame, line = frames[innermost]
    filename = frame.f_code.co_filename
    if not _is_user_file(filename):
        return None
    # The model's code runs only when Keras or TensorFlow calls it: while
    # Keras rebuilds the model or while a tf.function traces the replay.
    callers = [caller.f_code.co_filename for caller, _ in frames[:innermost]]
    if not any(_is_framework_file(caller) for caller in callers):
        return None

    where = f"{frame.f_code.co_name} at {filename}:{line}"
    detail = _shorten(str(origin)) or "no message"
    layer = _innermost_layer(chain)
    if layer is not None:
        subject = f"layer '{layer.name}' ({type(layer).__name__})"
    else:
        subject = "the model's code"
    return ModelCodeError(
        f"{subject} raised {type(origin).__name__} in {where}: {detail}; fix that code, or "
        "the data it rejects, and scan again."
    )


def _op_error(error):
    """Describe a failed TensorFlow op whose message shows a frame of the model's code.

    The message of a failed `tf.py_function` contains the Python traceback of the
    function, and an op at the top level of a `tf.function` lists the frames
    that created it. A failed op inside a nested function (a `tf.cond` branch,
    as in `tf.debugging` assertions) lists neither, so it stays an internal error.
    """
    text = str(error)
    frames = [match for match in _FRAME_PATTERN.finditer(text) if _is_user_file(match.group(1))]
    if not frames:
        return None
    filename, line, function = frames[-1].groups()
    node = _NODE_PATTERN.search(text)
    at_node = f" at node '{node.group(1)}'" if node else ""

    lines = [line.strip() for line in text.splitlines()]
    messages = [line for line in lines if re.match(r"^\w+(Error|Exception)\b", line)]
    detail = _shorten(messages[-1] if messages else lines[-1])
    return ModelCodeError(
        f"an op of the model failed with {type(error).__name__}{at_node}, in {function} at "
        f"{filename}:{line}: {detail}; fix that code, or the data it rejects, and scan again."
    )


def _is_tensorflow_op_error(error):
    return any(
        cls.__name__ == "OpError" and cls.__module__.startswith("tensorflow")
        for cls in type(error).__mro__
    )


def _exception_chain(error):
    """List `error` and the exceptions it was raised from, outermost first."""
    chain = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def _innermost_layer(chain):
    """Return the innermost Keras layer whose call is on the stack of any exception in `chain`."""
    keras = sys.modules.get("keras")
    if keras is None:
        return None
    for exception in reversed(chain):
        layers = [
            frame.f_locals.get("self")
            for frame, _ in traceback.walk_tb(exception.__traceback__)
            if isinstance(frame.f_locals.get("self"), keras.layers.Layer)
        ]
        if layers:
            return layers[-1]
    return None


def _is_library_file(filename):
    """Return whether `filename` is in the standard library or an installed package.

    Names that are not absolute paths count as library code: `<frozen runpy>`,
    `<string>`, and the source names of compiled extensions such as
    `h5py/h5o.pyx`. So do the files that TensorFlow's autograph generates.
    """
    if not os.path.isabs(filename) or os.path.basename(filename).startswith("__autograph_generated_file"):
        return True
    path = os.path.realpath(filename)
    return any(path.startswith(folder) for folder in _library_folders())


def _is_framework_file(filename):
    """Return whether `filename` belongs to the keras or tensorflow package."""
    path = os.path.realpath(filename)
    for name in ("keras", "tensorflow"):
        module = sys.modules.get(name)
        if module is not None and getattr(module, "__file__", None):
            if path.startswith(os.path.join(os.path.dirname(os.path.realpath(module.__file__)), "")):
                return True
    return False


def _is_user_file(filename):
    return not _is_library_file(filename) and not os.path.realpath(filename).startswith(_PACKAGE_FOLDER)


def _library_folders():
    import sysconfig

    paths = sysconfig.get_paths()
    folders = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    return tuple(os.path.join(os.path.realpath(folder), "") for folder in folders)


def _shorten(text):
    text = " ".join(text.split())
    return text if len(text) <= _DETAIL_LIMIT else text[:_DETAIL_LIMIT] + "..."

