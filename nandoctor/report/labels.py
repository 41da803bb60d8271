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


def model_path(report):
    """Return the report's model path, relative to the working directory when it lies inside it."""
    return short_path(report.model["path"])


def data_path(report):
    """Return the data file's path like `model_path`, or "random inputs" when there was none."""
    return short_path(report.data["path"]) if report.data["path"] else "random inputs"


def short_path(path):
    """Return `path` relative to the working directory when it lies inside it."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # A path on another drive, on Windows.
        return path
    return path if relative.startswith("..") else relative
