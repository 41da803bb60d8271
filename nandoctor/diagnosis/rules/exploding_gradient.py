"""Exploding gradients: the gradient norm grows fast during the training replay.

What it detects:
    During `--fit-steps`, a global gradient norm that grows by more than the
    threshold factor (default 1000) between the first steps and the last, or
    passes 1e6, while every value is still finite.

Why it breaks training:
    Each step then moves the weights further than the last, until an
    activation, a loss or an update overflows.

Example:
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5), loss="mse")

Fix:
    Clip gradients (`clipnorm=1.0` on the optimizer) and lower the learning rate.

Known limits:
    Only the replayed steps are seen; growth that starts later is missed.
"""

from nandoctor.diagnosis.rule import Rule

RULE = Rule("ND502", "exploding-gradient", "exploding_gradient", "warning",
            "The gradient norm grows fast over the replayed training steps.", __doc__)
