"""An op or activation is close to its dtype's overflow limit on the data.

What it detects:
    Exp, Expm1, Pow, Square or Cast arguments, and layer outputs, whose distance
    from the overflow threshold of their dtype (88.72 for the Exp of a float32,
    3.4e38 or 65504 for values) is smaller than --headroom-factor: the input scale
    may grow by less than that factor before the op overflows.

Why it breaks training:
    The data at hand passes, but a batch with slightly larger inputs, or a few more
    optimizer steps that grow the weights, will produce Inf.

Example:
    keras.layers.Lambda(lambda z: keras.ops.exp(80.0 * z))  # arguments up to 79.6 on inputs below 0.995

Fix:
    Bound the argument (`tf.minimum(z, 60.0)`), work in log space, or normalize the
    inputs; for a float16 layer, keep it in float32.

Known limits:
    Only Lambda layers, custom layers and custom losses are traced op by op; built-
    in layers are checked through their outputs only.
"""

from nandoctor.diagnosis.rule import Rule

RULE = Rule("ND111", "overflow-risk", "overflow_risk", "warning",
            "An op or activation is close to its dtype's overflow limit on the data.", __doc__)
