"""Look for inputs, beyond the data at hand, that make the model's risky ops fail.

Two bounded searches, both on the in-memory model:

- Probes: for every model input, samples at the per-feature minimum and
  maximum of the data, at the mean plus and minus 3 and 10 standard
  deviations, and all zeros.
- A gradient-guided search per risky op (Exp, divisions, Log, Sqrt, Rsqrt,
  Pow, Acos, Asin) in Lambda layers and custom layers: starting from the
  sample where the op is closest to failing, signed gradient steps push the
  op's risk measure (the Exp argument, 1/|denominator|, the closeness of a
  Log or Sqrt argument to 0) towards failure inside a box around the data:
  each feature within its data range widened by that range on both sides.
"""

from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf
from tensorflow.python.framework import op_callbacks  # NOTE: private TF module, present in TF 2.16-2.21.

from nandoctor.replay.graph import copy_float_inputs
from nandoctor.replay.ops import _Recorder

SEARCH_STEPS = 30
"""Signed gradient steps per risky op."""
MAX_SEARCHED_OPS = 8
STD_MULTIPLES = (3.0, 10.0)
_SEARCHED = {"Exp": 0, "Expm1": 0, "RealDiv": 1, "Div": 1, "Reciprocal": 0, "Log": 0, "Sqrt": 0,
             "Rsqrt": 0, "Pow": 0, "Acos": 0, "Asin": 0}


@dataclass
class StressInputs:
    """Inputs found by the probes and the search, with how each row was found."""

    inputs: list
    """One array per model input; row r is one stress sample."""
    origins: list
    """A sentence per row: which probe or search produced it."""
    budget: str
    """The search budget, for the report."""
    searched_ops: list = field(default_factory=list)


def find_stress_inputs(graph, source, input_specs, batch_size, custom_calls):
    """Build probe samples and run the gradient search; return a `StressInputs`."""
    arrays = _data_sample(source, input_specs, batch_size)
    low = [a.min(axis=0) for a in arrays]
    high = [a.max(axis=0) for a in arrays]
    rows = []
    origins = []

    for label, make in _probes(arrays):
        rows.append(make)
        origins.append(f"probe {label}")

    ops = _risky_ops(graph, arrays, custom_calls)[:MAX_SEARCHED_OPS]
    for target, position, op_type in ops:
        found = _search(graph, arrays, low, high, target, position, op_type)
        if found is not None:
            start, sample = found
            rows.append(sample)
            origins.append(f"gradient search on {op_type} in layer '{graph.calls[target].name}' "
                           f"from sample {start}, {SEARCH_STEPS} steps")

    inputs = [np.stack([row[k] for row in rows]).astype(spec.dtype) for k, spec in enumerate(input_specs)]
    budget = (f"{len(origins) - len(ops) if ops else len(origins)} probes per input and a gradient search of "
              f"{SEARCH_STEPS} steps for each of {len(ops)} risky op(s), within each feature's data range "
              "widened by that range on both sides")
    return StressInputs(inputs, origins, budget, [f"{op} in {graph.calls[t].name}" for t, _, op in ops])


def _data_sample(source, input_specs, batch_size, max_rows=1024):
    """Return up to `max_rows` samples of each float input, as float64 arrays."""
    parts = None
    count = 0
    for batch in source.batches(batch_size, input_specs):
        if parts is None:
            parts = [[] for _ in batch.inputs]
        for k, array in enumerate(batch.inputs):
            parts[k].append(np.asarray(array, np.float64))
        count += len(batch.inputs[0])
        if count >= max_rows:
            break
    return [np.concatenate(p)[:max_rows] for p in parts]


def _probes(arrays):
    """Yield (label, row) pairs; a row has one sample per model input."""
    mean = [a.mean(axis=0) for a in arrays]
    std = [a.std(axis=0) for a in arrays]
    yield "at the per-feature minimum", [a.min(axis=0) for a in arrays]
    yield "at the per-feature maximum", [a.max(axis=0) for a in arrays]
    for k in STD_MULTIPLES:
        yield f"at the mean + {k:g} standard deviations", [m + k * s for m, s in zip(mean, std)]
        yield f"at the mean - {k:g} standard deviations", [m - k * s for m, s in zip(mean, std)]
    yield "of all zeros", [np.zeros_like(m) for m in mean]


