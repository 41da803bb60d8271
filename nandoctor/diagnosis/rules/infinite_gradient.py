"""Infinite gradient: a finite forward pass whose backward pass makes Inf or NaN.

What it detects:
    A layer or loss whose forward output is finite and whose arriving gradient
    is finite, but which passes a non-finite gradient to its inputs or weights.
    Typical ops: Sqrt, Log, Rsqrt, Pow with an exponent below 1, Acos, Asin at
    the point where their derivative is infinite, and `tf.where` hiding a NaN
    branch that the backward pass multiplies by zero.

Why it breaks training:
    The loss looks fine, so the fault stays invisible until the optimizer step
    writes NaN into the weights. From then on, every forward pass is NaN.

Example:
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(4)(inputs)
    root = keras.layers.Lambda(lambda h: keras.ops.sqrt(keras.ops.abs(h)))(hidden)
    # The derivative 1/(2*sqrt(x)) is infinite where the Dense output is 0.

Fix:
    Add an epsilon where the derivative blows up (`tf.sqrt(x + 1e-8)`,
    `tf.math.log(x + 1e-7)`), or, for `tf.where(mask, f(x), 0)`, use the
    double-where pattern so f never receives the masked inputs:
    `safe = tf.where(mask, x, 1.0); y = tf.where(mask, f(safe), 0.0)`.

Known limits:
    When a tensor feeds several ops, the op named is the first one in backward
    order whose input gradient is non-finite. An op whose derivative is
    infinite at its inputs is preferred.
"""

from nandoctor.diagnosis.rule import Rule

RULE = Rule("ND401", "infinite-gradient", "infinite_gradient", "error",
            "The backward pass creates Inf or NaN although the forward pass is finite.", __doc__)


def fix(op, hidden_forward_nan):
    """Write the fix for an infinite derivative at `op`."""
    if hidden_forward_nan:
        return (
            f"Use the double-where pattern so {op or 'the op'} never sees the masked inputs: "
            "`safe = tf.where(mask, x, 1.0); y = tf.where(mask, f(safe), 0.0)`."
        )
    if op == "Sqrt":
        return (
            "Add an epsilon inside the square root, `tf.sqrt(x + 1e-8)` (or "
            "`tf.sqrt(tf.maximum(x, 1e-8))`), so its derivative 1/(2*sqrt(x)) stays finite at 0."
        )
    if op in ("Log", "Log1p", "Reciprocal", "RealDiv", "Div", "Rsqrt"):
        return f"Keep the input of {op} away from its singular point with an epsilon, for example `x + 1e-7`."
    if op == "Pow":
        return "Add an epsilon to the base, `tf.pow(x + 1e-7, a)`, so the derivative a*x**(a-1) stays finite at 0."
    if op in ("Acos", "Asin", "Atanh"):
        return "Clip the argument to `[-1 + 1e-7, 1 - 1e-7]`, where the derivative is finite."
    return (
        "Find the term whose derivative is infinite at these inputs and add an epsilon there; "
        "gradient clipping (`clipnorm=1.0`) does not remove NaN."
    )
