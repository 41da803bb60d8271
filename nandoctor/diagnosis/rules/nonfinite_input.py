"""Non-finite input data: NaN or Inf already present in the inputs or targets.

What it detects:
    NaN, +Inf or -Inf values in the arrays of the data file, per model input
    and per target, with the samples that hold them.

Why it breaks training:
    Every layer the bad sample reaches computes NaN, and one NaN in a batch
    makes the batch's loss and every weight gradient NaN. MaxPooling on CPU
    can drop a NaN, so the loss may even look finite while gradients are NaN.

Example:
    x = np.random.rand(100, 4).astype("float32")
    x[41, 2] = np.nan  # a missing value left in by the preprocessing

Fix:
    Drop or impute the samples before training, for example
    `keep = np.isfinite(x).all(axis=1); x, y = x[keep], y[keep]`, and fix the
    preprocessing step that produced them.

Known limits:
    Only the samples that the scan reads are checked (see --max-samples).
"""

from nandoctor.diagnosis.rule import Rule

RULE = Rule("ND601", "nonfinite-input", "nonfinite_input", "error",
            "The data already contains NaN or Inf.", __doc__)


def fix(role):
    """Write the fix for non-finite values in an input or target array."""
    array = "y" if role == "target" else "x"
    return (
        f"Drop or impute the samples whose {role} contains NaN or Inf before training "
        f"(for example `keep = np.isfinite({array}).reshape(len({array}), -1).all(axis=1)`) and fix "
        "the preprocessing step that produced them."
    )
