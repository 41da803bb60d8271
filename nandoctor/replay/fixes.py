"""Apply a suggested fix to one op of one layer in memory, and count what stays non-finite.

The fix replaces the TensorFlow functions that user code and Keras call for
that op (`tf.exp`, `tf.math.log`, the division behind `/`, ...) while the
chosen layer, or the loss, runs. The replacement computes the fixed
expression with the original functions, so its gradient is the fixed op's.
Everything is restored afterwards, also on error.
"""

import contextlib

import numpy as np
import tensorflow as tf
from tensorflow.python.ops import gen_math_ops

from nandoctor.replay.graph import copy_float_inputs
from nandoctor.replay.stats import is_float

EPSILON = 1e-7
"""The epsilon the fixes add; float32 keeps it next to 1 and far from 0."""


EXP_BOUND_STEPS = (1.0, 0.5, 0.25, 0.125)
"""Fractions of the suggested Exp bound tried in turn; the first that clears the fault is suggested."""
DENOMINATOR_EPSILON = 1e-6
"""Matches the default --min-denominator, so a fixed division raises no division-risk warning."""
DOMAIN_EPSILON = 1e-4
"""Distance from ±1 for Acos and Asin; the derivative there is about 71, under the domain-risk limit."""


def _exp_fix(original, bound):
    def exp(x, name=None):
        x = tf.convert_to_tensor(x)
        limit = tf.cast(min(bound, float(np.floor(np.log(np.finfo(x.dtype.as_numpy_dtype).max))) - 1.0), x.dtype)
        # Both sides: exp of a very negative argument underflows to 0, which a
        # later division or log turns into Inf.
        return original(tf.clip_by_value(x, -limit, limit))
    return exp


def _division_fix(original):
    def divide(x, y, name=None):
        y = tf.convert_to_tensor(y)
        eps = tf.cast(DENOMINATOR_EPSILON, y.dtype)
        safe = tf.where(tf.abs(y) < eps, tf.where(y >= 0, eps, -eps), y)
        return original(x, safe)
    return divide


def _reciprocal_fix(original):
    def reciprocal(x, name=None):
        x = tf.convert_to_tensor(x)
        eps = tf.cast(DENOMINATOR_EPSILON, x.dtype)
        return original(tf.where(tf.abs(x) < eps, tf.where(x >= 0, eps, -eps), x))
    return reciprocal


def _floor_fix(low):
    def make(original):
        def apply(x, *rest, name=None):
            x = tf.convert_to_tensor(x)
            return original(tf.maximum(x, tf.cast(low, x.dtype)), *rest)
        return apply
    return make


def _sqrt_fix(original):
    def sqrt(x, name=None):
        x = tf.convert_to_tensor(x)
        return original(tf.maximum(x, tf.cast(0.0, x.dtype)) + tf.cast(1e-8, x.dtype))
    return sqrt


def _clip_fix(original):
    def clipped(x, name=None):
        x = tf.convert_to_tensor(x)
        edge = tf.cast(1.0 - DOMAIN_EPSILON, x.dtype)
        return original(tf.clip_by_value(x, -edge, edge))
    return clipped


# Op type -> (replacement builder, [(module, attribute)] to patch).
_FIXES = {
    "Exp": (_exp_fix, [(tf, "exp"), (tf.math, "exp"), (gen_math_ops, "exp")]),
    "RealDiv": (_division_fix, [(gen_math_ops, "real_div")]),
    "Div": (_division_fix, [(gen_math_ops, "div")]),
    "Reciprocal": (_reciprocal_fix, [(tf.math, "reciprocal"), (gen_math_ops, "reciprocal")]),
    "Log": (_floor_fix(EPSILON), [(tf.math, "log"), (gen_math_ops, "log")]),
    "Rsqrt": (_floor_fix(EPSILON), [(tf.math, "rsqrt"), (gen_math_ops, "rsqrt")]),
    "Pow": (_floor_fix(EPSILON), [(tf, "pow"), (tf.math, "pow"), (gen_math_ops, "pow")]),
    "Sqrt": (_sqrt_fix, [(tf, "sqrt"), (tf.math, "sqrt"), (gen_math_ops, "sqrt")]),
    "Acos": (_clip_fix, [(tf, "acos"), (tf.math, "acos"), (gen_math_ops, "acos")]),
    "Asin": (_clip_fix, [(tf, "asin"), (tf.math, "asin"), (gen_math_ops, "asin")]),
}
FIXABLE_OPS = frozenset(_FIXES)


