"""Re-run one batch eagerly and record every TensorFlow op of chosen layers.

Used only for layers (or the loss) where the compiled replay saw non-finite
values appear. An op callback records each op's type, inputs, outputs and the
innermost user frame of the Python stack, then one `GradientTape.gradient`
call gives the gradient arriving at every recorded tensor.
"""

import os
import sys
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf
from tensorflow.python.framework import op_callbacks  # NOTE: private TF module, present in TF 2.16-2.21.

from nandoctor.replay.graph import copy_float_inputs
from nandoctor.replay.stats import is_float

# Frames from these packages are library code, so the op's source location is
# the innermost frame outside them.
_LIBRARY_ROOTS = tuple(
    os.path.dirname(os.path.abspath(module.__file__)) + os.sep
    for module in (tf, np, sys.modules["keras"], sys.modules["absl"] if "absl" in sys.modules else tf)
)
_OWN_ROOTS = tuple(
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), name) + os.sep
    for name in ("replay", "loading", "diagnosis", "report")
)
_STDLIB_ROOT = os.path.dirname(os.path.abspath(os.__file__)) + os.sep


@dataclass
class OpRecord:
    """One op executed inside a traced layer or loss."""

    op_type: str
    inputs: list
    """Input tensors (eager)."""
    outputs: list
    location: tuple | None
    """(file, line, function) of the innermost user frame, or None."""
    input_values: list = field(default_factory=list)
    output_values: list = field(default_factory=list)
    input_grads: list = field(default_factory=list)
    output_grads: list = field(default_factory=list)


@dataclass
class TraceResult:
    """Recorded ops per traced target, with their values and gradients as numpy."""

    ops: dict
    """Target (a call index, or "loss") to list of `OpRecord`."""
    layer_inputs: dict
    """Call index to the list of numpy values of its float inputs."""
    loss_value: float


class _Recorder:
    def __init__(self):
        self.target = None
        self.ops = {}

    def __call__(self, op_type, inputs, attrs, outputs, op_name=None, graph=None):
        if self.target is None or graph is not None:
            return None
        self.ops.setdefault(self.target, []).append(
            OpRecord(op_type, list(inputs), list(outputs), _user_location())
        )
        return None


def trace_batch(graph, loss, inputs, targets, targets_of_interest):
    """Run one batch eagerly, recording the ops of the chosen layers and the loss.

    Args:
        graph: The `LayerGraph` of the model.
        loss: The `ReplayLoss`.
        inputs: Numpy arrays, one per model input.
        targets: Numpy arrays, one per output, or an empty list.
        targets_of_interest: Set of call indices, and "loss" to trace the loss.

    Returns:
        A `TraceResult`.
    """
    recorder = _Recorder()
    layer_inputs = {}
    watched = []

    def hook(call, args, kwargs):
        args, kwargs, copies = copy_float_inputs(args, kwargs)
        if call.index not in targets_of_interest:
            return call.layer(*args, **kwargs)
        layer_inputs[call.index] = copies
        watched.extend(copies)
        recorder.target = call.index
        try:
            return call.layer(*args, **kwargs)
        finally:
            recorder.target = None

    tensors = [tf.convert_to_tensor(x) for x in inputs]
    target_tensors = [tf.convert_to_tensor(y) for y in targets]
    op_callbacks.add_op_callback(recorder)
    try:
        with tf.GradientTape() as tape:
            for tensor in tensors:
                if is_float(tensor):
                    tape.watch(tensor)
            outputs = graph.run(tensors, hook)
            if "loss" in targets_of_interest:
                recorder.target = "loss"
            try:
                loss_value = loss(target_tensors, outputs)
            finally:
                recorder.target = None
    finally:
        op_callbacks.remove_op_callback(recorder)

    sources = {}
    for records in recorder.ops.values():
        for record in records:
            for tensor in record.inputs + record.outputs:
                if tf.is_tensor(tensor) and is_float(tensor):
                    sources.setdefault(id(tensor), tensor)
    for tensor in watched:
        sources.setdefault(id(tensor), tensor)
    keys = list(sources)
    gradients = tape.gradient(loss_value, [sources[k] for k in keys], unconnected_gradients=tf.UnconnectedGradients.NONE)
    grad_by_id = {k: (None if g is None else _numpy(g)) for k, g in zip(keys, gradients)}

    for records in recorder.ops.values():
        for record in records:
            record.input_values = [_numpy(t) for t in record.inputs]
            record.output_values = [_numpy(t) for t in record.outputs]
            record.input_grads = [grad_by_id.get(id(t)) for t in record.inputs]
            record.output_grads = [grad_by_id.get(id(t)) for t in record.outputs]
            record.inputs = record.outputs = None  # Release the eager tensors.
    values = {index: [_numpy(t) for t in copies] for index, copies in layer_inputs.items()}
    return TraceResult(recorder.ops, values, float(np.asarray(loss_value)))


def _numpy(tensor):
    """Return the tensor's value as numpy, or None for resource and variant handles."""
    if isinstance(tensor, tf.IndexedSlices):
        tensor = tf.convert_to_tensor(tensor)
    dtype = getattr(tensor, "dtype", None)
    if dtype is not None and dtype in (tf.resource, tf.variant):
        return None
    try:
        return np.asarray(tensor.numpy())  # A 0-d tensor gives a numpy scalar, not an array.
    except AttributeError:
        return np.asarray(tensor)


def _user_location():
    """Return (file, line, function) of the innermost frame of user code, or None.

    The walk goes outwards from the op and stops at nandoctor's own replay
    code, so an op of a built-in layer has no location.
    """
    frame = sys._getframe(2)
    while frame is not None:
        filename = os.path.abspath(frame.f_code.co_filename)
        if filename.startswith(_OWN_ROOTS):
            return None
        if not (filename.startswith(_LIBRARY_ROOTS) or filename.startswith(_STDLIB_ROOT)
                or filename.startswith("<frozen")):
            return (frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name)
        frame = frame.f_back
    return None
