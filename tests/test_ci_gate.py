"""The scan command as a CI gate: several outputs, configuration, selection and suppressions."""

import json
import os
import xml.etree.ElementTree as ElementTree

import pytest
from click.testing import CliRunner

from nandoctor.cli import cli
from tests.conftest import REPO, sample

SARIF_SCHEMA = os.path.join(REPO, "..", "shared", "schemas", "sarif-schema-2.1.0.json")


def run(args, cwd=None):
    runner = CliRunner()
    if cwd is None:
        return runner.invoke(cli, ["scan"] + args)
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        return runner.invoke(cli, ["scan"] + args)
    finally:
        os.chdir(previous)


def test_text_stdout_with_sarif_and_junit_files(tf, tmp_path):
    sarif_path = tmp_path / "out.sarif"
    junit_path = tmp_path / "out.xml"
    result = run([sample("exp_overflow"), sample("exp_overflow", ".npz"),
                  "--output", str(sarif_path), "--output", f"junit:{junit_path}"])
    assert result.exit_code == 1
    assert "ND101" in result.stdout
    log = json.loads(sarif_path.read_text())
    assert log["version"] == "2.1.0"
    assert [r["ruleId"] for r in log["runs"][0]["results"]] == ["ND101"]
    suite = ElementTree.parse(junit_path).getroot().find("testsuite")
    assert len(suite.findall("testcase")) == 1
    assert suite.find("testcase").find("failure") is not None


