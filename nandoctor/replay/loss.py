"""Build the loss that the backward replay differentiates."""

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from nandoctor.errors import UsageError

STAND_IN_DESCRIPTION = "stand-in: mean of a fixed random projection of each output (the data has no targets)"


@dataclass
class ReplayLoss:
    """A loss over all model outputs and how the report describes it."""

    functions: list
    """One callable `(y_true, y_pred) -> loss` per model output, or None for the stand-in."""
    description: str
    custom: bool
    """True when a loss function comes from user code (its ops get a source line)."""

    def __call__(self, targets, outputs):
        if self.functions is None:
            return tf.add_n([_projection(out, k) for k, out in enumerate(outputs)])
        total = []
        for function, target, output in zip(self.functions, targets, outputs):
            if target.dtype.is_floating and output.dtype.is_floating:
                target = tf.cast(target, output.dtype)
            total.append(tf.cast(tf.reduce_mean(function(target, output)), tf.float32))
        return tf.add_n(total)


def build_loss(model, loss_name=None, has_targets=True, compiled_loss=None):
    """Choose the loss for the backward replay.

    Args:
        model: The loaded model.
        compiled_loss: The loss saved with the model, used unless `loss_name`
            is given. Defaults to `model.loss`.
        loss_name: A Keras loss identifier (such as "mse") that overrides the
            compiled loss, or None.
        has_targets: Whether the data has targets. Without them, a stand-in
            loss (see `_projection`) gives every output a non-zero gradient,
            so every gradient path can still be checked.

    Returns:
        A `ReplayLoss`.

    Raises:
        UsageError: Targets exist but no loss is known, or `loss_name` is unknown.
    """
    if not has_targets:
        return ReplayLoss(None, STAND_IN_DESCRIPTION, False)

    if compiled_loss is None:
        compiled_loss = getattr(model, "loss", None)
    spec = loss_name if loss_name else compiled_loss
    if spec is None:
        raise UsageError(
            "the model was saved without a compiled loss and the data has targets; "
            "pass --loss NAME (a Keras loss such as mse or categorical_crossentropy)."
        )
    output_names = list(getattr(model, "output_names", []) or [])
    count = len(model.outputs)
    if isinstance(spec, dict):
        specs = [spec[name] for name in output_names]
    elif isinstance(spec, (list, tuple)) or type(spec).__name__ == "ListWrapper":
        specs = list(spec)
    else:
        specs = [spec] * count
    if len(specs) != count:
        raise UsageError(f"the loss has {len(specs)} entries for {count} model outputs; pass --loss NAME.")

    functions = []
    custom = False
    for item in specs:
        try:
            function = keras.losses.get(item) if isinstance(item, str) else item
        except ValueError as error:
            raise UsageError(f"--loss {item}: unknown Keras loss ({error}); use a name such as mse.") from error
        if function is None:
            raise UsageError(f"--loss {item}: unknown Keras loss; use a name such as mse.")
        custom = custom or _is_custom(function)
        functions.append(function)
    return ReplayLoss(functions, ", ".join(_loss_name(f) for f in functions), custom)


def _projection(output, seed):
    """Return the batch mean of `sum(output * w)` for fixed standard normal weights `w`.

    Unlike the plain mean, the gradient `w` differs between features, so it
    does not vanish behind a softmax, whose outputs always sum to 1.
    """
    output = tf.cast(output, tf.float32)
    shape = output.shape[1:]
    if not shape.is_fully_defined():
        return tf.reduce_mean(output)
    weights = np.random.default_rng(seed).standard_normal(shape.as_list()).astype("float32")
    axes = list(range(1, output.shape.rank))
    projected = tf.reduce_sum(output * weights, axis=axes) if axes else output * weights
    return tf.reduce_mean(projected)


def _loss_name(function):
    inner = getattr(function, "fn", function)
    return getattr(inner, "__name__", None) or type(function).__name__


def _is_custom(function):
    inner = getattr(function, "fn", function)
    module = getattr(inner, "__module__", "") or type(inner).__module__
    return not module.startswith("keras")
