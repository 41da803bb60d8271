"""Explain a training replay: the chain that led to the break, and its likely cause.

Pure functions over `FitReplayResult` numbers; no TensorFlow calls.
"""

import math
from dataclasses import dataclass

from nandoctor.diagnosis.findings import Evidence, Finding
from nandoctor.diagnosis.numbers import format_number
from nandoctor.diagnosis.registry import rule_for_kind

EXPLODING_GROWTH = 1e3
"""Growth of the global gradient norm, first step to last, that counts as exploding."""
EXPLODING_NORM = 1e6
VANISHING_RATIO = 1e-10
"""A layer whose gradient norm stays below this fraction of the largest is vanishing."""
UNNORMALIZED_SCALE = 100.0
"""Largest |x| or |y| above which data counts as unnormalized."""
FAST_LOSS_GROWTH = 10.0
LARGE_UPDATE_RATIO = 0.5
"""An update larger than half the weight's norm in one step is a learning rate too high."""


@dataclass(frozen=True)
class Cause:
    """One likely cause of a divergence, with the numbers and a concrete fix."""

    name: str
    reason: str
    fix: str


def chain_sentence(result):
    """Describe in numbers how the loss, gradients and weights grew up to the break."""
    steps = result.steps
    if not steps:
        return "no step was replayed"
    last = len(steps) - 1
    parts = [f"loss {format_number(steps[0].loss)} at step 0 -> {format_number(steps[last].loss)} at step {last}"]
    parts.append(f"global gradient norm {format_number(steps[0].grad_norm)} -> {format_number(steps[last].grad_norm)}"
                 f"{_per_step(steps[0].grad_norm, steps[last].grad_norm, last)}")
    growth = _weight_growth(steps)
    if growth:
        path, first, final = growth
        parts.append(f"largest weight growth in '{path}': norm {format_number(first)} -> {format_number(final)}"
                     f"{_per_step(first, final, last)}")
    ratio, ratio_step, ratio_path = _largest_update(steps)
    if ratio is not None:
        parts.append(f"largest update/weight ratio {format_number(ratio)} in '{ratio_path}' at step {ratio_step}")
    return "; ".join(parts)


def likely_causes(result, origins, float16_model, loss_on_probabilities):
    """Return the causes the numbers point to, most specific first.

    Args:
        result: The `FitReplayResult`.
        origins: Findings of the op-level diagnosis at the breaking step.
        float16_model: Whether some layer computes in float16.
        loss_on_probabilities: Whether the loss is a crossentropy on
            probabilities (`from_logits=False` after a softmax or sigmoid).
    """
    causes = []
    rate = result.optimizer.get("learning_rate")
    clipped = any(result.optimizer.get(key) for key in ("clipnorm", "global_clipnorm", "clipvalue"))
    origin_dtypes = {o.evidence.dtype for o in origins}
    if float16_model and ("float16" in origin_dtypes or not origins):
        causes.append(Cause(
            "float16 range exceeded",
            "the model computes in float16, whose largest value is 65504",
            "keep the overflowing layer in float32 (dtype='float32') and train with "
            "keras.optimizers.LossScaleOptimizer, which the mixed_float16 policy expects"))
    for origin in origins:
        if origin.op in ("Exp", "Expm1", "RealDiv", "Div", "Reciprocal", "Log", "Pow", "Sqrt", "Rsqrt"):
            where = f"layer '{origin.layer}'" if origin.layer else "the loss"
            causes.append(Cause(
                "unbounded op", f"{origin.op} in {where} has no bound on its input, which grew with the weights",
                origin.fix))
            break
    if loss_on_probabilities and any(o.layer is None and o.op in ("Log", "Xlogy") for o in origins):
        causes.append(Cause(
            "loss computed on probabilities",
            "the crossentropy takes the log of probabilities that reached 0",
            "remove the final softmax or sigmoid and compile the loss with from_logits=True"))
    data_scale = max(result.input_absmax + result.target_absmax, default=0.0)
    if data_scale > UNNORMALIZED_SCALE:
        which = "targets" if max(result.target_absmax, default=0.0) >= max(result.input_absmax, default=0.0) else "inputs"
        causes.append(Cause(
            "unnormalized data", f"the {which} reach |value| = {format_number(data_scale)}",
            "normalize the inputs with a keras.layers.Normalization layer adapted on them "
            "(norm.adapt(x)) and scale the targets to unit variance (y / y.std())"))
    ratio, _, _ = _largest_update(result.steps)
    losses = [s.loss for s in result.steps if math.isfinite(s.loss)]
    fast_loss = len(losses) >= 2 and losses[-1] > FAST_LOSS_GROWTH * max(losses[0], 1e-12)
    if rate is not None and ((ratio is not None and ratio > LARGE_UPDATE_RATIO) or fast_loss):
        causes.append(Cause(
            "learning rate too high",
            f"updates reach {format_number(ratio)} times the weight's norm in one step" if ratio else "the loss grows step after step",
            f"lower the learning rate to {rate / 10:g} (ten times lower than {rate:g})"))
    growth = _grad_growth(result.steps)
    if not clipped and growth > 100:
        causes.append(Cause(
            "missing gradient clipping", f"the gradient norm grows {format_number(growth)} times",
            "clip gradients: pass clipnorm=1.0 to the optimizer"))
    return causes


