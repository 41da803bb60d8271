"""An Acos, Asin or Atanh argument comes close to the edge of its domain.

What it detects:
    Arguments of Acos, Asin and Atanh whose largest magnitude is so close to 1 that
    the derivative exceeds the square root of --max-derivative (100 by default; a
    float32 argument below 1 is at least 6e-8 away from it). At 1 the functions
    stop being defined and their derivatives become infinite.

Why it breaks training:
    Rounding can push such an argument past 1 (NaN), and before that the gradient
    explodes.

Example:
    keras.layers.Lambda(lambda c: keras.ops.arccos(c))  # cosine similarities up to 0.9999999

Fix:
    Clip the argument to `[-1 + 1e-4, 1 - 1e-4]`.

Known limits:
    Values computed as normalized dot products are the usual source; clip them where
    they are made.
"""

from nandoctor.diagnosis.rule import Rule

RULE = Rule("ND311", "domain-risk", "domain_risk", "warning",
            "An Acos, Asin or Atanh argument comes close to the edge of its domain.", __doc__)
