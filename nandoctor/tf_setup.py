"""Import TensorFlow once, with its start-up logging turned down."""

import logging
import os
import sys
import tempfile


def quiet_tensorflow():
    """Import TensorFlow without its start-up messages on stderr.

    TensorFlow 2.21 prints C++ log lines at import time even with
    `TF_CPP_MIN_LOG_LEVEL=3`, so file descriptor 2 is pointed at an unnamed
    temporary file during the import. If the import fails, the captured text
    is written to stderr. A `TF_CPP_MIN_LOG_LEVEL` the user set is kept.
    """
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf
            import keras  # noqa: F401  (its import also logs)
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode("utf-8", errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    tf.get_logger().setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)
    return tf
