"""A Sqrt or Pow argument comes close to 0, where its derivative is infinite.

What it detects:
    Sqrt (and Pow with an exponent below 1) arguments whose smallest value is so
    close to 0 that the derivative exceeds --max-derivative (default 1e4), although
    it stays finite on this data.

Why it breaks training:
    The gradient through the op reaches huge values and becomes Inf at exactly 0,
    which the next batch may contain.

Example:
    keras.layers.Lambda(lambda h: keras.ops.sqrt(keras.ops.square(h)))  # a norm of values that touch 0

Fix:
    Add an epsilon inside the root: `tf.sqrt(x + 1e-8)`.

Known limits:
    Only ops in Lambda layers, custom layers and custom losses are traced.
"""

from nandoctor.diagnosis.rule import Rule

RULE = Rule("ND411", "gradient-risk", "gradient_risk", "warning",
            "A Sqrt or Pow argument comes close to 0, where its derivative is infinite.", __doc__)
