"""In-graph summaries of tensors: non-finite counts, finite range, bad samples.

Each summary is a handful of scalars plus one boolean per sample, computed
inside the compiled pass, so activations never leave the device.
"""

import numpy as np
import tensorflow as tf


def summarize(tensor, detailed=True):
    """Summarize a floating-point tensor inside a compiled function.

    Args:
        tensor: A float tensor. When its first dimension is the (unknown at
            trace time) batch dimension, detailed summaries flag each sample.
        detailed: When False, only three reductions run: the sum, which is
            finite only if every element is (or, rarely, when the sum itself
            overflows), the min and the max. `nan` is then 1 when the sum is not
            finite and 0 otherwise, so the caller knows to ask for details.

    Returns:
        A dict of tensors: `nan`, `posinf`, `neginf` (int64 counts), `min`,
        `max` (float64, over finite values, or +inf/-inf when none is finite),
        `size` (int64) and, for detailed batch tensors, `bad_samples` (bool per sample).
    """
    tensor = tf.convert_to_tensor(tensor)
    size = tf.size(tensor, out_type=tf.int64)
    if not detailed:
        total = tf.reduce_sum(tf.cast(tensor, tf.float32) if tensor.dtype.size < 4 else tensor)
        zero = tf.constant(0, tf.int64)
        return {"nan": tf.cast(tf.logical_not(tf.math.is_finite(total)), tf.int64), "posinf": zero,
                "neginf": zero, "min": tf.cast(tf.reduce_min(tensor), tf.float64),
                "max": tf.cast(tf.reduce_max(tensor), tf.float64), "size": size}

    finite = tf.math.is_finite(tensor)
    nan = tf.reduce_sum(tf.cast(tf.math.is_nan(tensor), tf.int64))
    posinf = tf.reduce_sum(tf.cast(tf.equal(tensor, tf.constant(np.inf, tensor.dtype)), tf.int64))
    bad = tf.reduce_sum(tf.cast(tf.logical_not(finite), tf.int64))
    summary = {
        "nan": nan,
        "posinf": posinf,
        "neginf": bad - nan - posinf,
        "min": tf.cast(tf.reduce_min(tf.where(finite, tensor, tf.constant(np.inf, tensor.dtype))), tf.float64),
        "max": tf.cast(tf.reduce_max(tf.where(finite, tensor, tf.constant(-np.inf, tensor.dtype))), tf.float64),
        "size": size,
    }
    if tensor.shape.rank and tensor.shape[0] is None:
        axes = list(range(1, tensor.shape.rank))
        nonfinite = tf.logical_not(finite)
        summary["bad_samples"] = tf.reduce_any(nonfinite, axis=axes) if axes else nonfinite
    return summary


def is_float(tensor):
    dtype = getattr(tensor, "dtype", None)
    try:
        return tf.as_dtype(dtype).is_floating
    except TypeError:
        return False


class TensorStats:
    """Running statistics of one tensor over all batches, on the host."""

    MAX_INDICES = 5
    """Number of affected sample indices kept per tensor."""

    def __init__(self):
        self.nan = 0
        self.posinf = 0
        self.neginf = 0
        self.size = 0
        self.min = np.inf
        self.max = -np.inf
        self.bad_samples = 0
        self.first_indices = []
        self.first_batch = None

    @property
    def nonfinite(self):
        return self.nan + self.posinf + self.neginf

    @property
    def absmax(self):
        if self.min > self.max:
            return None
        return float(max(abs(self.min), abs(self.max)))

    def add(self, summary, batch_start, batch_index):
        """Fold one batch's summary (numpy values) into the totals."""
        self.nan += int(summary["nan"])
        self.posinf += int(summary["posinf"])
        self.neginf += int(summary["neginf"])
        self.size += int(summary["size"])
        self.min = min(self.min, float(summary["min"]))
        self.max = max(self.max, float(summary["max"]))
        bad = summary.get("bad_samples")
        batch_bad = int(summary["nan"]) + int(summary["posinf"]) + int(summary["neginf"])
        if batch_bad and self.first_batch is None:
            self.first_batch = batch_index
        if bad is not None:
            rows = np.flatnonzero(bad)
            self.bad_samples += len(rows)
            room = self.MAX_INDICES - len(self.first_indices)
            if room > 0:
                self.first_indices.extend(int(batch_start + r) for r in rows[:room])

    def as_dict(self):
        return {
            "nan": self.nan,
            "posinf": self.posinf,
            "neginf": self.neginf,
            "min": None if self.min > self.max else self.min,
            "max": None if self.min > self.max else self.max,
            "absmax": self.absmax,
            "samples_affected": self.bad_samples,
            "first_sample_indices": list(self.first_indices),
        }


_SCALARS = ("nan", "posinf", "neginf", "min", "max", "size")


def pack(structure, batch_size):
    """Pack every summary in a nested structure into two tensors, inside a compiled function.

    Returning two tensors instead of hundreds of small ones keeps the
    device-to-host traffic per batch at two copies.

    Args:
        structure: Nested dicts and lists whose leaves are `summarize` dicts or None.
        batch_size: Scalar tensor, the number of samples in the batch.

    Returns:
        (template, scalars, masks). `template` mirrors `structure` with each
        summary replaced by ("slot", row, mask_row or None); `scalars` is a
        float64 tensor [summaries, 6]; `masks` is a bool tensor [masks, batch].
    """
    rows = []
    masks = []

    def visit(node):
        if node is None:
            return None
        if isinstance(node, dict) and "nan" in node:
            rows.append(tf.stack([tf.cast(node[key], tf.float64) for key in _SCALARS]))
            mask_row = None
            if "bad_samples" in node:
                mask = node["bad_samples"]
                fits = tf.equal(tf.shape(mask, out_type=batch_size.dtype)[0], batch_size)
                # A tensor whose first dimension is not the batch marks every sample.
                masks.append(tf.cond(fits, lambda: mask, lambda: tf.fill([batch_size], tf.reduce_any(mask))))
                mask_row = len(masks) - 1
            return ("slot", len(rows) - 1, mask_row)
        if isinstance(node, dict):
            return {key: visit(value) for key, value in node.items()}
        return [visit(value) for value in node]

    template = visit(structure)
    scalars = tf.stack(rows) if rows else tf.zeros([0, len(_SCALARS)], tf.float64)
    stacked = tf.stack(masks) if masks else tf.zeros([0, batch_size], tf.bool)
    return template, scalars, stacked


def unpack(template, scalars, masks):
    """Rebuild the nested structure of summaries (numpy values) from `pack`'s output."""
    if template is None:
        return None
    if isinstance(template, tuple) and template and template[0] == "slot":
        _, row, mask_row = template
        summary = {key: scalars[row, k] for k, key in enumerate(_SCALARS)}
        if mask_row is not None:
            summary["bad_samples"] = masks[mask_row]
        return summary
    if isinstance(template, dict):
        return {key: unpack(value, scalars, masks) for key, value in template.items()}
    return [unpack(value, scalars, masks) for value in template]
