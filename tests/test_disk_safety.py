"""Scans read files and write none: inputs stay byte-identical and no temporary file stays behind."""

import hashlib
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from tests.conftest import REPO
from tests.corpus import CASES, ModelFiles, invoke, write_h5, write_npz, write_text

# TensorFlow's autograph writes the code it generates to files named like this
# in the temporary folder and deletes them when the interpreter exits, so
# they are checked after exit, in test_no_temporary_files_after_exit.
AUTOGRAPH_PREFIX = "__autograph_generated_file"


@pytest.fixture(scope="module")
def models(tf, keras, tmp_path_factory):
    return ModelFiles(str(tmp_path_factory.mktemp("models")), keras, tf)


def snapshot(folder):
    """Map each path under `folder` to its SHA-256, size and modification time (folders to "folder")."""
    state = {}
    for root, folders, files in os.walk(folder):
        for name in folders:
            state[os.path.relpath(os.path.join(root, name), folder) + "/"] = "folder"
        for name in files:
            path = os.path.join(root, name)
            status = os.stat(path)
            try:
                with open(path, "rb") as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()
            except PermissionError:
                digest = "unreadable"
            state[os.path.relpath(path, folder)] = (digest, status.st_size, status.st_mtime_ns)
    return state


def temporary_names(folder):
    return sorted(name for name in os.listdir(folder) if not name.startswith(AUTOGRAPH_PREFIX))


@pytest.fixture
def private_tempdir(tmp_path_factory, monkeypatch):
    """Point tempfile and TMPDIR at an empty folder, outside tmp_path, for one test."""
    folder = tmp_path_factory.mktemp("tempdir")
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return str(folder)


def scan_and_compare(args, folders, tempdir):
    """Run one scan and assert that `folders` and `tempdir` are as before it."""
    before = {folder: snapshot(folder) for folder in folders}
    temporary_before = temporary_names(tempdir)
    assert temporary_before == []

    result = invoke("scan", *args)

    for folder in folders:
        assert snapshot(folder) == before[folder], f"{folder} changed during `nandoctor scan {' '.join(args)}`"
    assert tempfile.gettempdir() == tempdir
    assert temporary_names(tempdir) == temporary_before
    return result


@pytest.mark.parametrize("case", [pytest.param(case, id=case.name) for case in CASES])
def test_corpus_scan_changes_no_file(case, models, tmp_path, private_tempdir, monkeypatch):
    case_folder = tmp_path / "case"
    case_folder.mkdir()
    working_folder = tmp_path / "cwd"
    working_folder.mkdir()
    monkeypatch.chdir(working_folder)
    args = case.build(str(case_folder), models)

    result = scan_and_compare(args, [str(case_folder), models.folder, str(working_folder)], private_tempdir)

    assert result.exit_code in (0, 1, 2, 3, 4)


def test_successful_scans_change_no_file(models, tmp_path, private_tempdir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4)).astype("float32")
    y = rng.normal(size=(40, 1)).astype("float32")
    npz = write_npz(str(tmp_path), "d.npz", x=x, y=y)
    npy = str(tmp_path / "x.npy")
    np.save(npy, x)
    h5 = write_h5(str(tmp_path), "d.h5", x=x, y=y)
    folders = [str(tmp_path), models.folder]
    scans = [
        [models.path("dense"), npz],
        [models.path("dense"), npy],
        [models.path("dense_h5"), h5, "--batch-size", "16"],
        [models.path("dense_h5"), npz, "--format", "json"],
        [models.path("inline_lambda"), "--trust-code"],
        [models.path("batchnorm"), "--training-mode"],
    ]

    for args in scans:
        result = scan_and_compare(args, folders, private_tempdir)
        assert result.exit_code == 0, result.stderr


def test_custom_objects_file_leaves_no_bytecode(models, tmp_path, private_tempdir, monkeypatch):
    # Python writes __pycache__ next to an imported file unless dont_write_bytecode is set.
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    functions = write_text(str(tmp_path), "train_script.py", """
        import helpers


        def strict(x):
            return helpers.scale(x)
    """)
    write_text(str(tmp_path), "helpers.py", """
        def scale(x):
            return x * 1.0
    """)

    result = scan_and_compare([models.path("lambda_strict"), "--custom-objects", functions],
                              [str(tmp_path), models.folder], private_tempdir)

    assert result.exit_code == 0, result.stderr
    assert not (tmp_path / "__pycache__").exists()
    assert not sys.dont_write_bytecode


_SCANS_IN_CHILD = """
import json, sys
from click.testing import CliRunner
from nandoctor.cli import cli

statuses = [CliRunner().invoke(cli, ["scan", *args]).exit_code for args in json.loads(sys.argv[1])]
print(json.dumps(statuses))
"""


def test_no_temporary_files_after_exit(models, tmp_path):
    tempdir = tmp_path / "tempdir"
    tempdir.mkdir()
    data = write_npz(str(tmp_path), "d.npz", x=np.ones((8, 4), "float32"), y=np.ones((8, 1), "float32"))
    nan_data = write_npz(str(tmp_path), "nan.npz", x=np.full((8, 4), np.nan, "float32"))
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    scans = [
        [models.path("dense"), data],
        [models.path("dense"), nan_data],
        [models.path("dense_h5"), data, "--training-mode"],
        [str(broken)],
        [models.path("dense"), str(tmp_path / "absent.npz")],
    ]
    environment = dict(os.environ, TMPDIR=str(tempdir))

    completed = subprocess.run([sys.executable, "-c", _SCANS_IN_CHILD, json.dumps(scans)], cwd=REPO,
                               env=environment, capture_output=True, text=True, timeout=300)

    assert completed.returncode == 0, completed.stderr[-3000:]
    assert json.loads(completed.stdout.splitlines()[-1]) == [0, 1, 0, 3, 3]
    assert os.listdir(tempdir) == []
