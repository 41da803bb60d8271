"""Build the sample models and data files in sample_models/ (fixed seeds).

Run from the repository root, so the inline lambda records a relative path:

    python sample_models/build_samples.py

Each sample is a saved `.keras` model with an `.npz` holding `x` and `y`.
"""

import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras  # noqa: E402

from nandoctor import sample_functions as fns  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def _save(model, name, x, y):
    model.save(os.path.join(HERE, f"{name}.keras"))
    np.savez(os.path.join(HERE, f"{name}.npz"), x=x, y=y)


def exp_overflow():
    """Lambda computing exp(100 * x) on inputs in [0, 1): overflows for x > 0.887."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((4,), name="x")
    scaled = keras.layers.Lambda(fns.sharp_exp, name="sharp_exp")(inputs)
    outputs = keras.layers.Dense(1, name="head")(scaled)
    model = keras.Model(inputs, outputs, name="exp_overflow")
    model.compile(optimizer="adam", loss="mse")
    rng = np.random.default_rng(1)
    x = rng.random((128, 4)).astype("float32")
    y = rng.random((128, 1)).astype("float32")
    _save(model, "exp_overflow", x, y)


def division_by_zero():
    """Inline Lambda computing x / (x - 1) where some inputs are exactly 1."""
    keras.utils.set_random_seed(2)
    inputs = keras.Input((3,), name="x")
    hidden = keras.layers.Dense(3, name="dense")(inputs)
    divide = lambda x: x / (x - 1.0)  # noqa: E731  (an inline lambda, saved as bytecode)
    # Python records this script's absolute path in the bytecode; keep the
    # repository-relative one so reports match on every checkout.
    divide.__code__ = divide.__code__.replace(co_filename="sample_models/build_samples.py")
    ratio = keras.layers.Lambda(divide, name="ratio")(inputs)
    merged = keras.layers.Concatenate(name="merge")([hidden, ratio])
    outputs = keras.layers.Dense(1, name="head")(merged)
    model = keras.Model(inputs, outputs, name="division_by_zero")
    model.compile(optimizer="adam", loss="mse")
    rng = np.random.default_rng(2)
    x = rng.uniform(-2.0, 0.9, (128, 3)).astype("float32")
    x[[17, 40, 41, 99], 1] = 1.0
    y = rng.random((128, 1)).astype("float32")
    _save(model, "division_by_zero", x, y)


def sqrt_gradient():
    """Dense layer, then a Lambda computing sqrt(|x|), with some pre-activations exactly 0."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((4,), name="x")
    hidden = keras.layers.Dense(8, name="dense")(inputs)
    root = keras.layers.Lambda(fns.root_magnitude, name="root")(hidden)
    outputs = keras.layers.Dense(1, name="head")(root)
    model = keras.Model(inputs, outputs, name="sqrt_gradient")
    model.compile(optimizer="adam", loss="mse")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(128, 4)).astype("float32")
    x[[5, 63, 64]] = 0.0  # with zero biases, these rows give pre-activations of exactly 0
    y = rng.normal(size=(128, 1)).astype("float32")
    _save(model, "sqrt_gradient", x, y)


def healthy():
    """Build a small healthy regression network of similar size."""
    keras.utils.set_random_seed(4)
    inputs = keras.Input((4,), name="x")
    hidden = keras.layers.Dense(16, activation="relu", name="dense_1")(inputs)
    hidden = keras.layers.Dense(16, activation="tanh", name="dense_2")(hidden)
    outputs = keras.layers.Dense(1, name="head")(hidden)
    model = keras.Model(inputs, outputs, name="healthy")
    model.compile(optimizer="adam", loss="mse")
    rng = np.random.default_rng(4)
    x = rng.normal(size=(128, 4)).astype("float32")
    y = (x @ rng.normal(size=(4, 1))).astype("float32")
    model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    _save(model, "healthy", x, y)


