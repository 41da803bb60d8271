"""Vanishing gradients: the gradient of a trainable layer is zero or nearly so.

What it detects:
    During `--fit-steps`, a layer with trainable weights whose gradient norm
    stays below 1e-10 times the largest layer's gradient norm at every step.

Why it breaks training:
    The layer stops learning. A saturated `exp`, `sigmoid` or `tanh` in front
    of it is a frequent cause, and it often comes just before an overflow.

Example:
    keras.layers.Dense(64, activation="sigmoid")  # with inputs scaled to 1e3

Fix:
    Normalize the layer's inputs, use a non-saturating activation (relu,
    gelu), or check the initialization scale.

Known limits:
    Layers that are frozen on purpose have no trainable weights and are skipped.
"""

from nandoctor.diagnosis.rule import Rule

RULE = Rule("ND503", "vanishing-gradient", "vanishing_gradient", "warning",
            "A trainable layer receives a gradient that is zero or nearly so.", __doc__)
