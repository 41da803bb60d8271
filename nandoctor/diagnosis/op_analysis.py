"""Find the op that creates non-finite values inside a traced layer, and classify it.

Works on `OpRecord`s with numpy values: pure functions, no TensorFlow calls.
"""

from dataclasses import dataclass, field

import numpy as np

from nandoctor.diagnosis.numbers import format_number

# Ops whose second input (first for the unary ones) is a denominator.
DIVISION_OPS = {"RealDiv": 1, "Div": 1, "DivNoNan": 1, "FloorDiv": 1, "TruncateDiv": 1,
                "FloorMod": 1, "Mod": 1, "TruncateMod": 1, "Xdivy": 1,
                "Reciprocal": 0, "Inv": 0}
# Ops defined only for part of the real line, with the input index that matters.
DOMAIN_OPS = {"Log": 0, "Log1p": 0, "Sqrt": 0, "Rsqrt": 0, "Acos": 0, "Asin": 0,
              "Atanh": 0, "Acosh": 0, "Pow": 0, "Xlogy": 1, "Lgamma": 0, "Digamma": 0}
_DERIVATIVES = {
    "Sqrt": "1/(2*sqrt(x))", "Rsqrt": "-0.5*x**-1.5", "Log": "1/x", "Log1p": "1/(1+x)",
    "Pow": "a*x**(a-1)", "Reciprocal": "-1/x**2", "Inv": "-1/x**2", "RealDiv": "-x/d**2",
    "Div": "-x/d**2", "Acos": "-1/sqrt(1-x**2)", "Asin": "1/sqrt(1-x**2)", "Atanh": "1/(1-x**2)",
}


@dataclass
class OpFault:
    """The op where values first turn non-finite, and the numbers behind it."""

    kind: str
    op: str
    location: tuple | None
    sentence: str
    dtype: str | None = None
    shape: tuple | None = None
    nan: int = 0
    posinf: int = 0
    neginf: int = 0
    input_min: float | None = None
    input_max: float | None = None
    rows: list = field(default_factory=list)
    """Batch rows where the fault shows."""
    details: dict = field(default_factory=dict)
    hidden_forward_nan: bool = False


def first_forward_fault(records):
    """Return an `OpFault` for the first op with finite inputs and a non-finite output."""
    for record in records:
        inputs = [v for v in record.input_values if _is_float(v)]
        if not all(np.isfinite(v).all() for v in inputs):
            continue
        for output in record.output_values:
            if _is_float(output) and not np.isfinite(output).all():
                return _classify_forward(record, output)
    return None


def first_backward_fault(records):
    """Return an `OpFault` for the op whose backward pass creates non-finite gradients.

    Candidates are ops whose output gradients are finite (or absent) and whose
    input gradient is not. Ops whose derivative is infinite at the recorded
    inputs come first, then the latest op in forward order.
    """
    candidates = []
    for position, record in enumerate(records):
        arriving = [g for g in record.output_grads if g is not None]
        if not arriving or not all(np.isfinite(g).all() for g in arriving):
            continue
        leaving = [(k, g) for k, g in enumerate(record.input_grads) if g is not None and not np.isfinite(g).all()]
        if leaving:
            candidates.append((position, record, leaving[0][0]))
    if not candidates:
        return None
    singular = [c for c in candidates if _singular_rows(c[1], c[2]) is not None]
    _, record, index = (singular or candidates)[-1]
    return _classify_backward(record, index)


