"""The command line: help, exit statuses, error output and the JSON report."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from nandoctor.cli import cli
from tests.conftest import REPO, sample

JSON_KEYS = {"schema_version", "tool", "model", "data", "loss", "summary", "findings", "layers", "notes", "training"}
FINDING_KEYS = {"code", "rule", "kind", "severity", "phase", "layer", "layer_class", "op", "location",
                "message", "evidence", "fix", "propagated_to", "step", "repro", "fix_verified", "fix_check"}
SUMMARY_KEYS = {"status", "findings", "by_kind", "by_severity", "batches", "samples", "interrupted"}


def invoke(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args])


def error_lines(result):
    return [line for line in result.stderr.splitlines() if line.startswith("Error:")]


def assert_one_error(result):
    """Check that stderr contains exactly one `Error:` line and no traceback."""
    assert len(error_lines(result)) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "Traceback" not in result.stdout


# Help and rule documentation.


def test_group_help():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("scan", "rules", "explain"):
        assert command in result.stdout
    assert "Exit status" in result.stdout


def test_scan_help():
    result = invoke("scan", "--help")
    assert result.exit_code == 0
    for option in ("--trust-code", "--custom-objects", "--x-key", "--fail-on", "--format"):
        assert option in result.stdout


def test_rules_lists_codes():
    result = invoke("rules")
    assert result.exit_code == 0
    codes = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
    assert codes == sorted(set(codes))
    for code in ("ND101", "ND201", "ND301", "ND401", "ND601", "ND701"):
        assert code in codes


def test_explain_known_code():
    result = invoke("explain", "ND101")
    assert result.exit_code == 0
    assert result.stdout.startswith("ND101 overflow")
    assert "Fix:" in result.stdout


def test_explain_unknown_code():
    result = invoke("explain", "ND999")
    assert result.exit_code == 2
    assert "ND999" in result.stderr
    assert_one_error(result)


def test_cli_import_skips_tensorflow():
    code = "import sys, nandoctor.cli; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                               timeout=60, check=True)
    assert completed.stdout.split() == ["False", "False"]


# Exit statuses of `scan`.


def test_exit_0_healthy(tf):
    result = invoke("scan", sample("healthy"), sample("healthy", ".npz"))
    assert result.exit_code == 0, result.output
    assert result.stderr == ""


def test_exit_1_findings(tf):
    result = invoke("scan", sample("exp_overflow"), sample("exp_overflow", ".npz"))
    assert result.exit_code == 1, result.output
    assert "sharp_exp" in result.stdout
    assert "ND101" in result.stdout


def test_fail_on_never_exits_0(tf):
    result = invoke("scan", sample("exp_overflow"), sample("exp_overflow", ".npz"), "--fail-on", "never")
    assert result.exit_code == 0, result.output
    assert "sharp_exp" in result.stdout


@pytest.mark.parametrize("option", [
    ["--batch-size", "abc"],
    ["--fail-on", "bogus"],
    ["--format", "xml"],
    ["--no-such-option"],
])
def test_exit_2_bad_option(option):
    result = invoke("scan", sample("healthy"), *option)
    assert result.exit_code == 2
    assert_one_error(result)


def test_exit_2_batch_size_zero(tf):
    result = invoke("scan", sample("healthy"), "--batch-size", "0")
    assert result.exit_code == 2
    assert "--batch-size" in result.stderr
    assert_one_error(result)


def test_exit_3_missing_model(tmp_path):
    result = invoke("scan", tmp_path / "absent.keras")
    assert result.exit_code == 3
    assert "not found" in result.stderr
    assert_one_error(result)


def test_exit_3_untrusted_lambda(tf):
    result = invoke("scan", sample("division_by_zero"), sample("division_by_zero", ".npz"))
    assert result.exit_code == 3
    assert "'ratio'" in result.stderr
    assert "--trust-code" in result.stderr
    assert_one_error(result)
    assert result.stdout == ""


def test_exit_3_data_does_not_fit(tf):
    # The healthy model takes 4 features, but the division_by_zero data has 3.
    result = invoke("scan", sample("healthy"), sample("division_by_zero", ".npz"))
    assert result.exit_code == 3
    assert "(128, 3)" in result.stderr
    assert_one_error(result)


def test_exit_4_internal_error(tf, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("replay state corrupted")

    monkeypatch.setattr("nandoctor.scanner.scan", fail)
    result = invoke("scan", sample("healthy"))
    assert result.exit_code == 4
    assert "RuntimeError: replay state corrupted" in result.stderr
    assert "--debug" in result.stderr
    assert_one_error(result)


def test_exit_130_interrupted(tf, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("nandoctor.scanner.scan", interrupt)
    result = invoke("scan", sample("healthy"))
    assert result.exit_code == 130
    assert_one_error(result)


# JSON report.


def test_json_report_keys(tf):
    result = invoke("scan", sample("exp_overflow"), sample("exp_overflow", ".npz"), "--format", "json")
    assert result.exit_code == 1, result.output
    document = json.loads(result.stdout)
    assert set(document) == JSON_KEYS
    assert document["schema_version"] == "1"
    assert document["tool"]["name"] == "nandoctor"
    assert set(document["summary"]) == SUMMARY_KEYS
    assert document["summary"]["status"] == "faults"
    assert document["summary"]["findings"] == len(document["findings"])
    top = document["findings"][0]
    assert set(top) == FINDING_KEYS
    assert top["kind"] == "overflow"
    assert top["layer"] == "sharp_exp"
    assert top["op"] == "Exp"


def test_json_report_clean(tf):
    result = invoke("scan", sample("healthy"), sample("healthy", ".npz"), "--format", "json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert set(document) == JSON_KEYS
    assert document["summary"]["status"] == "clean"
    assert document["findings"] == []


def test_json_report_reproducible(tf):
    args = ("scan", sample("exp_overflow"), sample("exp_overflow", ".npz"), "--format", "json")
    first = invoke(*args)
    second = invoke(*args)
    assert first.exit_code == second.exit_code == 1
    assert first.stdout_bytes == second.stdout_bytes
