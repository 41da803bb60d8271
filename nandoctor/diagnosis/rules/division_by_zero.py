"""Division by zero: a zero denominator, or the log of exactly zero.

What it detects:
    RealDiv, Div, Reciprocal, FloorDiv and the like with a denominator that is
    exactly 0, and Log, Rsqrt or Pow with a negative exponent at exactly 0.
    Finite inputs give ±Inf, or NaN for 0/0.

Why it breaks training:
    One zero denominator in one sample turns the loss into Inf or NaN, and the
    next optimizer step writes NaN into every weight that the sample reaches.

Example:
    inputs = keras.Input((1,))
    ratio = keras.layers.Lambda(lambda x: x / (x - 1.0))(inputs)
    # Divides by zero for every sample equal to 1.

Fix:
    Keep the denominator away from zero (`d + eps` for a denominator that is
    never negative, or `tf.where(tf.abs(d) < eps, eps, d)`), or use
    `tf.math.divide_no_nan(x, d)` when 0 is the right result there. For a log,
    use `tf.math.log(x + eps)` or compute log-probabilities directly.

Known limits:
    Integer division by zero raises inside TensorFlow instead of giving Inf,
    so it shows as a failed replay, not as this finding.
"""

from nandoctor.diagnosis.rule import Rule

RULE = Rule("ND201", "division-by-zero", "division_by_zero", "error",
            "A zero denominator, or the log of exactly zero, gives Inf or NaN.", __doc__)


def fix(op):
    """Write the fix for a zero denominator in `op`."""
    if op in ("Log", "Log1p", "Xlogy"):
        return (
            "Keep the log's argument away from 0, for example `tf.math.log(x + 1e-7)`; for the "
            "log of a probability, compute log-probabilities directly (`tf.nn.log_softmax`, or a "
            "loss with `from_logits=True`)."
        )
    if op == "Rsqrt":
        return "Add an epsilon before the reciprocal square root: `tf.math.rsqrt(x + 1e-7)`."
    if op == "Pow":
        return "Keep the base away from 0 before a negative exponent: `tf.pow(tf.maximum(x, 1e-7), a)`."
    return (
        "Keep the denominator away from zero with its sign, for example "
        "`x / tf.where(tf.abs(d) < 1e-6, tf.where(d < 0, -1e-6, 1e-6), d)`, "
        "or use `tf.math.divide_no_nan(x, d)` if 0 is the right result where d is 0."
    )
