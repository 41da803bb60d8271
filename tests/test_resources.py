"""Bounded memory on large HDF5 data, and Ctrl-C during a scan."""

import importlib.util
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO
from tests.corpus import ModelFiles, write_text

BATCH_SIZE = 1024
FEATURES = 1024
"""One batch is 1024 x 1024 float32 values, 4 MiB."""
BATCHES = 16
MARGIN_BATCHES = 2
"""The 16-batch scan may peak at most 2 batches (8 MiB) above the 1-batch scan."""


def load_peak_memory_tool():
    path = os.path.join(REPO, "tools", "peak_memory.py")
    spec = importlib.util.spec_from_file_location("peak_memory", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_h5_scan_memory_independent_of_samples(tf, tmp_path):
    tool = load_peak_memory_tool()

    result = tool.measure(str(tmp_path), features=FEATURES, batch_size=BATCH_SIZE, batches=BATCHES,
                          compare_npz=True)

    scans = result["scans"]
    assert [scan["exit_status"] for scan in scans.values()] == [0, 0, 0], scans
    batch_mib = result["batch_mib"]
    large_data_mib = scans["many_batches"]["data_mib"]
    assert large_data_mib >= 8 * batch_mib
    key = "scan_peak_rss_mib" if "scan_peak_rss_mib" in scans["one_batch"] else "peak_rss_mib"
    one, many, npz = (scans[label][key] for label in ("one_batch", "many_batches", "many_batches_npz"))
    assert many - one <= MARGIN_BATCHES * batch_mib, scans
    if key == "scan_peak_rss_mib":
        # The control: numpy reads the whole .npz, and the measurement detects it.
        assert npz - one >= large_data_mib / 2, scans


@pytest.fixture
def slow_function_model(tf, keras, tmp_path):
    """A Lambda model and a --custom-objects file whose function sleeps once the replay calls it."""
    models = ModelFiles(str(tmp_path), keras, tf)
    model = models.path("lambda_strict")
    ready = tmp_path / "replay_started"
    functions = write_text(str(tmp_path), "slow_functions.py", f"""
        import time


        def strict(x):
            open({str(ready)!r}, "w").close()
            time.sleep(120)
            return x
    """)
    return model, functions, ready


def test_ctrl_c_exits_130(slow_function_model):
    model, functions, ready = slow_function_model
    process = subprocess.Popen([sys.executable, "-m", "nandoctor", "scan", model, "--custom-objects", functions],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ready.exists(), "the scan never reached the replay"

        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert process.returncode == 130, stderr[-3000:]
    error_lines = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert error_lines == ["Error: interrupted before the scan finished; no findings to report."]
    assert "Traceback" not in stderr
    assert stdout == ""