def _classify_forward(record, output):
    op = record.op_type
    nan = int(np.isnan(output).sum())
    posinf = int(np.isposinf(output).sum())
    neginf = int(np.isneginf(output).sum())
    rows = _rows(~np.isfinite(output))
    dtype = str(output.dtype)
    values = [v for v in record.input_values if _is_float(v)]
    low = min((float(v.min()) for v in values if v.size), default=None)
    high = max((float(v.max()) for v in values if v.size), default=None)
    fault = OpFault("overflow", op, record.location, "", dtype, tuple(output.shape), nan, posinf, neginf, low, high, rows)
    bad_text = _bad_text(nan, posinf, neginf)

    if op in DIVISION_OPS and len(record.input_values) > DIVISION_OPS[op] and _is_float(record.input_values[DIVISION_OPS[op]]):
        denominator = record.input_values[DIVISION_OPS[op]]
        zeros = denominator == 0
        if zeros.any():
            zero_rows = _rows(np.broadcast_to(zeros, output.shape) if zeros.shape != output.shape else zeros)
            fault.kind = "division_by_zero"
            fault.rows = zero_rows or rows
            fault.details = {"zero_denominators": int(zeros.sum())}
            fault.sentence = f"{op} denominator is exactly 0 in {int(zeros.sum())} element(s), giving {bad_text}"
            return fault

    if op in DOMAIN_OPS and len(record.input_values) > DOMAIN_OPS[op] and _is_float(record.input_values[DOMAIN_OPS[op]]):
        x = record.input_values[DOMAIN_OPS[op]]
        sentence = _domain_sentence(op, x, record.input_values)
        if sentence is not None:
            fault.kind, fault.sentence = sentence
            fault.input_min = float(np.min(x)) if x.size else None
            fault.input_max = float(np.max(x)) if x.size else None
            return fault

    limit = float(np.finfo(output.dtype).max)
    fault.details = {"dtype_max": limit}
    if op in ("Exp", "Expm1"):
        threshold = float(np.log(limit))
        fault.details["threshold"] = threshold
        fault.sentence = f"{op} input reaches {format_number(high)}; {dtype} overflows above {threshold:.2f}"
    elif op == "Cast":
        fault.sentence = f"Cast to {dtype}: |x| reaches {format_number(max(abs(low or 0), abs(high or 0)))}; the {dtype} max is {format_number(limit)}"
    else:
        biggest = max(abs(low or 0.0), abs(high or 0.0))
        fault.sentence = f"{op} inputs reach |x| = {format_number(biggest)} and its result passes the {dtype} max of {format_number(limit)}, giving {bad_text}"
    if nan and not (posinf or neginf) and op not in _ARITHMETIC:
        fault.kind = "invalid_domain"
        fault.sentence = f"{op} gives NaN for finite inputs in [{format_number(low)}, {format_number(high)}]"
    return fault


_ARITHMETIC = {"Exp", "Expm1", "Pow", "Square", "Mul", "MatMul", "BatchMatMulV2", "BatchMatMulV3",
               "AddV2", "Add", "Sub", "Sum", "Cast", "Conv2D", "Conv1D", "Conv3D", "BiasAdd",
               "Cosh", "Sinh", "Einsum", "Prod", "Cumsum", "Cumprod", "DepthwiseConv2dNative"}


def _domain_sentence(op, x, inputs):
    """Return (kind, sentence) when `x` leaves the domain of `op`, else None."""
    if op in ("Log", "Xlogy"):
        if (x < 0).any():
            return "invalid_domain", f"{op} input is negative in {int((x < 0).sum())} element(s) (min {format_number(float(x.min()))})"
        if (x == 0).any():
            return "division_by_zero", f"{op} input is exactly 0 in {int((x == 0).sum())} element(s), giving -Inf"
    elif op == "Log1p":
        if (x < -1).any():
            return "invalid_domain", f"Log1p input is below -1 in {int((x < -1).sum())} element(s) (min {format_number(float(x.min()))})"
        if (x == -1).any():
            return "division_by_zero", f"Log1p input is exactly -1 in {int((x == -1).sum())} element(s), giving -Inf"
    elif op == "Sqrt":
        if (x < 0).any():
            return "invalid_domain", f"Sqrt input is negative in {int((x < 0).sum())} element(s) (min {format_number(float(x.min()))})"
    elif op == "Rsqrt":
        if (x < 0).any():
            return "invalid_domain", f"Rsqrt input is negative in {int((x < 0).sum())} element(s) (min {format_number(float(x.min()))})"
        if (x == 0).any():
            return "division_by_zero", f"Rsqrt input is exactly 0 in {int((x == 0).sum())} element(s), giving +Inf"
    elif op in ("Acos", "Asin"):
        outside = np.abs(x) > 1
        if outside.any():
            return "invalid_domain", f"{op} input leaves [-1, 1] in {int(outside.sum())} element(s) (|x| up to {format_number(float(np.abs(x).max()))})"
    elif op == "Atanh":
        if (np.abs(x) > 1).any():
            return "invalid_domain", f"Atanh input leaves [-1, 1] in {int((np.abs(x) > 1).sum())} element(s)"
        if (np.abs(x) == 1).any():
            return "division_by_zero", f"Atanh input is exactly ±1 in {int((np.abs(x) == 1).sum())} element(s), giving ±Inf"
    elif op == "Acosh":
        if (x < 1).any():
            return "invalid_domain", f"Acosh input is below 1 in {int((x < 1).sum())} element(s)"
    elif op == "Pow" and len(inputs) > 1:
        exponent = np.broadcast_to(inputs[1], np.broadcast(x, inputs[1]).shape)
        base = np.broadcast_to(x, exponent.shape)
        fractional = (base < 0) & (exponent != np.round(exponent))
        if fractional.any():
            return "invalid_domain", f"Pow raises a negative base to a fractional exponent in {int(fractional.sum())} element(s)"
        if ((base == 0) & (exponent < 0)).any():
            return "division_by_zero", "Pow raises 0 to a negative exponent, giving +Inf"
    return None


