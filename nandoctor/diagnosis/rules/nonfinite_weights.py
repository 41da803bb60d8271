"""Non-finite weights: the saved file already contains NaN or Inf weights.

What it detects:
    Any weight (trainable or not, including BatchNormalization moving
    statistics) of any layer that contains NaN, +Inf or -Inf in the saved file.

Why it breaks training:
    Such a model computes NaN for every input. It usually means that training
    diverged before the model was saved, so the original origin is gone.

Example:
    model.fit(x, y, epochs=50)  # the loss became nan at epoch 12
    model.save("model.keras")   # the NaN weights are saved as they are

Fix:
    Restore an earlier checkpoint, or retrain with a lower learning rate and
    gradient clipping (`clipnorm=1.0`), stopping at the first NaN with
    `keras.callbacks.TerminateOnNaN`. Scan the model saved before the
    divergence to find the origin.

Known limits:
    The layers after a non-finite weight are not checked for faults of their
    own on the same samples.
"""

from nandoctor.diagnosis.rule import Rule

RULE = Rule("ND701", "nonfinite-weights", "nonfinite_weights", "error",
            "The saved model already contains NaN or Inf weights.", __doc__)


def fix():
    """Write the fix for non-finite saved weights."""
    return (
        "Restore a checkpoint from before training diverged, or retrain with a lower learning "
        "rate and `clipnorm=1.0`, stopping at the first NaN with `keras.callbacks.TerminateOnNaN`; "
        "`nandoctor scan MODEL DATA --fit-steps 100 --from-init` replays training from fresh "
        "weights to find where it breaks."
    )
