"""Helpers on replayed batches."""

import numpy as np


def finite_rows(batch):
    """Return the indices of the batch's samples whose float inputs and targets are all finite."""
    keep = np.ones(len(batch.inputs[0]), bool)
    for array in list(batch.inputs) + list(batch.targets or []):
        if array.dtype.kind == "f":
            keep &= np.isfinite(array.reshape(len(array), -1)).all(axis=1)
    return np.flatnonzero(keep)