def deepiv_mixture(components=3):
    """DeepIV-style treatment network: a Gaussian mixture over the treatment.

    A Dense body outputs mixture logits, means and log-scales; Lambda layers
    apply softmax to the logits and exp to the log-scales, and the model is
    trained with the mixture negative log-likelihood. Instruments contain a
    few unnormalized outliers. After a short fit, the log-scale head is scaled
    by 40, the state a run reaches when a high learning rate lets that head
    grow, so the outlier samples push exp past the float32 limit.
    """
    keras.utils.set_random_seed(5)
    inputs = keras.Input((6,), name="x")
    body = keras.layers.Dense(32, activation="tanh", name="body_1")(inputs)
    body = keras.layers.Dense(32, activation="tanh", name="body_2")(body)
    logits = keras.layers.Dense(components, name="mixture_logits")(body)
    weights = keras.layers.Lambda(fns.mixture_weights, name="mixture_weights")(logits)
    means = keras.layers.Dense(components, name="means")(body)
    log_scales = keras.layers.Dense(components, name="log_scales")(inputs)
    scales = keras.layers.Lambda(fns.mixture_scales, name="scales")(log_scales)
    outputs = keras.layers.Concatenate(name="mixture")([weights, means, scales])
    model = keras.Model(inputs, outputs, name="deepiv_treatment")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=fns.mixture_nll)

    rng = np.random.default_rng(5)
    instruments = rng.normal(size=(256, 6)).astype("float32")
    treatment = (instruments[:, :1] * 0.8 + 0.3 * rng.normal(size=(256, 1))).astype("float32")
    model.fit(instruments, treatment, epochs=2, batch_size=64, verbose=0)

    head = model.get_layer("log_scales")
    kernel, bias = head.get_weights()
    head.set_weights([kernel * 40.0, bias])
    instruments[[30, 31, 200]] *= 6.0  # unnormalized outliers in the instruments
    _save(model, "deepiv_mixture", instruments, treatment)


def lr_divergence():
    """Regression whose targets are not normalized: SGD at 0.01 diverges at step 3.

    Saved untrained; `--fit-steps` finds the break, as `model.fit(x, y,
    batch_size=32, shuffle=False)` does.
    """
    keras.utils.set_random_seed(7)
    inputs = keras.Input((3,), name="x")
    hidden = keras.layers.Dense(16, activation="relu", name="hidden")(inputs)
    outputs = keras.layers.Dense(1, name="head")(hidden)
    model = keras.Model(inputs, outputs, name="lr_divergence")
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01), loss="mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 3)).astype("float32")
    y = (x @ np.array([[3.0], [-2.0], [1.0]]) * 1e4 + 5e4).astype("float32")
    _save(model, "lr_divergence", x, y)


def deepiv_training():
    """DeepIV-style mixture network whose scale exp overflows after a few SGD steps.

    One instrument is non-negative and on a scale 20 times the others, and the
    log-scale head reads the instruments directly, so each SGD step grows the
    log-scales of large-instrument samples until exp overflows. Saved untrained.
    """
    keras.utils.set_random_seed(5)
    inputs = keras.Input((6,), name="x")
    body = keras.layers.Dense(32, activation="tanh", name="body_1")(inputs)
    logits = keras.layers.Dense(3, name="mixture_logits")(body)
    weights = keras.layers.Lambda(fns.mixture_weights, name="mixture_weights")(logits)
    means = keras.layers.Dense(3, name="means")(body)
    log_scales = keras.layers.Dense(3, name="log_scales")(inputs)
    scales = keras.layers.Lambda(fns.mixture_scales, name="scales")(log_scales)
    outputs = keras.layers.Concatenate(name="mixture")([weights, means, scales])
    model = keras.Model(inputs, outputs, name="deepiv_training")
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.02), loss=fns.mixture_nll)
    rng = np.random.default_rng(5)
    instruments = rng.normal(size=(512, 6)).astype("float32")
    instruments[:, 0] = np.abs(instruments[:, 0]) * 20.0
    treatment = (instruments[:, 1:2] * 0.8 + 0.3 * rng.normal(size=(512, 1))).astype("float32") * 20
    _save(model, "deepiv_training", instruments, treatment)


def float16_overflow():
    """Mixed-precision regression whose float16 activations pass 65504 while training.

    Saved untrained with the mixed_float16 policy (the output layer in float32).
    """
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(6)
        inputs = keras.Input((8,), name="x")
        hidden = keras.layers.Dense(32, activation="relu", name="hidden")(inputs)
        hidden = keras.layers.Dense(32, activation="relu", name="hidden2")(hidden)
        outputs = keras.layers.Dense(1, name="head", dtype="float32")(hidden)
        model = keras.Model(inputs, outputs, name="float16_overflow")
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.02), loss="mse")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    rng = np.random.default_rng(5)
    x = rng.normal(size=(512, 8)).astype("float32") * 30
    y = (x.sum(axis=1, keepdims=True) * 100).astype("float32")
    _save(model, "float16_overflow", x, y)


SAMPLES = (exp_overflow, division_by_zero, sqrt_gradient, healthy, deepiv_mixture,
           lr_divergence, deepiv_training, float16_overflow)

if __name__ == "__main__":
    import sys

    # Optional names build only those samples: python sample_models/build_samples.py healthy
    chosen = [build for build in SAMPLES if len(sys.argv) == 1 or build.__name__ in sys.argv[1:]]
    for build in chosen:
        build()
        print(f"built {build.__name__}")
