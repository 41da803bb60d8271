"""User errors and the exit statuses of the command line."""

import os
import re
import sys
import traceback

import click

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_INTERNAL = 4
EXIT_INTERRUPTED = 130


class NandoctorError(click.ClickException):
    """Base class of every error that a user can fix.

    The message is one line: what failed, on which file or value, and what to
    do next. `cli.main` prints it without a traceback.
    """

    exit_code = EXIT_INPUT

    def format_message(self):
        return " ".join(str(self.message).split())


class ModelLoadError(NandoctorError):
    """A model file that cannot be read or rebuilt."""


class UntrustedCodeError(NandoctorError):
    """A model file whose code would run only with `--trust-code`."""


class MissingCustomObjectsError(NandoctorError):
    """A model file that names functions or classes nandoctor cannot find."""


class CustomObjectsError(NandoctorError):
    """A `--custom-objects` file or module that cannot be imported."""


class DataLoadError(NandoctorError):
    """A data file that cannot be read or does not fit the model."""


class UsageError(NandoctorError):
    """An option value that is invalid on its own or with the others."""

    exit_code = EXIT_USAGE


class ModelCodeError(NandoctorError):
    """Code of the model (a Lambda function, custom layer or loss) that raised while running."""


# A frame of a Python traceback, and the failing node, in a TensorFlow error message.
_FRAME_PATTERN = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')
_NODE_PATTERN = re.compile(r"(?:\{\{node |Detected at node '?)([^}'\s]+)")
_DETAIL_LIMIT = 300
_PACKAGE_FOLDER = os.path.join(os.path.dirname(os.path.realpath(__file__)), "")


def model_code_error(error):
    """Describe an exception that the model's own code raised as a user error.

    The model's code is code outside nandoctor and outside the installed
    packages and the standard library: the user's Lambda functions, custom
    layers and losses, from `--custom-objects` files or from bytecode saved in
    the model. An exception qualifies when the innermost frame outside the
    installed packages belongs to such code. A TensorFlow op that fails while
    the compiled replay runs (a failed `tf.debugging` assertion, for example)
    qualifies when TensorFlow's record of where the op was created ends in
    such code.

    NOTE: code installed as a package (in site-packages) counts as a library,
    so an error raised there stays an internal error.

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
    outside = [index for index, (frame, _) in enumerate(frames) if not _is_library_file(frame.f_code.co_filename)]
    if not outside:
        return None
    frame, line = frames[outside[-1]]
    filename = frame.f_code.co_filename
    if not _is_user_file(filename):
        return None
    # The model's code runs only when Keras or TensorFlow calls it: while
    # Keras rebuilds the model or while a tf.function traces the replay.
    callers = [caller.f_code.co_filename for caller, _ in frames[:outside[-1]]]
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

    The message of a failed `tf.py_function` holds the Python traceback of the
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