def _singular_rows(record, index):
    """Return a mask of elements where the op's derivative is infinite, or None."""
    op = record.op_type
    values = record.input_values
    if not values or not all(_is_float(v) for v in values):
        return None
    if op in ("Sqrt", "Rsqrt", "Log", "Reciprocal", "Inv"):
        # Below 1/max of the dtype, 1/x already overflows, so the derivative is Inf there too.
        mask = values[0] <= 1.0 / np.finfo(values[0].dtype).max
    elif op == "Log1p":
        mask = values[0] <= -1
    elif op in ("Acos", "Asin", "Atanh"):
        mask = np.abs(values[0]) >= 1
    elif op == "Pow" and len(values) > 1 and index == 0:
        mask = (values[0] == 0) & (np.broadcast_to(values[1], np.broadcast(values[0], values[1]).shape) < 1)
    elif op in ("RealDiv", "Div") and len(values) > 1:
        mask = values[1] == 0
    else:
        return None
    return mask if mask.any() else None


def _classify_backward(record, index):
    op = record.op_type
    gradient = record.input_grads[index]
    nan = int(np.isnan(gradient).sum())
    posinf = int(np.isposinf(gradient).sum())
    neginf = int(np.isneginf(gradient).sum())
    hidden = any(_is_float(v) and not np.isfinite(v).all() for v in record.output_values)
    mask = _singular_rows(record, index)
    x = record.input_values[index] if index < len(record.input_values) else None
    fault = OpFault("infinite_gradient", op, record.location, "", str(gradient.dtype), tuple(gradient.shape),
                    nan, posinf, neginf, rows=_rows(~np.isfinite(gradient)), hidden_forward_nan=hidden)
    if x is not None and _is_float(x) and x.size:
        fault.input_min, fault.input_max = float(np.min(x)), float(np.max(x))
    bad_text = _bad_text(nan, posinf, neginf)
    derivative = _DERIVATIVES.get(op)
    if hidden:
        fault.sentence = (
            f"{op} makes NaN or Inf in the forward pass that a later op (such as tf.where) "
            f"discards, but the backward pass multiplies it in, giving {bad_text} in the gradient"
        )
    elif mask is not None and derivative:
        point = "at the edge of its domain" if op in ("Acos", "Asin", "Atanh", "Log1p") else "exactly 0"
        if op in ("Sqrt", "Rsqrt", "Log", "Reciprocal", "Inv") and (x[mask] != 0).any():
            point = f"at or below {1.0 / np.finfo(x.dtype).max:.3g} (where 1/x overflows)"
        fault.sentence = (
            f"{op} input is {point} in {int(mask.sum())} element(s), where its derivative "
            f"{derivative} is infinite; the gradient gets {bad_text}"
        )
        fault.rows = _rows(mask) or fault.rows
    else:
        fault.sentence = f"the gradient through {op} gets {bad_text} from a finite incoming gradient"
    return fault


def _rows(mask):
    mask = np.asarray(mask)
    if mask.ndim == 0:
        return [0] if bool(mask) else []
    flat = mask.reshape(mask.shape[0], -1).any(axis=1) if mask.ndim > 1 else mask
    return [int(r) for r in np.flatnonzero(flat)]


def _is_float(value):
    return isinstance(value, np.ndarray) and value.dtype.kind == "f"


def _bad_text(nan, posinf, neginf):
    parts = [f"{n} {label}" for n, label in ((nan, "NaN"), (posinf, "+Inf"), (neginf, "-Inf")) if n]
    return ", ".join(parts) or "no non-finite values"