def divergence_finding(result, causes):
    """Return the ND501 finding for a break that no single op explains."""
    rule = rule_for_kind("divergence")
    step = result.break_step
    reason = {"loss": "the loss", "gradients": "the gradients", "weights": "the updated weights"}[result.break_reason]
    cause_text = "; ".join(f"{c.name}: {c.reason}" for c in causes) or "no single cause stands out"
    fix = " ".join(f"{c.fix[0].upper()}{c.fix[1:]}." for c in causes[:3]) or (
        "Lower the learning rate ten times and clip gradients with clipnorm=1.0.")
    sentence = f"at step {step}, {reason} became non-finite; {chain_sentence(result)}"
    indices = tuple(int(i) for i in result.steps[step].sample_indices[:5])
    return Finding(
        code=rule.code, rule=rule.name, kind=rule.kind, severity=rule.severity, phase="training",
        layer=None, layer_class=None, op=None, location=None,
        evidence=Evidence(sentence, samples_affected=len(result.steps[step].sample_indices),
                          first_sample_indices=indices, batch=step,
                          details={"causes": [c.name for c in causes], "cause_text": cause_text,
                                   "break_reason": result.break_reason}),
        message=f"Training diverged at step {step}: {cause_text}.",
        fix=fix, step=step,
    )


def gradient_warnings(result):
    """Return ND502 and ND503 warnings for a replay that stayed finite."""
    findings = []
    steps = [s for s in result.steps if s.finite_gradients and math.isfinite(s.grad_norm)]
    if len(steps) >= 2:
        growth = _grad_growth(steps)
        peak = max(steps, key=lambda s: s.grad_norm)
        if growth > EXPLODING_GROWTH or peak.grad_norm > EXPLODING_NORM:
            rule = rule_for_kind("exploding_gradient")
            findings.append(Finding(
                code=rule.code, rule=rule.name, kind=rule.kind, severity=rule.severity, phase="training",
                layer=None, layer_class=None, op=None, location=None,
                evidence=Evidence(f"global gradient norm {format_number(steps[0].grad_norm)} at step {steps[0].step} "
                                  f"rises to {format_number(peak.grad_norm)} at step {peak.step} "
                                  f"({format_number(peak.grad_norm / steps[0].grad_norm)} times)" if steps[0].grad_norm > 0 else
                                  f"global gradient norm peaks at {format_number(peak.grad_norm)} at step {peak.step}",
                                  batch=peak.step, details={"growth": growth}),
                message=f"The gradient norm grew {format_number(growth)} times over {len(steps)} steps.",
                fix="Clip gradients with clipnorm=1.0 on the optimizer and lower the learning rate.",
                step=peak.step))
    if steps:
        for path in steps[0].layer_grad_norms:
            largest = [max(s.layer_grad_norms.values()) for s in steps]
            if all(s.layer_grad_norms[path] <= VANISHING_RATIO * top for s, top in zip(steps, largest)) and max(largest) > 0:
                rule = rule_for_kind("vanishing_gradient")
                findings.append(Finding(
                    code=rule.code, rule=rule.name, kind=rule.kind, severity=rule.severity, phase="training",
                    layer=path.rsplit("/", 1)[0], layer_class=None, op=None, location=None,
                    evidence=Evidence(f"gradient norm of '{path}' stays below {VANISHING_RATIO:g} times the "
                                      f"largest layer's over {len(steps)} steps",
                                      details={"weight": path}),
                    message=f"Weight '{path}' receives almost no gradient.",
                    fix="Normalize this layer's inputs or replace a saturating activation (sigmoid, tanh, exp) "
                        "before it with relu or gelu.",
                    step=steps[-1].step))
    return findings


def _weight_growth(steps):
    best = None
    for path, first in steps[0].weight_norms.items():
        final = steps[-1].weight_norms.get(path)
        if not (math.isfinite(first) and final is not None and math.isfinite(final)) or first <= 0:
            continue
        growth = final / first
        if best is None or growth > best[0]:
            best = (growth, path, first, final)
    return best[1:] if best else None


def _largest_update(steps):
    best = (None, None, None)
    for step in steps:
        for path, ratio in step.update_ratios.items():
            if math.isfinite(ratio) and (best[0] is None or ratio > best[0]):
                best = (ratio, step.step, path)
    return best


def _grad_growth(steps):
    finite = [s.grad_norm for s in steps if math.isfinite(s.grad_norm)]
    if len(finite) < 2 or finite[0] <= 0:
        return 0.0
    return max(finite) / finite[0]


def _per_step(first, final, count):
    if count < 1 or not (math.isfinite(first) and math.isfinite(final)) or first <= 0 or final <= 0:
        return ""
    return f" (x{(final / first) ** (1 / count):.3g} per step)"
