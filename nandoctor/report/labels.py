"""Names that every report format shows the same way."""

import os

KIND_LABELS = {
    "nonfinite_input": "non-finite input data",
    "nonfinite_weights": "non-finite saved weights",
    "overflow": "overflow",
    "overflow_risk": "overflow risk",
    "division_by_zero": "division by zero",
    "division_risk": "division risk",
    "invalid_domain": "invalid domain",
    "domain_risk": "domain risk",
    "infinite_gradient": "infinite gradient",
    "gradient_risk": "gradient risk",
    "divergence": "divergence in training",
    "exploding_gradient": "exploding gradient",
    "vanishing_gradient": "vanishing gradient",
}


def short_path(path):
    """Return `path` relative to the working directory when it lies inside it."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # A path on another drive, on Windows.
        return path
    return path if relative.startswith("..") else relative
