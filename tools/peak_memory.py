"""Measure the peak memory of `nandoctor scan` on HDF5 data of growing size.

Builds a small Dense model and HDF5 files of 1 and N batches (N = 16 by
default) of float32 inputs, scans each in its own process with
`python -m nandoctor scan`, and prints the peak resident set size of each
scan. When data is read one batch at a time, the N-batch scan peaks close to
the 1-batch scan. Data read whole would add about N - 1 batches of memory.

With --compare-npz the N-batch data is also scanned from an `.npz` file,
which numpy reads whole: a control that shows the measurement sees growth.

Usage:
    python tools/peak_memory.py [--batches 16] [--batch-size 1024]
        [--features 2048] [--compare-npz] [--json]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

MODEL_NAME = "model.keras"


def build_files(folder, features, batch_size, batches, compare_npz):
    """Save the model and the data files into `folder` and return their paths."""
    import h5py
    import numpy as np

    from nandoctor import tf_setup

    tf_setup.quiet_tensorflow()
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((features,), name="features")
    outputs = keras.layers.Dense(1, name="head")(keras.layers.Dense(4, name="hidden")(inputs))
    model = keras.Model(inputs, outputs, name="wide")
    model.compile(optimizer="adam", loss="mean_squared_error")
    model_path = os.path.join(folder, MODEL_NAME)
    model.save(model_path)

    rng = np.random.default_rng(0)
    paths = {}
    for label, count in (("one_batch", 1), ("many_batches", batches)):
        path = os.path.join(folder, f"{label}.h5")
        with h5py.File(path, "w") as handle:
            x = handle.create_dataset("x", (count * batch_size, features), dtype="float32")
            y = handle.create_dataset("y", (count * batch_size, 1), dtype="float32")
            # Written one batch at a time so this process stays small too.
            for start in range(0, count * batch_size, batch_size):
                x[start:start + batch_size] = rng.standard_normal((batch_size, features), dtype="float32")
                y[start:start + batch_size] = rng.standard_normal((batch_size, 1), dtype="float32")
        paths[label] = path
    if compare_npz:
        with h5py.File(paths["many_batches"], "r") as handle:
            path = os.path.join(folder, "many_batches.npz")
            np.savez(path, x=handle["x"][:], y=handle["y"][:])
        paths["many_batches_npz"] = path
    return model_path, paths


def peak_rss_of_scan(model_path, data_path, batch_size):
    """Run one scan in a child process and return its exit status and memory in MiB.

    Returns:
        A dict with `exit_status` and `peak_rss_mib`, the peak resident set
        size over the whole process, TensorFlow's import included. On Linux it
        also has `scan_peak_rss_mib`, the peak from just before the model is
        loaded to the end of the scan.
    """
    command = [sys.executable, os.path.abspath(__file__), "--child", model_path, data_path, str(batch_size)]
    process = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in process.stdout.splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"the measuring process failed ({process.returncode}): {process.stderr[-2000:]}")
    return json.loads(lines[-1])


def _child(model_path, data_path, batch_size):
    """Import TensorFlow, reset the peak RSS, scan through the command line and print the peaks."""
    import contextlib
    import io
    import resource

    from nandoctor import tf_setup
    from nandoctor.cli import cli

    tf_setup.quiet_tensorflow()
    # Writing 5 to clear_refs resets VmHWM, the peak RSS, to the current RSS (Linux 4.0+).
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        reset = True
    except OSError:
        reset = False

    report = io.StringIO()
    with contextlib.redirect_stdout(report):
        try:
            cli.main(["scan", model_path, data_path, "--batch-size", str(batch_size), "--format", "json"],
                     prog_name="nandoctor")
            status = 0
        except SystemExit as exit_:
            status = exit_.code
    result = {"exit_status": status,
              "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if reset:
        result["scan_peak_rss_mib"] = round(_status_kib("VmHWM") / 1024, 1)
    print(json.dumps(result))


def _status_kib(field):
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def measure(folder, features=2048, batch_size=1024, batches=16, compare_npz=False):
    """Build the files in `folder`, scan each, and return the results as a dict."""
    model_path, paths = build_files(folder, features, batch_size, batches, compare_npz)
    batch_mib = batch_size * features * 4 / 2**20
    result = {"features": features, "batch_size": batch_size, "batches": batches,
              "batch_mib": round(batch_mib, 1), "scans": {}}
    for label, path in paths.items():
        scan = peak_rss_of_scan(model_path, path, batch_size)
        scan["data_mib"] = round(os.path.getsize(path) / 2**20, 1)
        result["scans"][label] = scan
    return result


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=2048, help="float32 features per sample")
    parser.add_argument("--batch-size", type=int, default=1024, help="samples per batch")
    parser.add_argument("--batches", type=int, default=16, help="batches in the large data file")
    parser.add_argument("--compare-npz", action="store_true",
                        help="also scan the large data from an .npz file, which is read whole")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="nandoctor-memory-") as folder:
        result = measure(folder, args.features, args.batch_size, args.batches, args.compare_npz)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"batch: {args.batch_size} samples x {args.features} float32 features = {result['batch_mib']} MiB")
    for label, scan in result["scans"].items():
        during = scan.get("scan_peak_rss_mib")
        during = f"{during:8.1f} MiB" if during is not None else "     n/a"
        print(f"{label:18} data {scan['data_mib']:7.1f} MiB  peak RSS during the scan {during}  "
              f"over the process {scan['peak_rss_mib']:7.1f} MiB  exit {scan['exit_status']}")


if __name__ == "__main__":
    main()
