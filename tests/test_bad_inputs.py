"""Bad inputs through the command line: one `Error:` line, a documented exit status, no traceback."""

import os
import shutil
import tempfile

import numpy as np
import pytest

from tests.corpus import CASES, ModelFiles, error_lines, invoke, write_npz
from tests.test_loading import file_creating_lambda, save_lambda_model


@pytest.fixture(scope="module")
def models(tf, keras, tmp_path_factory):
    return ModelFiles(str(tmp_path_factory.mktemp("models")), keras, tf)


def assert_outcome(result, case, tmp_path):
    """Check the exit status, the message fragments and the absence of a traceback."""
    output = result.stderr if case.status in (2, 3) else result.stdout
    assert result.exit_code == case.status, result.stderr + result.stdout[-2000:]
    assert "Traceback" not in result.stderr
    assert "Traceback" not in result.stdout
    if case.status in (2, 3):
        assert len(error_lines(result)) == 1, result.stderr
        assert result.stdout == ""
    else:
        assert error_lines(result) == [], result.stderr
    for fragment in case.fragments:
        assert fragment.format(tmp=tmp_path) in output


def case_params():
    params = []
    for case in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
        params.append(pytest.param(case, id=case.name, marks=marks))
    return params


def test_corpus_size():
    assert len(CASES) >= 40
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", case_params())
def test_bad_input(case, models, tmp_path):
    args = case.build(str(tmp_path), models)

    result = invoke("scan", *args)

    assert_outcome(result, case, str(tmp_path))


@pytest.mark.parametrize("name", ["model_missing", "keras_corrupted_weights", "lambda_untrusted_bytecode",
                                  "npz_object_array", "lambda_raises_when_traced", "unknown_loss"])
def test_debug_adds_no_traceback_to_user_errors(name, models, tmp_path):
    case = next(case for case in CASES if case.name == name)
    args = case.build(str(tmp_path), models)

    result = invoke("scan", *args, "--debug")

    assert result.exit_code == case.status
    assert len(error_lines(result)) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_debug_shows_traceback_of_internal_error(tf, models, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("replay state corrupted")

    monkeypatch.setattr("nandoctor.scanner.scan", fail)

    result = invoke("scan", models.path("dense"), "--debug")

    assert result.exit_code == 4
    assert "Traceback (most recent call last)" in result.stderr
    assert "RuntimeError: replay state corrupted" in result.stderr
    assert len(error_lines(result)) == 1


def test_oversized_keras_config_rejected(models, monkeypatch):
    monkeypatch.setattr("nandoctor.loading.model_config.MAX_CONFIG_BYTES", 1000)

    result = invoke("scan", models.path("dense"))

    assert result.exit_code == 3
    assert "config.json unpacks to" in result.stderr
    assert "more than the 1000 bytes" in result.stderr
    assert len(error_lines(result)) == 1


# Code in model files runs only with --trust-code. tests/test_loading.py checks
# the same through the Python API; these go through the command line.


@pytest.mark.parametrize("extension", [".keras", ".h5"])
def test_hostile_lambda_needs_trust_code(keras, tmp_path, extension):
    marker = tmp_path / "lambda_ran"
    path = save_lambda_model(keras, tmp_path / f"hostile{extension}", file_creating_lambda(marker), "touch")
    # Saving calls the lambda once on symbolic tensors.
    marker.unlink()

    for extra in ([], ["--debug"], ["--custom-objects", str(tmp_path / "hostile_helpers.py")]):
        (tmp_path / "hostile_helpers.py").write_text("HELPER = 1\n")
        result = invoke("scan", path, *extra)
        assert result.exit_code == 3, result.stderr
        assert "'touch'" in result.stderr
        assert "--trust-code" in result.stderr
        assert len(error_lines(result)) == 1
        assert not marker.exists()

    result = invoke("scan", path, "--trust-code")
    assert result.exit_code == 0, result.stderr
    assert marker.exists()


class _CreatesFileWhenUnpickled:
    """An object whose unpickling creates the file `path`."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.mark.parametrize("extension", [".npz", ".npy"])
def test_data_pickles_never_loaded(models, tmp_path, extension):
    marker = tmp_path / "unpickled"
    rows = np.empty(4, dtype=object)
    rows[:] = [_CreatesFileWhenUnpickled(str(marker)) for _ in range(4)]
    data = tmp_path / f"pickled{extension}"
    if extension == ".npy":
        np.save(data, rows, allow_pickle=True)
    else:
        np.savez(data, x=rows)

    result = invoke("scan", models.path("dense"), data)

    assert result.exit_code == 3
    assert "never loads pickles" in result.stderr
    assert not marker.exists()

    # The file does hold a pickle that creates the marker, so the check above can fail.
    loaded = np.load(data, allow_pickle=True)
    array = loaded["x"] if extension == ".npz" else loaded
    for handle in array:
        handle.close()
    assert marker.exists()


# Permissions, checked as an unprivileged user when the tests run as root.


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="the corpus checks unreadable files directly when not run as root")
def test_unreadable_files_as_unprivileged_user(models):
    import pwd

    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no 'nobody' user to run the scan as")
    # tmp_path lies in a folder only root can enter, so this one is made world-readable.
    folder = tempfile.mkdtemp(prefix="nandoctor-permissions-")
    try:
        os.chmod(folder, 0o755)
        readable_model = os.path.join(folder, "model.keras")
        shutil.copy(models.path("dense"), readable_model)
        os.chmod(readable_model, 0o644)
        locked_model = os.path.join(folder, "locked.keras")
        shutil.copy(models.path("dense"), locked_model)
        locked_data = write_npz(folder, "locked.npz", x=np.ones((8, 4), "float32"))
        os.chmod(locked_model, 0)
        os.chmod(locked_data, 0)

        # The effective user changes for the scans only. TensorFlow and Keras
        # are imported already, so the scans need no file that only root can
        # read, such as an interpreter installed under /root.
        os.seteuid(nobody.pw_uid)
        try:
            model_result = invoke("scan", locked_model)
            data_result = invoke("scan", readable_model, locked_data)
        finally:
            os.seteuid(0)
    finally:
        shutil.rmtree(folder)

    assert model_result.exit_code == 3, model_result.stderr
    assert f"cannot read model file {locked_model}: Permission denied" in model_result.stderr
    assert "check the file's permissions" in model_result.stderr
    assert len(error_lines(model_result)) == 1
    assert data_result.exit_code == 3, data_result.stderr
    assert f"cannot read data file {locked_data}: Permission denied" in data_result.stderr
    assert len(error_lines(data_result)) == 1
    assert "Traceback" not in model_result.stderr + data_result.stderr
