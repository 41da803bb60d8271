"""Measure how close each risky op is to failing, from op records of clean batches.

Pure functions over numpy values: no TensorFlow calls. An op's risk is kept
per (target, position in the layer, op type) with its worst value over all
traced batches.
"""

import math
from dataclasses import dataclass, field

import numpy as np

from nandoctor.diagnosis.findings import Evidence, Finding, Location
from nandoctor.diagnosis.numbers import format_number
from nandoctor.diagnosis.registry import rule_for_kind
from nandoctor.diagnosis.rules import division_by_zero, overflow

DEFAULT_HEADROOM_FACTOR = 2.0
"""Warn when the input scale may grow by less than this factor before an overflow."""
DEFAULT_MIN_DENOMINATOR = 1e-6
"""Warn when a denominator's smallest magnitude is below this (and not 0)."""
DEFAULT_MAX_DERIVATIVE = 1e4
"""Warn when the derivative of Sqrt, Log, Acos and the like at the data exceeds this."""

_DIVISIONS = {"RealDiv": 1, "Div": 1, "Xdivy": 1, "Reciprocal": 0, "Inv": 0}


@dataclass(frozen=True)
class Thresholds:
    """Limits below which a measured margin becomes a warning."""

    headroom_factor: float = DEFAULT_HEADROOM_FACTOR
    min_denominator: float = DEFAULT_MIN_DENOMINATOR
    max_derivative: float = DEFAULT_MAX_DERIVATIVE


@dataclass
class Risk:
    """The worst margin seen for one op, and the numbers behind it."""

    kind: str
    op: str
    target: object
    """The layer call index, or "loss"."""
    location: tuple | None
    value: float
    """The measured quantity (largest argument, smallest denominator, ...)."""
    worse_is_larger: bool
    sentence: str = ""
    details: dict = field(default_factory=dict)


def measure(records, target, thresholds):
    """Return the risks of one traced layer (or the loss) on one batch, keyed by op position."""
    risks = {}
    for position, record in enumerate(records):
        if _guarded(record, records[:position]):
            continue
        risk = _op_risk(record, target, thresholds)
        if risk is not None:
            risks[(target, position, record.op_type)] = risk
    return risks


def merge(total, risks):
    """Fold one batch's risks into `total`, keeping the worst value per op."""
    for key, risk in risks.items():
        kept = total.get(key)
        if kept is None or (risk.value > kept.value if risk.worse_is_larger else risk.value < kept.value):
            total[key] = risk
    return total


def activation_risks(calls, layers, thresholds):
    """Return risks for layer outputs and gradients whose largest |value| is near their dtype's maximum.

    The margin asked for is `headroom_factor ** 4` (16 by default), because
    squares and products in the next layers reach the limit before the value does.
    """
    risks = {}
    for call, record in zip(calls, layers):
        dtype = getattr(call.layer, "compute_dtype", None)
        try:
            limit = float(np.finfo(np.dtype(dtype)).max)
        except TypeError:
            continue
        for what, group in (("outputs", record.outputs), ("gradients", [s for s in record.grad_outputs if s])):
            values = [s.absmax for s in group if s.absmax]
            if not values:
                continue
            largest = max(values)
            factor = limit / largest
            if factor < thresholds.headroom_factor ** 4:
                risks[(call.index, -1, what)] = Risk(
                    "overflow_risk", None, call.index, None, largest, True,
                    f"{what} reach |x| = {format_number(largest)}, only {format_number(factor)} times below the {dtype} max "
                    f"of {format_number(limit)}", {"dtype_max": limit, "scale_headroom": factor, "tensor": what})
    return risks


def findings(risks, calls, loss_label):
    """Turn merged risks into warning findings."""
    result = []
    for (target, position, _), risk in sorted(risks.items(), key=lambda item: (str(item[0][0]), item[0][1])):
        rule = rule_for_kind(risk.kind)
        call = calls[target] if isinstance(target, int) else None
        place = f"layer '{call.name}'" if call else f"the {loss_label}"
        result.append(Finding(
            code=rule.code, rule=rule.name, kind=rule.kind, severity=rule.severity, phase="forward",
            layer=call.name if call else None, layer_class=type(call.layer).__name__ if call else None,
            op=risk.op, location=Location(*risk.location) if risk.location else None,
            evidence=Evidence(risk.sentence, details=dict(risk.details, measured=risk.value)),
            message=f"{rule.summary.rstrip('.')}: {place}" + (f", op {risk.op}." if risk.op else "."),
            fix=_fix(risk), layer_index=call.index if call else len(calls),
        ))
    return result


# Ops that bound a value on purpose: an epsilon added, a floor, a clip or a tf.where.
_GUARDS = ("Maximum", "AddV2", "Add", "ClipByValue", "SelectV2", "Select")
_GUARDED_INPUT = {"Log": 0, "Log1p": 0, "Sqrt": 0, "Rsqrt": 0, "Pow": 0, "RealDiv": 1, "Div": 1,
                  "Reciprocal": 0, "Acos": 0, "Asin": 0}


