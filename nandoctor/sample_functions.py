"""Functions used by the bundled sample models, registered with Keras.

Keras saves a named function by its registered name, so the samples load
without `--custom-objects` once this module is imported (nandoctor imports it
before loading any model). The faults in them are deliberate.
"""

import keras
from keras import ops

_PACKAGE = "nandoctor_samples"


@keras.saving.register_keras_serializable(package=_PACKAGE)
def sharp_exp(x):
    """Compute exp(100 * x), which overflows float32 for x above 0.887."""
    return ops.exp(100.0 * x)


@keras.saving.register_keras_serializable(package=_PACKAGE)
def root_magnitude(x):
    """Compute sqrt(|x|), whose derivative is infinite at x = 0."""
    return ops.sqrt(ops.abs(x))


@keras.saving.register_keras_serializable(package=_PACKAGE)
def mixture_scales(log_scales):
    """Turn predicted log-scales into mixture scales with an unbounded exp."""
    return ops.exp(log_scales)


@keras.saving.register_keras_serializable(package=_PACKAGE)
def mixture_nll(y_true, y_pred):
    """Negative log-likelihood of a 1-D Gaussian mixture.

    Args:
        y_true: Targets of shape (batch, 1).
        y_pred: Concatenated (weights, means, scales), each (batch, k).
    """
    k = y_pred.shape[-1] // 3
    weights = y_pred[:, :k]
    means = y_pred[:, k:2 * k]
    scales = y_pred[:, 2 * k:]
    z = (y_true - means) / scales
    log_density = -0.5 * ops.square(z) - ops.log(scales) - 0.5 * ops.log(2.0 * 3.141592653589793)
    return -ops.logsumexp(ops.log(weights + 1e-12) + log_density, axis=-1)


@keras.saving.register_keras_serializable(package=_PACKAGE)
def mixture_weights(logits):
    """Turn mixture logits into mixture weights with a softmax."""
    return ops.softmax(logits, axis=-1)
