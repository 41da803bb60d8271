"""Replay optimizer steps on the in-memory model and record each step's numbers.

Each step mirrors Keras's own `train_step` for the TensorFlow backend:
`model(x, training=True)`, `model.compute_loss`, `optimizer.scale_loss`, the
gradients of the trainable weights, and `optimizer.apply_gradients`. With
batches in file order, `model.fit(x, y, batch_size=B, shuffle=False)` with the
same optimizer goes through the same steps. The model file is never written.
"""

import logging
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from nandoctor.errors import UsageError

logger = logging.getLogger(__name__)


@dataclass
class StepRecord:
    """The numbers of one optimizer step."""

    step: int
    sample_indices: np.ndarray
    """Positions in the data file of the batch's samples."""
    loss: float
    grad_norm: float
    """Global L2 norm of all gradients (unscaled)."""
    layer_grad_norms: dict
    """Weight path to the L2 norm of its gradient."""
    weight_norms: dict
    """Weight path to its L2 norm before the step."""
    update_ratios: dict
    """Weight path to |update| / |weight before the step|."""
    finite_loss: bool
    finite_gradients: bool
    finite_weights: bool
    """Whether every weight is finite after the step."""
    skipped: bool = False
    """True when a loss-scaling optimizer skipped the update (mixed precision)."""


@dataclass
class FitReplayResult:
    """All replayed steps, and the state just before the first one that broke."""

    steps: list
    optimizer: dict
    """Class name, learning rate and clipping settings of the replayed optimizer."""
    break_step: int | None = None
    break_reason: str | None = None
    """"loss", "gradients" or "weights" for the first non-finite value, or None."""
    weights_before: list | None = None
    """Numpy values of `model.weights` just before the breaking step."""
    batch_inputs: list | None = None
    batch_targets: list | None = None
    input_absmax: list = field(default_factory=list)
    """Largest finite |x| per model input over the replayed batches."""
    target_absmax: list = field(default_factory=list)


def make_optimizer(model, compile_config, name=None, learning_rate=None):
    """Return a fresh optimizer: `name`, else the one saved with the model, else Adam.

    Args:
        model: The loaded model (its `optimizer`, when compiled, gives the config).
        compile_config: The training config read from the file, or None.
        name: A Keras optimizer name that overrides the saved one.
        learning_rate: A learning rate that overrides the optimizer's.
    """
    import keras

    if name:
        try:
            optimizer = keras.optimizers.get(name)
        except ValueError as error:
            raise UsageError(f"--optimizer {name}: unknown Keras optimizer; use a name such as adam or sgd.") from error
    elif getattr(model, "optimizer", None) is not None:
        optimizer = keras.optimizers.deserialize(keras.optimizers.serialize(model.optimizer))
    elif compile_config and (compile_config.get("optimizer_config") or compile_config.get("optimizer")):
        spec = compile_config.get("optimizer_config") or compile_config.get("optimizer")
        optimizer = keras.optimizers.deserialize(spec)
    else:
        optimizer = keras.optimizers.Adam()
    if learning_rate is not None:
        if not (learning_rate > 0 and learning_rate != float("inf")):
            raise UsageError(f"--learning-rate must be positive, received {learning_rate}.")
        inner = getattr(optimizer, "inner_optimizer", optimizer)
        inner.learning_rate = learning_rate
    return optimizer


def describe_optimizer(optimizer):
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    rate = inner.learning_rate
    try:
        rate = float(np.asarray(rate))
    except (TypeError, ValueError):
        rate = None
    return {
        "class": type(optimizer).__name__,
        "inner": type(inner).__name__,
        "learning_rate": rate,
        "clipnorm": inner.clipnorm,
        "global_clipnorm": inner.global_clipnorm,
        "clipvalue": inner.clipvalue,
        "loss_scaling": inner is not optimizer,
    }


