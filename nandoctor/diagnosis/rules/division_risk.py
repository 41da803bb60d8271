"""A denominator or log argument comes close to zero on the data.

What it detects:
    RealDiv, Div, Reciprocal and Xdivy denominators whose smallest magnitude is
    below --min-denominator, and Log, Log1p or Rsqrt arguments whose smallest value
    is that close to their singular point, without reaching it.

Why it breaks training:
    A denominator of 1e-9 gives values of 1e9 today and Inf for the next sample that
    rounds to zero. Its gradient grows with the square of the value.

Example:
    keras.layers.Lambda(lambda x: 1.0 / (x - 0.5))  # inputs that come within 1e-9 of 0.5

Fix:
    Keep the denominator away from zero with an epsilon of the right sign, or use
    `tf.math.divide_no_nan` where 0 is the right result.

Known limits:
    Exact zeros are faults (ND201), not risks.
"""

from nandoctor.diagnosis.rule import Rule

RULE = Rule("ND211", "division-risk", "division_risk", "warning",
            "A denominator or log argument comes close to zero on the data.", __doc__)
