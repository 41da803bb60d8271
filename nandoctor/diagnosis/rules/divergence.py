"""Divergence in training: optimizer steps drive finite weights to non-finite values.

What it detects:
    During `--fit-steps`, the first optimizer step whose loss, gradients or
    updated weights are non-finite, when no single op in the forward or
    backward pass of that step's batch can be named as the origin. The
    weights themselves grew until the update overflowed.

Why it breaks training:
    Once one weight is NaN or Inf, every later forward pass is NaN, and the
    saved model keeps those weights.

Example:
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0), loss="mse")
    model.fit(x, y * 1e4)  # unnormalized targets: each step overshoots more

Fix:
    Lower the learning rate (ten times is a good first try), clip gradients
    with `clipnorm=1.0`, and normalize inputs and targets. The finding names
    the cause that the measured numbers point to and a value to try.

Known limits:
    The cause is inferred from the per-step numbers (loss growth, gradient
    norms, update-to-weight ratios, data scale); more than one may apply.
"""

from nandoctor.diagnosis.rule import Rule

RULE = Rule("ND501", "divergence", "divergence", "error",
            "Optimizer steps drive the weights to non-finite values.", __doc__)