def fit_replay(model, loss, optimizer, source, input_specs, steps, batch_size, shuffle_seed=None):
    """Run up to `steps` optimizer steps, stopping at the first non-finite value.

    Args:
        model: The in-memory Keras model; its weights change.
        loss: The loss spec to compile with (a name, function, `Loss`, list or dict).
        optimizer: A fresh Keras optimizer.
        source: A `DataSource` with targets.
        input_specs: The model's input `TensorSpec`s.
        steps: Number of optimizer steps.
        batch_size: Samples per step.
        shuffle_seed: None for file order; otherwise each epoch uses
            `numpy.random.default_rng(shuffle_seed).permutation` of the samples.

    Returns:
        A `FitReplayResult`.
    """
    model.compile(optimizer=optimizer, loss=loss)
    trainable = list(model.trainable_weights)
    paths = [v.path for v in trainable]
    optimizer.build(trainable)  # Creates the loss scale variable before tracing.
    step_function = _compile_step(model, optimizer, trainable)
    result = FitReplayResult([], describe_optimizer(optimizer))
    input_absmax = np.zeros(len(input_specs))
    target_absmax = None

    for step, indices in enumerate(_batch_indices(source.num_samples, batch_size, steps, shuffle_seed)):
        batch = source.take(indices, input_specs)
        input_absmax = np.maximum(input_absmax, [_absmax(x) for x in batch.inputs])
        target_values = [_absmax(y) for y in batch.targets]
        target_absmax = target_values if target_absmax is None else np.maximum(target_absmax, target_values)
        snapshot = [np.array(v.numpy()) for v in model.weights]
        x = batch.inputs[0] if len(batch.inputs) == 1 else list(batch.inputs)
        y = batch.targets[0] if len(batch.targets) == 1 else list(batch.targets)
        numbers = step_function(x, y)
        numbers = {key: np.asarray(value) for key, value in numbers.items()}
        record = StepRecord(
            step=step,
            sample_indices=np.asarray(indices),
            loss=float(numbers["loss"]),
            grad_norm=float(np.sqrt(np.sum(numbers["grad_norms"] ** 2))),
            layer_grad_norms=dict(zip(paths, map(float, numbers["grad_norms"]))),
            weight_norms=dict(zip(paths, map(float, numbers["weight_norms"]))),
            update_ratios=_update_ratios(paths, numbers["update_norms"], numbers["weight_norms"]),
            finite_loss=bool(np.isfinite(numbers["loss"])),
            finite_gradients=bool(numbers["finite_gradients"]),
            finite_weights=all(np.isfinite(v.numpy()).all() for v in model.weights),
            skipped=bool(numbers["skipped"]),
        )
        result.steps.append(record)
        reason = None
        if not record.finite_loss:
            reason = "loss"
        elif not record.finite_gradients and not result.optimizer["loss_scaling"]:
            reason = "gradients"
        elif not record.finite_weights:
            reason = "weights"
        if reason:
            result.break_step = step
            result.break_reason = reason
            result.weights_before = snapshot
            result.batch_inputs = list(batch.inputs)
            result.batch_targets = list(batch.targets)
            logger.debug("training replay broke at step %s (%s)", step, reason)
            break
    result.input_absmax = [float(v) for v in input_absmax]
    result.target_absmax = [float(v) for v in (target_absmax if target_absmax is not None else [])]
    return result


def _compile_step(model, optimizer, trainable):
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    scaling = inner is not optimizer

    @tf.function
    def step(x, y):
        before = [tf.identity(v) for v in trainable]
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            loss = model.compute_loss(x=x, y=y, y_pred=y_pred, training=True)
            scaled = optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled, trainable)
        gradients = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g) for g, v in zip(gradients, trainable)]
        # The loss scale that scale_loss used, read before apply_gradients changes it.
        scale = tf.cast(tf.identity(optimizer.dynamic_scale), tf.float64) if scaling else 1.0
        grad_norms = tf.stack([_norm(g) / scale for g in gradients]) if gradients else tf.zeros([0], tf.float64)
        finite_gradients = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in gradients]) if gradients else tf.constant(True)
        iterations = tf.identity(optimizer.iterations)
        optimizer.apply_gradients(zip(gradients, trainable))
        skipped = tf.equal(iterations, optimizer.iterations) if scaling else tf.constant(False)
        weight_norms = tf.stack([_norm(b) for b in before]) if before else tf.zeros([0], tf.float64)
        update_norms = (tf.stack([_norm(tf.cast(v, tf.float64) - tf.cast(b, tf.float64)) for v, b in zip(trainable, before)])
                        if before else tf.zeros([0], tf.float64))
        return {"loss": tf.cast(loss, tf.float32), "grad_norms": grad_norms, "weight_norms": weight_norms,
                "update_norms": update_norms, "finite_gradients": finite_gradients, "skipped": skipped}

    return step


def _update_ratios(paths, update_norms, weight_norms):
    """Map each weight path to |update| / |weight|, leaving out weights that are all zero.

    Biases start at zero, so their ratio would be infinite on the first step
    and tell nothing about the learning rate.
    """
    return {path: float(update / weight) for path, update, weight in zip(paths, update_norms, weight_norms)
            if weight > 0}


def _norm(tensor):
    """Return the L2 norm in float64, so squares of large float32 values do not overflow."""
    return tf.norm(tf.cast(tensor, tf.float64))


def _batch_indices(num_samples, batch_size, steps, shuffle_seed):
    rng = np.random.default_rng(shuffle_seed) if shuffle_seed is not None else None
    produced = 0
    while produced < steps:
        order = rng.permutation(num_samples) if rng is not None else np.arange(num_samples)
        for start in range(0, num_samples, batch_size):
            if produced >= steps:
                return
            yield order[start:start + batch_size]
            produced += 1


def _absmax(array):
    array = np.asarray(array)
    if array.dtype.kind not in "fiu" or not array.size:
        return 0.0
    finite = array[np.isfinite(array)] if array.dtype.kind == "f" else array
    return float(np.max(np.abs(finite))) if finite.size else 0.0