def _guarded(record, earlier):
    """Return whether the op's risky input comes straight from a guard such as `tf.maximum(x, eps)`.

    Such a value sits at its bound by design, as the suggested fixes leave it,
    so warning about it again would contradict the fix. The match is by value:
    the input equals the output of the latest guard op before it.
    """
    index = _GUARDED_INPUT.get(record.op_type)
    if index is None or index >= len(record.input_values):
        return False
    value = record.input_values[index]
    for previous in reversed(earlier[-3:]):
        if previous.op_type in _GUARDS and previous.output_values:
            output = previous.output_values[0]
            if isinstance(output, np.ndarray) and output.shape == np.shape(value) and np.array_equal(output, value):
                return True
    return False


def _op_risk(record, target, thresholds):
    op = record.op_type
    values = record.input_values
    if not values or not all(isinstance(v, np.ndarray) for v in values[:1]):
        return None
    x = values[0]
    if x.dtype.kind != "f" or not x.size or not np.isfinite(x).all():
        return None
    limit = float(np.finfo(x.dtype).max)

    if op in ("Exp", "Expm1"):
        threshold = math.log(limit)
        largest = float(x.max())
        if largest <= 0:
            return None
        factor = threshold / largest
        if factor < thresholds.headroom_factor:
            return Risk("overflow_risk", op, target, record.location, largest, True,
                        f"{op} argument reaches {format_number(largest)}; {x.dtype} overflows above {threshold:.2f}, "
                        f"so the argument may grow only {factor:.3g} times",
                        {"threshold": threshold, "scale_headroom": factor})
    elif op in ("Square", "Pow") and len(values) >= 1:
        exponent = None
        if op == "Square":
            exponent = 2.0
        elif len(values) > 1:
            exponent = _scalar(values[1])
        largest = float(np.abs(x).max())
        if exponent is not None and exponent > 1 and largest > 0:
            factor = (limit ** (1.0 / exponent)) / largest
            if factor < thresholds.headroom_factor:
                return Risk("overflow_risk", op, target, record.location, largest, True,
                            f"{op} base reaches |x| = {format_number(largest)}; its result overflows {x.dtype} once the "
                            f"base grows {factor:.3g} times", {"scale_headroom": factor})
        if op == "Pow" and exponent is not None and 0 < exponent < 1:
            return _small_argument(record, target, x, thresholds, exponent)
    elif op in _DIVISIONS and len(values) > _DIVISIONS[op]:
        denominator = values[_DIVISIONS[op]]
        if not isinstance(denominator, np.ndarray) or denominator.dtype.kind != "f" or not denominator.size:
            return None
        smallest = float(np.abs(denominator).min())
        if 0 < smallest < thresholds.min_denominator:
            return Risk("division_risk", op, target, record.location, smallest, False,
                        f"{op} denominator comes within {format_number(smallest)} of 0 (threshold "
                        f"{thresholds.min_denominator:g}); the quotient reaches {format_number(1.0 / smallest)} per unit numerator",
                        {"min_abs_denominator": smallest})
    elif op in ("Log", "Rsqrt", "Log1p"):
        edge = -1.0 if op == "Log1p" else 0.0
        distance = float((x - edge).min())
        if 0 < distance and 1.0 / distance > thresholds.max_derivative:
            return Risk("division_risk", op, target, record.location, distance, False,
                        f"{op} argument comes within {format_number(distance)} of {edge:g}, where its derivative "
                        f"1/x reaches {format_number(1.0 / distance)}", {"min_distance": distance})
    elif op == "Sqrt":
        return _small_argument(record, target, x, thresholds, 0.5)
    elif op in ("Acos", "Asin", "Atanh"):
        gap = float(1.0 - np.abs(x).max())
        if gap > 0:
            derivative = 1.0 / gap if op == "Atanh" else 1.0 / math.sqrt(gap * (2.0 - gap))
            # The square root of the threshold: a float32 argument below 1 is at
            # least 6e-8 away, where the derivative of Acos is only about 2900.
            if derivative > math.sqrt(thresholds.max_derivative):
                return Risk("domain_risk", op, target, record.location, gap, False,
                            f"{op} argument comes within {format_number(gap)} of ±1, where the derivative reaches "
                            f"{format_number(derivative)}", {"distance_to_edge": gap, "derivative": derivative})
    return None


def _small_argument(record, target, x, thresholds, exponent):
    """Risk of Sqrt or Pow(x, a<1) near 0, where the derivative a*x**(a-1) blows up."""
    positive = x[x > 0]
    if not positive.size or (x < 0).any():
        return None
    smallest = float(positive.min())
    derivative = exponent * smallest ** (exponent - 1.0)
    if derivative > thresholds.max_derivative:
        return Risk("gradient_risk", record.op_type, target, record.location, smallest, False,
                    f"{record.op_type} argument comes down to {format_number(smallest)}, where its derivative reaches "
                    f"{format_number(derivative)} (threshold {thresholds.max_derivative:g})",
                    {"min_argument": smallest, "derivative": derivative})
    return None


def _fix(risk):
    if risk.kind == "overflow_risk":
        return overflow.fix(risk.op or "", risk.details.get("dtype_max", 3.4028234663852886e38))
    if risk.kind == "division_risk":
        return division_by_zero.fix(risk.op)
    if risk.kind == "domain_risk":
        return "Clip the argument into the open domain: `tf.clip_by_value(x, -1.0 + 1e-4, 1.0 - 1e-4)`."
    return "Add an epsilon inside the root, `tf.sqrt(x + 1e-8)`, so its derivative stays bounded."


def _scalar(value):
    value = np.asarray(value)
    return float(value.reshape(-1)[0]) if value.size and np.all(value == value.reshape(-1)[0]) else None