@contextlib.contextmanager
def patched(op_type, parameter=None):
    """Replace the functions behind `op_type` with their fixed versions, then restore them.

    `parameter` is the Exp bound; other fixes take none.
    """
    builder, places = _FIXES[op_type]
    saved = [(module, name, getattr(module, name)) for module, name in places if hasattr(module, name)]
    inner = getattr(gen_math_ops, places[-1][1])
    replacement = builder(inner, parameter) if parameter is not None else builder(inner)
    try:
        for module, name, _ in saved:
            setattr(module, name, replacement)
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


def verify(graph, loss, inputs, targets, target, op_type):
    """Try the fix of `op_type` in `target` on one batch and report whether it clears the fault.

    Returns:
        A dict: `verified`, `before` and `after` (see `count_nonfinite`), and
        `parameter` (the Exp bound that was tried last, or None).
    """
    from nandoctor.diagnosis.rules.overflow import exp_bound

    before = count_nonfinite(graph, loss, inputs, targets)
    parameters = (None,)
    if op_type in ("Exp", "Expm1"):
        dtype_max = float(np.finfo(np.float32).max)
        parameters = tuple(float(max(1, round(exp_bound(dtype_max) * f))) for f in EXP_BOUND_STEPS)
    for parameter in parameters:
        after = count_nonfinite(graph, loss, inputs, targets, target, op_type, parameter)
        verified = after["outputs"] == 0 and after["gradients"] == 0 and after["loss_finite"]
        if verified:
            break
    return {"verified": verified, "before": before, "after": after, "parameter": parameter}


def count_nonfinite(graph, loss, inputs, targets, target=None, op_type=None, parameter=None):
    """Run one batch eagerly and count non-finite values, with an optional fix applied.

    Args:
        graph: The model's `LayerGraph`.
        loss: The `ReplayLoss`.
        inputs, targets: Numpy arrays of the batch.
        target: The call index of the layer to fix, or "loss", or None for no fix.
        op_type: The op to fix inside `target`.

    Returns:
        A dict: `outputs` (non-finite values in all layer outputs), `gradients`
        (in the gradients of all trainable weights) and `loss_finite`.
    """
    outputs_bad = []

    def hook(call, args, kwargs):
        args, kwargs, _ = copy_float_inputs(args, kwargs)
        context = patched(op_type, parameter) if target == call.index else contextlib.nullcontext()
        with context:
            result = call.layer(*args, **kwargs)
        for tensor in tf.nest.flatten(result):
            if tf.is_tensor(tensor) and is_float(tensor):
                outputs_bad.append(int(tf.reduce_sum(tf.cast(tf.logical_not(tf.math.is_finite(tensor)), tf.int64))))
        return result

    model = graph.model
    tensors = [tf.convert_to_tensor(x) for x in inputs]
    target_tensors = [tf.convert_to_tensor(y) for y in targets]
    with tf.GradientTape() as tape:
        outputs = graph.run(tensors, hook)
        context = patched(op_type, parameter) if target == "loss" else contextlib.nullcontext()
        with context:
            value = loss(target_tensors, outputs)
    gradients = tape.gradient(value, model.trainable_weights)
    gradient_bad = sum(int(np.sum(~np.isfinite(np.asarray(tf.convert_to_tensor(g))))) for g in gradients if g is not None)
    return {"outputs": sum(outputs_bad), "gradients": gradient_bad, "loss_finite": bool(np.isfinite(float(value)))}
