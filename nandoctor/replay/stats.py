"""In-graph summaries of tensors: non-finite counts, finite range, bad samples.

Each summary is a handful of scalars plus one boolean per sample, computed
inside the compiled pass, so activations never leave the device.
"""

import numpy as np
import tensorflow as tf


def summarize(tensor):
    """Summarize a floating-point tensor inside a compiled function.

    Args:
        tensor: A float tensor. When its first dimension is the (unknown at
            trace time) batch dimension, per-sample flags are computed too.

    Returns:
        A dict of tensors: `nan`, `posinf`, `neginf` (int64 counts), `min`,
        `max` (float64, over finite values, or +inf/-inf when none is finite),
        `size` (int64) and `bad_samples` (bool per sample) or no such key.
    """
    tensor = tf.convert_to_tensor(tensor)
    finite = tf.math.is_finite(tensor)
    nonfinite = tf.logical_not(finite)
    nan = tf.reduce_sum(tf.cast(tf.math.is_nan(tensor), tf.int64))
    posinf = tf.reduce_sum(tf.cast(tf.equal(tensor, tf.constant(np.inf, tensor.dtype)), tf.int64))
    bad = tf.reduce_sum(tf.cast(nonfinite, tf.int64))
    high = tf.constant(np.inf, tensor.dtype)
    low = tf.constant(-np.inf, tensor.dtype)
    summary = {
        "nan": nan,
        "posinf": posinf,
        "neginf": bad - nan - posinf,
        "min": tf.cast(tf.reduce_min(tf.where(finite, tensor, high)), tf.float64),
        "max": tf.cast(tf.reduce_max(tf.where(finite, tensor, low)), tf.float64),
        "size": tf.size(tensor, out_type=tf.int64),
    }
    if tensor.shape.rank and tensor.shape[0] is None:
        axes = list(range(1, tensor.shape.rank))
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