@pytest.mark.skipif(not os.path.exists(SARIF_SCHEMA), reason=f"SARIF schema not found at {SARIF_SCHEMA}")
def test_sarif_file_validates(tf, tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    path = tmp_path / "out.sarif"
    run([sample("sqrt_gradient"), sample("sqrt_gradient", ".npz"), "--output", f"sarif:{path}"])
    with open(SARIF_SCHEMA) as handle:
        schema = json.load(handle)
    jsonschema.validators.validator_for(schema)(schema).validate(json.loads(path.read_text()))


def test_markdown_and_html_outputs(tf, tmp_path):
    result = run([sample("healthy"), sample("healthy", ".npz"), "--format", "markdown",
                  "--output", str(tmp_path / "report.html")])
    assert result.exit_code == 0
    assert result.stdout.startswith("#")
    page = (tmp_path / "report.html").read_text()
    assert "<svg" in page
    assert "http://" not in page
    assert "https://" not in page


def test_unknown_output_extension(tf, tmp_path):
    result = run([sample("healthy"), "--output", str(tmp_path / "report.pdf")])
    assert result.exit_code == 2
    assert "cannot tell the format" in result.stderr


def test_ignore_code_clears_exit(tf):
    result = run([sample("exp_overflow"), sample("exp_overflow", ".npz"), "--ignore", "ND1"])
    assert result.exit_code == 0
    assert "ND101" not in result.stdout


def test_select_other_code_clears_exit(tf):
    result = run([sample("exp_overflow"), sample("exp_overflow", ".npz"), "--select", "ND2,ND4"])
    assert result.exit_code == 0


def write_config(folder, text):
    (folder / "nandoctor.toml").write_text(text)


def test_config_scans_every_model(tf, tmp_path):
    write_config(tmp_path, f"""
format = "json"

[[models]]
model = "{sample('healthy')}"
data = "{sample('healthy', '.npz')}"

[[models]]
model = "{sample('exp_overflow')}"
data = "{sample('exp_overflow', '.npz')}"
""")
    result = run([], cwd=tmp_path)
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert [r["summary"]["status"] for r in document["reports"]] == ["clean", "faults"]


def test_config_suppression_with_reason(tf, tmp_path):
    write_config(tmp_path, f"""
[[models]]
model = "{sample('exp_overflow')}"
data = "{sample('exp_overflow', '.npz')}"

[[models.suppress]]
code = "ND101"
layer = "sharp_exp"
reason = "the sample overflows on purpose"
""")
    result = run(["--format", "json"], cwd=tmp_path)
    assert result.exit_code == 0
    document = json.loads(result.stdout)["reports"][0]
    assert document["findings"] == []
    assert any("the sample overflows on purpose" in note for note in document["notes"])


def test_suppression_without_reason_is_usage_error(tf, tmp_path):
    write_config(tmp_path, f"""
[[models]]
model = "{sample('exp_overflow')}"

[[models.suppress]]
code = "ND101"
""")
    result = run([], cwd=tmp_path)
    assert result.exit_code == 2
    assert "without a 'reason'" in result.stderr


def test_command_line_overrides_config(tf, tmp_path):
    write_config(tmp_path, 'fail-on = "never"\n')
    assert run([sample("exp_overflow"), sample("exp_overflow", ".npz")], cwd=tmp_path).exit_code == 0
    result = run([sample("exp_overflow"), sample("exp_overflow", ".npz"), "--fail-on", "error"], cwd=tmp_path)
    assert result.exit_code == 1


def test_config_model_error_keeps_others(tf, tmp_path):
    write_config(tmp_path, f"""
[[models]]
model = "{tmp_path / 'missing.keras'}"

[[models]]
model = "{sample('healthy')}"
""")
    result = run(["--format", "json"], cwd=tmp_path)
    assert result.exit_code == 3
    assert "model file not found" in result.stderr
    assert [r["summary"]["status"] for r in json.loads(result.stdout)["reports"]] == ["clean"]


def test_no_model_and_no_config(tf, tmp_path):
    result = run([], cwd=tmp_path)
    assert result.exit_code == 2
    assert "missing MODEL" in result.stderr


def test_quiet_hides_tables(tf):
    result = run([sample("exp_overflow"), sample("exp_overflow", ".npz"), "--quiet"])
    assert "ND101" in result.stdout
    assert "Magnitude through the network" not in result.stdout


def test_no_color_without_terminal(tf):
    result = run([sample("exp_overflow"), sample("exp_overflow", ".npz")])
    assert "\x1b[" not in result.stdout
    assert result.stderr == ""


def test_unknown_select_code_rejected(tf):
    result = run([sample("exp_overflow"), sample("exp_overflow", ".npz"), "--select", "XX9"])
    assert result.exit_code == 2
    assert "no rule code starts with it" in result.stderr


def test_ignored_findings_noted(tf):
    result = run([sample("exp_overflow"), sample("exp_overflow", ".npz"), "--ignore", "ND101"])
    assert result.exit_code == 0
    assert "left out by --select or --ignore" in result.stdout


def test_unknown_suppression_code_rejected(tf, tmp_path):
    write_config(tmp_path, f"""
[[models]]
model = "{sample('exp_overflow')}"

[[models.suppress]]
code = "ND999"
reason = "typo"
""")
    result = run([], cwd=tmp_path)
    assert result.exit_code == 2
    assert "ND999" in result.stderr


def test_output_folder_missing_fails_before_scan(tf, tmp_path):
    result = run([sample("exp_overflow"), sample("exp_overflow", ".npz"),
                  "--output", str(tmp_path / "absent" / "out.json")])
    assert result.exit_code == 2
    assert "existing folder" in result.stderr
    assert result.stdout == ""


def test_missing_config_file(tf, tmp_path):
    result = run([sample("healthy"), "--config", str(tmp_path / "nosuch.toml")])
    assert result.exit_code == 2
    assert "configuration file not found" in result.stderr


def test_unscanned_model_in_every_format(tf, tmp_path):
    write_config(tmp_path, f"""
[[models]]
model = "{tmp_path / 'missing.keras'}"

[[models]]
model = "{sample('healthy')}"
""")
    result = run(["--format", "markdown", "--output", str(tmp_path / "out.xml"),
                  "--output", str(tmp_path / "out.sarif"), "--output", str(tmp_path / "out.json")], cwd=tmp_path)
    assert result.exit_code == 3
    assert "missing.keras" in result.stdout
    assert "not scanned" in result.stdout
    suite = ElementTree.parse(tmp_path / "out.xml").getroot().find("testsuite")
    assert suite.get("errors") == "1"
    log = json.loads((tmp_path / "out.sarif").read_text())
    assert log["runs"][0]["invocations"][0]["executionSuccessful"] is False
    document = json.loads((tmp_path / "out.json").read_text())
    assert document["errors"][0]["exit_status"] == 3
    assert "model file not found" in document["errors"][0]["message"]
    if os.path.exists(SARIF_SCHEMA):
        jsonschema = pytest.importorskip("jsonschema")
        with open(SARIF_SCHEMA) as handle:
            schema = json.load(handle)
        jsonschema.validators.validator_for(schema)(schema).validate(log)
