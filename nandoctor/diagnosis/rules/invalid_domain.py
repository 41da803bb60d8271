"""Invalid domain: an op is applied outside the inputs where it is defined.

What it detects:
    Log or Sqrt of a negative number, Acos, Asin or Atanh outside [-1, 1], a
    negative base raised to a fractional power: finite inputs give NaN.

Why it breaks training:
    NaN compares false with everything, so it slips through clipping and
    `tf.maximum`, reaches the loss and then every gradient.

Example:
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(4)(inputs)
    root = keras.layers.Lambda(lambda h: keras.ops.sqrt(h))(hidden)
    # Dense outputs are negative for about half the samples.

Fix:
    Clamp the argument into the domain (`tf.sqrt(tf.maximum(x, 0.0))`,
    `tf.math.log(tf.maximum(x, 1e-7))`, `tf.clip_by_value(x, -1 + 1e-4,
    1 - 1e-4)` before Acos), or fix the computation that leaves it, for example
    a variance that is not passed through softplus.

Known limits:
    NaN created from Inf inputs (Inf - Inf, 0 * Inf) is propagation and is
    reported at the op that made the Inf.
"""

from nandoctor.diagnosis.rule import Rule

RULE = Rule("ND301", "invalid-domain", "invalid_domain", "error",
            "An op gets inputs outside its domain, such as sqrt or log of a negative number.", __doc__)


def fix(op):
    """Write the fix for an out-of-domain input to `op`."""
    if op == "Sqrt":
        return (
            "Clamp the argument at 0, `tf.sqrt(tf.maximum(x, 0.0) + 1e-7)` (the epsilon keeps its "
            "gradient finite), or fix the computation that makes it negative."
        )
    if op in ("Log", "Log1p", "Xlogy"):
        return (
            "Clamp the argument, `tf.math.log(tf.maximum(x, 1e-7))`; a negative argument usually "
            "means a scale or probability computed without softplus, exp or softmax."
        )
    if op in ("Acos", "Asin", "Atanh"):
        return "Clip the argument into the open domain: `tf.clip_by_value(x, -1.0 + 1e-4, 1.0 - 1e-4)`."
    if op == "Pow":
        return "Make the base positive before a fractional power, for example `tf.pow(tf.abs(x) + 1e-7, a)`."
    return "Clamp this op's input into its domain, or fix the computation that moves it out."