def _risky_ops(graph, arrays, custom_calls):
    """Return (call index, position, op type) for the searchable ops in custom layers."""
    if not custom_calls:
        return []
    recorder = _Recorder()
    _run(graph, [tf.constant(a[:64], tf.as_dtype(_dtype(graph, k))) for k, a in enumerate(arrays)], recorder,
         custom_calls)
    found = []
    for target, records in sorted(recorder.ops.items()):
        for position, record in enumerate(records):
            if record.op_type in _SEARCHED:
                found.append((target, position, record.op_type))
    return found


def _search(graph, arrays, low, high, target, position, op_type):
    """Push one op towards failure with signed gradient steps; return (start sample, row) or None."""
    width = [np.maximum(h - l, 1e-3) for l, h in zip(low, high)]
    box_low = [l - w for l, w in zip(low, width)]
    box_high = [h + w for h, w in zip(high, width)]
    dtypes = [tf.as_dtype(_dtype(graph, k)) for k in range(len(arrays))]

    scores = _measure(graph, [tf.constant(a, d) for a, d in zip(arrays, dtypes)], target, position, op_type)[0]
    if scores is None:
        return None
    start = int(np.argmax(scores))
    current = [a[start:start + 1].copy() for a in arrays]
    step = 2.0 / SEARCH_STEPS
    for _ in range(SEARCH_STEPS):
        tensors = [tf.constant(c, d) for c, d in zip(current, dtypes)]
        scores, gradients, failed = _measure(graph, tensors, target, position, op_type, gradients=True)
        if failed:
            break
        if gradients is None:
            return None
        current = [np.clip(c + step * w * np.sign(g), lo, hi)
                   for c, g, w, lo, hi in zip(current, gradients, width, box_low, box_high)]
    return start, [c[0] for c in current]


def _measure(graph, tensors, target, position, op_type, gradients=False):
    """Return (per-sample risk, input gradients, whether the op already fails)."""
    recorder = _Recorder()
    with tf.GradientTape() as tape:
        for tensor in tensors:
            if tensor.dtype.is_floating:
                tape.watch(tensor)
        _run(graph, tensors, recorder, {target})
        records = recorder.ops.get(target, [])
        if position >= len(records) or records[position].op_type != op_type:
            return None, None, False
        record = records[position]
        value = tf.cast(record.inputs[_SEARCHED[op_type]], tf.float32)
        axes = list(range(1, value.shape.rank)) if value.shape.rank and value.shape.rank > 1 else None
        if op_type in ("Exp", "Expm1"):
            risk = tf.reduce_max(value, axis=axes) if axes else value
        elif op_type in ("RealDiv", "Div", "Reciprocal"):
            magnitude = tf.abs(value)
            risk = -(tf.reduce_min(magnitude, axis=axes) if axes else magnitude)
        elif op_type in ("Acos", "Asin"):
            magnitude = tf.abs(value)
            risk = tf.reduce_max(magnitude, axis=axes) if axes else magnitude
        else:
            risk = -(tf.reduce_min(value, axis=axes) if axes else value)
        total = tf.reduce_sum(risk)
    output = record.outputs[0]
    failed = bool(output.dtype.is_floating and not np.isfinite(output.numpy()).all())
    grads = None
    if gradients:
        grads = [None if g is None else g.numpy() for g in tape.gradient(total, tensors)]
        if any(g is None for g in grads):
            grads = None
    return np.atleast_1d(risk.numpy()), grads, failed


def _run(graph, tensors, recorder, targets):
    def hook(call, args, kwargs):
        args, kwargs, _ = copy_float_inputs(args, kwargs)
        if call.index not in targets:
            return call.layer(*args, **kwargs)
        recorder.target = call.index
        try:
            return call.layer(*args, **kwargs)
        finally:
            recorder.target = None

    op_callbacks.add_op_callback(recorder)
    try:
        return graph.run(tensors, hook)
    finally:
        op_callbacks.remove_op_callback(recorder)


def _dtype(graph, index):
    inputs = graph.input_tensors()
    return inputs[index].dtype
