"""Overflow: an op turns finite inputs into +Inf or -Inf.

What it detects:
    An op such as Exp, Pow, Square, Mul, MatMul or a Cast to a narrower float
    whose inputs are all finite but whose output contains +Inf or -Inf, because
    the exact result is larger than the dtype's maximum (3.4e38 for float32,
    65504 for float16). Exp overflows in float32 once its argument passes 88.72.

Why it breaks training:
    The Inf travels to the loss, where Inf - Inf or 0 * Inf gives NaN, and the
    gradient of every weight upstream becomes NaN after one step.

Example:
    inputs = keras.Input((4,))
    scale = keras.layers.Lambda(lambda z: keras.ops.exp(100.0 * z))(inputs)
    # Overflows for any input above 0.887.

Fix:
    Bound the argument (`tf.exp(tf.minimum(z, 80.0))`), or keep the quantity
    in log space: predict a log-scale and use `tf.math.softplus` or
    `tf.math.reduce_logsumexp` instead of an explicit exp. For other ops,
    normalize the inputs or the weights so values stay in range.

Known limits:
    An op that overflows only inside a fused kernel (a compiled XLA cluster)
    is reported at the layer, without the op.
"""

import math

from nandoctor.diagnosis.rule import Rule

RULE = Rule("ND101", "overflow", "overflow", "error",
            "An op turns finite inputs into +Inf or -Inf.", __doc__)

_EXP_OPS = ("Exp", "Expm1")


def exp_bound(dtype_max, headroom_factor=2.0):
    """Return the Exp argument bound to suggest: 43 for float32, 4 for float16.

    It is the largest whole number that leaves `headroom_factor` of margin below
    the overflow threshold log(dtype_max), so a clipped argument raises no
    overflow-risk warning, and exp of it can still be squared without overflow.
    """
    return math.floor(math.log(dtype_max) / headroom_factor) - 1


def fix(op, dtype_max, bound=None):
    """Write the fix for an overflow in `op`, given the dtype's largest value.

    `bound` is the Exp argument bound to suggest; by default `exp_bound`.
    """
    if op in _EXP_OPS:
        bound = bound if bound is not None else exp_bound(dtype_max)
        return (
            f"Clip the argument before the exp, for example `tf.exp(tf.clip_by_value(z, -{bound:g}, {bound:g}))` "
            "(the lower bound keeps exp from underflowing to 0 before a division or log), or keep the "
            "value in log space (`tf.math.softplus`, `tf.math.reduce_logsumexp`, or predict the log directly)."
        )
    if op == "Cast":
        return (
            "Keep this tensor in float32 (give the layer dtype='float32') or scale it into "
            "the narrower dtype's range before the cast."
        )
    if op in ("Pow", "Square", "Mul", "Cosh", "Sinh"):
        return (
            "Bound the base before the op (`tf.clip_by_value`) or normalize the inputs so their "
            "magnitude stays small; use log space if only ratios of the result matter."
        )
    return (
        "Normalize the inputs of this layer (for example a `keras.layers.Normalization` adapted "
        "on the data) or reduce the weight scale, so values stay inside the dtype's range."
    )
