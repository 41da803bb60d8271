"""Measure a nandoctor scan against plain compiled passes and TensorFlow's check_numerics.

Run from the repository root (takes several minutes on 2 CPU cores):

    python bench/run_bench.py --write bench/RESULTS.md

For each model (random weights, a fixed batch), one subprocess per
measurement reports the median time over repeated calls and the growth of
peak resident memory during the calls:

- forward: `model(x)` in a `tf.function`.
- forward+backward: loss and gradients of all trainable weights in a `tf.function`.
- check_numerics: the same forward+backward pass traced after
  `tf.debugging.enable_check_numerics()`.
- nandoctor: the compiled layer-by-layer replay with all per-layer checks and
  summaries (what `nandoctor scan` runs on a clean model), excluding the
  TensorFlow import, model loading and the first call, whose tracing time is
  reported on its own.

It then times how the replay grows with samples (1x, 4x, 16x the batch) and
with depth (MLPs of 10, 20 and 40 layers), and the start-up of the command.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

BATCH = 32
MODELS = {
    # name: (input shape, repeats)
    "mlp": ((256,), 7),
    "cnn": ((32, 32, 3), 7),
    "mobilenetv2": ((96, 96, 3), 5),
    "resnet50": ((128, 128, 3), 3),
}
MODES = ("forward", "forward+backward", "check_numerics", "nandoctor")


def build_model(name, depth=10):
    import keras

    keras.utils.set_random_seed(0)
    if name == "mlp":
        inputs = keras.Input((256,))
        hidden = inputs
        for index in range(depth):
            hidden = keras.layers.Dense(256, activation="relu", name=f"dense_{index}")(hidden)
        outputs = keras.layers.Dense(10, activation="softmax", name="head")(hidden)
        return keras.Model(inputs, outputs)
    if name == "cnn":
        inputs = keras.Input((32, 32, 3))
        hidden = keras.layers.Conv2D(32, 3, activation="relu")(inputs)
        hidden = keras.layers.BatchNormalization()(hidden)
        hidden = keras.layers.MaxPooling2D()(hidden)
        hidden = keras.layers.Conv2D(64, 3, activation="relu")(hidden)
        hidden = keras.layers.BatchNormalization()(hidden)
        hidden = keras.layers.MaxPooling2D()(hidden)
        hidden = keras.layers.Flatten()(hidden)
        hidden = keras.layers.Dense(128, activation="relu")(hidden)
        outputs = keras.layers.Dense(10, activation="softmax")(hidden)
        return keras.Model(inputs, outputs)
    if name == "mobilenetv2":
        return keras.applications.MobileNetV2(input_shape=(96, 96, 3), weights=None, classes=10)
    if name == "resnet50":
        return keras.applications.ResNet50(input_shape=(128, 128, 3), weights=None, classes=10)
    raise ValueError(f"unknown model {name!r}")


def _rss_kib(field):
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def worker(name, mode, repeats, batches, depth):
    """Measure one (model, mode) in this process and print one JSON line."""
    import numpy as np

    from nandoctor import tf_setup

    tf = tf_setup.quiet_tensorflow()
    import keras

    model = build_model(name, depth)
    shape = model.inputs[0].shape[1:]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH * batches,) + tuple(shape)).astype("float32")
    y = rng.integers(0, 10, BATCH * batches).astype("int64")
    loss_fn = keras.losses.SparseCategoricalCrossentropy()

    def batch_slices():
        for start in range(0, len(x), BATCH):
            yield tf.constant(x[start:start + BATCH]), tf.constant(y[start:start + BATCH])

    if mode == "forward":
        step = tf.function(lambda inputs, targets: model(inputs, training=False))
    elif mode in ("forward+backward", "check_numerics"):
        if mode == "check_numerics":
            tf.debugging.enable_check_numerics()

        @tf.function
        def step(inputs, targets):
            with tf.GradientTape() as tape:
                loss = loss_fn(targets, model(inputs, training=False))
            return tape.gradient(loss, model.trainable_weights)
    else:
        from nandoctor.loading.data import DataSource
        from nandoctor.replay.loss import build_loss
        from nandoctor.replay.passes import CompiledReplay
        from nandoctor.scanner import _model_specs

        input_specs, _ = _model_specs(model, name)
        model.compile(loss="sparse_categorical_crossentropy")
        replay = CompiledReplay(model, build_loss(model, None, True))
        source = DataSource(None, "memory", [x], [y], ["x"], ["y"], len(x))

        def run_all():
            result = replay.run(source, input_specs, BATCH)
            assert not result.candidates, "the benchmark model is not clean"

    if mode != "nandoctor":
        def run_all():
            for inputs, targets in batch_slices():
                outputs = step(inputs, targets)
                tf.nest.map_structure(lambda t: t.numpy(), outputs)

    before = _rss_kib("VmRSS")
    started = time.perf_counter()
    run_all()  # First call: tracing and compilation.
    first = time.perf_counter() - started
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run_all()
        times.append(time.perf_counter() - started)
    peak = _rss_kib("VmHWM")
    print(json.dumps({"model": name, "mode": mode, "batches": batches, "depth": depth,
                      "median_s": statistics.median(times), "first_s": first,
                      "peak_growth_mib": max(peak - before, 0) / 1024}))


def _run_worker(name, mode, repeats, batches=1, depth=10):
    command = [sys.executable, __file__, "--worker", name, mode, str(repeats), str(batches), str(depth)]
    output = subprocess.run(command, capture_output=True, text=True, check=False)
    if output.returncode != 0:
        raise RuntimeError(f"worker {name} {mode} failed:\n{output.stderr[-2000:]}")
    return json.loads(output.stdout.strip().splitlines()[-1])


def _startup(arguments, repeats=5):
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "nandoctor"] + arguments, capture_output=True, check=False)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _first_output(arguments):
    """Return seconds from start to the first byte on stdout, and to exit."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "nandoctor"] + arguments,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    process.stdout.read(1)
    first = time.perf_counter() - started
    process.stdout.read()
    process.wait()
    return first, time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", metavar="FILE", help="also write the Markdown report to FILE")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of models")
    arguments = parser.parse_args()

    begun = time.perf_counter()
    lines = ["# Benchmark results", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
             f"{platform.platform()}.", "",
             f"Command: `python bench/run_bench.py`. Batch of {BATCH} samples, random weights, "
             "sparse categorical crossentropy; times are medians over repeated calls after a first, "
             "compiling call. Memory is the growth of peak RSS during the calls.", ""]

    lines += ["## Scan against plain passes", "",
              "| model | forward | forward+backward | check_numerics | nandoctor | nandoctor / fwd+bwd | "
              "check_numerics / fwd+bwd | nandoctor first call (tracing) | peak growth fwd+bwd / nandoctor (MiB) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name in arguments.models.split(","):
        repeats = MODELS[name][1]
        rows = {mode: _run_worker(name, mode, repeats) for mode in MODES}
        base = rows["forward+backward"]["median_s"]
        lines.append(
            f"| {name} | {rows['forward']['median_s']:.3f} s | {base:.3f} s | "
            f"{rows['check_numerics']['median_s']:.3f} s | {rows['nandoctor']['median_s']:.3f} s | "
            f"{rows['nandoctor']['median_s'] / base:.2f}x | {rows['check_numerics']['median_s'] / base:.2f}x | "
            f"{rows['nandoctor']['first_s']:.1f} s | "
            f"{rows['forward+backward']['peak_growth_mib']:.0f} / {rows['nandoctor']['peak_growth_mib']:.0f} |")
        print("\n".join(lines[-1:]), flush=True)

    lines += ["", "## Growth with samples (MLP and CNN)", "",
              "| model | batches | forward+backward | nandoctor | nandoctor peak growth (MiB) |", "|---|---|---|---|---|"]
    for name in ("mlp", "cnn"):
        for batches in (1, 4, 16):
            plain = _run_worker(name, "forward+backward", 3, batches)
            scan = _run_worker(name, "nandoctor", 3, batches)
            lines.append(f"| {name} | {batches} | {plain['median_s']:.3f} s | {scan['median_s']:.3f} s | "
                         f"{scan['peak_growth_mib']:.0f} |")
            print(lines[-1], flush=True)

    lines += ["", "## Growth with depth (MLP of width 256)", "",
              "| layers | forward+backward | nandoctor | ratio |", "|---|---|---|---|"]
    for depth in (10, 20, 40):
        plain = _run_worker("mlp", "forward+backward", 5, 1, depth)
        scan = _run_worker("mlp", "nandoctor", 5, 1, depth)
        lines.append(f"| {depth} | {plain['median_s']:.4f} s | {scan['median_s']:.4f} s | "
                     f"{scan['median_s'] / plain['median_s']:.2f}x |")
        print(lines[-1], flush=True)

    help_s = _startup(["--help"])
    rules_s = _startup(["rules"])
    first, total = _first_output(["scan", "sample_models/healthy.keras", "sample_models/healthy.npz"])
    lines += ["", "## Start-up", "",
              "| command | time |", "|---|---|",
              f"| `nandoctor --help` (median of 5) | {help_s:.3f} s |",
              f"| `nandoctor rules` (median of 5) | {rules_s:.3f} s |",
              f"| `nandoctor scan sample_models/healthy.keras ...`: first output | {first:.2f} s |",
              f"| the same scan: exit | {total:.2f} s |", "",
              f"Whole benchmark: {time.perf_counter() - begun:.0f} s."]
    report = "\n".join(lines) + "\n"
    print(report)
    if arguments.write:
        with open(arguments.write, "w") as handle:
            handle.write(report)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
    else:
        main()
