"""The one table from code to rule. Codes are never renumbered or reused.

Blocks of a hundred per family: ND1xx overflow, ND2xx division by zero,
ND3xx invalid domain, ND4xx infinite gradient, ND5xx divergence in training,
ND6xx bad input data, ND7xx bad saved state.
"""

from nandoctor.diagnosis.rules import (
    divergence,
    division_by_zero,
    division_risk,
    domain_risk,
    exploding_gradient,
    gradient_risk,
    infinite_gradient,
    invalid_domain,
    nonfinite_input,
    nonfinite_weights,
    overflow,
    overflow_risk,
    vanishing_gradient,
)

RULES = {
    module.RULE.code: module.RULE
    for module in (overflow, overflow_risk, division_by_zero, division_risk, invalid_domain, domain_risk,
                   infinite_gradient, gradient_risk, divergence, exploding_gradient, vanishing_gradient,
                   nonfinite_input, nonfinite_weights)
}
BY_KIND = {rule.kind: rule for rule in RULES.values()}


def rule_for_kind(kind):
    """Return the `Rule` of a finding kind."""
    return BY_KIND[kind]
