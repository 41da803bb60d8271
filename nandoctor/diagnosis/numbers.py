"""Numbers as the evidence sentences print them."""

import math


def format_number(value):
    """Format a measured value: 4 significant digits in [1e-3, 1e5), else 3 in scientific form.

    None prints as "n/a" and non-finite values as "nan", "inf" or "-inf".
    """
    if value is None:
        return "n/a"
    if not math.isfinite(value):
        if math.isnan(value):
            return "nan"
        return "inf" if value > 0 else "-inf"
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4g}"
    return f"{value:.3g}"
