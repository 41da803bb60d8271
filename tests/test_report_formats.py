"""The machine and visual report formats: SARIF, JUnit XML, Markdown and HTML."""

import dataclasses
import json
import os
import pathlib
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest

from nandoctor import __version__
from nandoctor.diagnosis.findings import Location
from nandoctor.diagnosis.registry import RULES
from nandoctor.report import html as html_report
from nandoctor.report import junit, markdown, sarif
from tests.conftest import REPO, sample

SARIF_SCHEMA = os.path.join(REPO, "..", "shared", "schemas", "sarif-schema-2.1.0.json")
SAMPLE_SCANS = {
    "exp_overflow": {},
    "division_by_zero": {"trust_code": True},
    "sqrt_gradient": {},
    "healthy": {},
    "lr_divergence": {"fit_steps": 20, "batch_size": 32},
}


@pytest.fixture(scope="module")
def scanned(tf):
    """Scan each sample once for the whole module, keyed by sample name."""
    from nandoctor.scanner import scan

    return {name: scan(sample(name), sample(name, ".npz"), **options) for name, options in SAMPLE_SCANS.items()}


@pytest.fixture(scope="module")
def reports(scanned):
    """Keep only the error findings of each scan.

    Tests that check exact counts and rows use these, so a rule that adds
    warnings on a sample does not change them. Tests of properties that hold
    for any findings use `scanned`.
    """
    return {name: dataclasses.replace(report, findings=[f for f in report.findings if f.severity == "error"])
            for name, report in scanned.items()}


@pytest.fixture
def in_repo(monkeypatch):
    """Run the test from the repository root, where report paths are relative."""
    monkeypatch.chdir(REPO)


def all_reports(reports):
    return list(reports.values())


def with_finding(report, **changes):
    """Return a copy of `report` whose only finding is its first, with `changes` applied."""
    return dataclasses.replace(report, findings=[dataclasses.replace(report.findings[0], **changes)])


def as_warning(report):
    """Return a copy of `report` with its finding turned into an exploding-gradient warning."""
    rule = RULES["ND502"]
    return with_finding(report, code=rule.code, rule=rule.name, kind=rule.kind, severity=rule.severity)


def reject_constant(name):
    raise ValueError(f"non-standard JSON constant {name}")


@pytest.mark.parametrize("renderer", [sarif, junit, markdown, html_report], ids=["sarif", "junit", "markdown", "html"])
def test_renderers_ignore_timings(scanned, in_repo, renderer):
    slower = [dataclasses.replace(report, timings={"load_s": 99.5, "scan_s": 1234.5}) for report in scanned.values()]
    assert renderer.render(slower) == renderer.render(all_reports(scanned))


# SARIF.


@pytest.fixture
def sarif_log(reports, in_repo):
    return json.loads(sarif.render(all_reports(reports)), parse_constant=reject_constant)


@pytest.mark.skipif(not os.path.exists(SARIF_SCHEMA), reason=f"SARIF schema not found at {SARIF_SCHEMA}")
def test_sarif_validates_against_schema(scanned, reports, in_repo):
    jsonschema = pytest.importorskip("jsonschema")
    with open(SARIF_SCHEMA, encoding="utf-8") as file:
        schema = json.load(file)
    validator_class = jsonschema.validators.validator_for(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    outside = with_finding(reports["exp_overflow"], location=Location("/elsewhere/train.py", 3, "f"))
    for batch in (all_reports(scanned), [outside, as_warning(reports["sqrt_gradient"])], []):
        log = json.loads(sarif.render(batch))
        errors = [f"{list(error.absolute_path)}: {error.message}" for error in validator.iter_errors(log)]
        assert errors == []


def test_sarif_driver_lists_every_rule(sarif_log):
    driver = sarif_log["runs"][0]["tool"]["driver"]
    assert sarif_log["version"] == "2.1.0"
    assert len(sarif_log["runs"]) == 1
    assert driver["name"] == "nandoctor"
    assert driver["version"] == __version__
    assert [rule["id"] for rule in driver["rules"]] == sorted(RULES)
    for descriptor in driver["rules"]:
        rule = RULES[descriptor["id"]]
        assert descriptor["name"] == rule.name
        assert descriptor["shortDescription"]["text"] == rule.summary
        assert descriptor["fullDescription"]["text"]
        assert "Fix" in descriptor["help"]["text"]
        assert "**Known limits**" in descriptor["help"]["markdown"]


def test_sarif_rule_levels_follow_severity(sarif_log):
    levels = {rule["id"]: rule["defaultConfiguration"]["level"]
              for rule in sarif_log["runs"][0]["tool"]["driver"]["rules"]}
    assert levels["ND101"] == "error"
    assert levels["ND502"] == "warning"
    assert levels["ND503"] == "warning"


def test_sarif_one_result_per_finding(scanned, in_repo):
    log = json.loads(sarif.render(all_reports(scanned)))
    results = log["runs"][0]["results"]
    rules = log["runs"][0]["tool"]["driver"]["rules"]
    findings = [finding for name in sorted(scanned) for finding in scanned[name].findings]
    levels = {"error": "error", "warning": "warning", "info": "note"}
    assert len(results) == len(findings)
    for result, finding in zip(results, findings):
        assert result["ruleId"] == finding.code
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
        assert result["level"] == levels[finding.severity]


def test_sarif_result_points_at_source_line(reports, sarif_log):
    finding = reports["exp_overflow"].findings[0]
    result = next(r for r in sarif_log["runs"][0]["results"]
                  if r["properties"]["model"] == "sample_models/exp_overflow.keras")
    location = result["locations"][0]
    assert location["physicalLocation"]["artifactLocation"]["uri"] == "nandoctor/sample_functions.py"
    assert location["physicalLocation"]["region"]["startLine"] == finding.location.line
    assert location["logicalLocations"][0]["name"] == "sharp_exp"
    related = result["relatedLocations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert related == "sample_models/exp_overflow.keras"


def test_sarif_result_without_source_points_at_model(sarif_log):
    result = next(r for r in sarif_log["runs"][0]["results"]
                  if r["properties"]["model"] == "sample_models/lr_divergence.keras")
    location = result["locations"][0]
    assert location["physicalLocation"]["artifactLocation"]["uri"] == "sample_models/lr_divergence.keras"
    assert "region" not in location["physicalLocation"]
    assert location["logicalLocations"][0]["name"] == "loss"
    assert result["properties"]["step"] == 3
    assert "relatedLocations" not in result


def test_sarif_message_has_evidence_and_fix(reports, sarif_log):
    finding = reports["division_by_zero"].findings[0]
    result = next(r for r in sarif_log["runs"][0]["results"] if r["ruleId"] == "ND201")
    text = result["message"]["text"]
    assert finding.message in text
    assert finding.evidence.sentence[1:] in text
    assert f"Fix: {finding.fix}" in text


def test_sarif_path_outside_cwd_is_file_uri(reports, tmp_path, monkeypatch):
    script = tmp_path / "train.py"
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    report = with_finding(reports["exp_overflow"], location=Location(str(script), 12, "scale"))
    log = json.loads(sarif.render([report]))
    uri = log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert uri == script.as_uri()


def test_sarif_relative_uri_is_percent_encoded(reports, in_repo):
    report = with_finding(reports["exp_overflow"], location=Location("my scripts/train #1.py", 5, "f"))
    log = json.loads(sarif.render([report]))
    uri = log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert uri == "my%20scripts/train%20%231.py"


def test_sarif_warning_level(reports, in_repo):
    log = json.loads(sarif.render([as_warning(reports["exp_overflow"])]))
    assert log["runs"][0]["results"][0]["level"] == "warning"


def test_sarif_is_deterministic(scanned, in_repo):
    first = sarif.render(all_reports(scanned))
    assert sarif.render(list(reversed(all_reports(scanned)))) == first
    assert sarif.render(all_reports(scanned)) == first


def test_sarif_clean_run_has_no_results(reports, in_repo):
    log = json.loads(sarif.render([reports["healthy"]]))
    assert log["runs"][0]["results"] == []
    assert len(log["runs"][0]["tool"]["driver"]["rules"]) == len(RULES)


# JUnit XML.


def parse_junit(text):
    root = ET.fromstring(text.encode("utf-8"))
    suites = root.findall("testsuite")
    assert root.tag == "testsuites"
    assert len(suites) == 1
    return suites[0]


def find_testcase(suite, name):
    return next(case for case in suite.findall("testcase") if case.get("name") == name)


def test_junit_one_testcase_per_model(reports, in_repo):
    suite = parse_junit(junit.render(all_reports(reports)))
    cases = suite.findall("testcase")
    assert suite.get("name") == "nandoctor"
    assert [case.get("name") for case in cases] == sorted(f"sample_models/{name}.keras" for name in SAMPLE_SCANS)
    assert {case.get("classname") for case in cases} == {"nandoctor"}
    assert suite.get("tests") == str(len(reports))
    assert suite.get("failures") == str(len(reports) - 1)


def test_junit_path_outside_cwd_stays_absolute(reports, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    suite = parse_junit(junit.render([reports["healthy"]]))
    assert suite.find("testcase").get("name") == sample("healthy")


def test_junit_error_finding_fails(reports, in_repo):
    finding = reports["exp_overflow"].findings[0]
    suite = parse_junit(junit.render(all_reports(reports)))
    failure = find_testcase(suite, "sample_models/exp_overflow.keras").find("failure")
    assert failure is not None
    assert failure.get("message") == "1 finding(s) (1 error): 1 overflow"
    assert failure.get("type") == "ND101"
    line = failure.text.splitlines()[0]
    for part in ("ND101", "layer sharp_exp", "op Exp", "nandoctor/sample_functions.py:17",
                 finding.evidence.sentence, finding.fix):
        assert part in line


def test_junit_clean_model_passes(reports, in_repo):
    suite = parse_junit(junit.render(all_reports(reports)))
    case = find_testcase(suite, "sample_models/healthy.keras")
    assert case.find("failure") is None
    assert "clean" in case.find("system-out").text


def test_junit_warnings_go_to_system_out(reports, in_repo):
    suite = parse_junit(junit.render([as_warning(reports["exp_overflow"])]))
    case = suite.find("testcase")
    assert case.find("failure") is None
    assert suite.get("failures") == "0"
    assert "ND502 exploding_gradient (warning)" in case.find("system-out").text


def test_junit_fail_on_warning(reports, in_repo):
    suite = parse_junit(junit.render([as_warning(reports["exp_overflow"])], fail_on="warning"))
    failure = suite.find("testcase").find("failure")
    assert failure is not None
    assert failure.get("message") == "1 finding(s) (1 warning): 1 exploding_gradient"


def test_junit_fail_on_never(reports, in_repo):
    suite = parse_junit(junit.render(all_reports(reports), fail_on="never"))
    assert suite.get("failures") == "0"
    assert all(case.find("failure") is None for case in suite.findall("testcase"))


def test_junit_rejects_unknown_fail_on(reports):
    with pytest.raises(ValueError, match="fail_on"):
        junit.render(all_reports(reports), fail_on="fatal")


def test_junit_drops_control_characters(reports, in_repo):
    report = with_finding(reports["exp_overflow"], layer="bad\x00layer\x1b")
    failure = parse_junit(junit.render([report])).find("testcase").find("failure")
    assert "layer badlayer" in failure.text


def test_junit_same_model_on_two_data_files(reports, in_repo):
    report = reports["healthy"]
    other = dataclasses.replace(report, data=dict(report.data, path="other.npz"))
    suite = parse_junit(junit.render([report, other]))
    names = [case.get("name") for case in suite.findall("testcase")]
    assert names == ["sample_models/healthy.keras on other.npz",
                     "sample_models/healthy.keras on sample_models/healthy.npz"]


def test_junit_is_deterministic(scanned, in_repo):
    first = junit.render(all_reports(scanned))
    assert junit.render(list(reversed(all_reports(scanned)))) == first
    assert "time=" not in first


# Markdown.


def split_row(line):
    """Split a table row on the pipes that are not backslash-escaped."""
    assert line.startswith("| ")
    assert line.endswith(" |")
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line[1:-1])]


def table_rows(text, model_path):
    """Return the header and finding rows of the table under a model's headline."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"### `{model_path}`"))
    rows = []
    for line in lines[start + 1:]:
        if line.startswith("### "):
            break
        if line.startswith("| "):
            rows.append(split_row(line))
    return rows


def test_markdown_headline_per_model(reports):
    text = markdown.render(all_reports(reports))
    headlines = [line for line in text.splitlines() if line.startswith("### ")]
    assert len(headlines) == len(reports)
    assert "### `sample_models/healthy.keras`: clean, no NaN or Inf created" in headlines
    assert "### `sample_models/exp_overflow.keras`: 1 finding(s), 1 error (1 overflow)" in headlines
    assert "5 model(s) scanned, 4 with findings (4 errors)." in text


def test_markdown_findings_table(reports, in_repo):
    rows = table_rows(markdown.render(all_reports(reports)), "sample_models/exp_overflow.keras")
    header, separator, finding = rows
    assert header == ["#", "code", "severity", "kind", "layer", "op", "source", "evidence", "fix"]
    assert len(separator) == len(header)
    assert len(finding) == len(header)
    assert finding[:6] == ["1", "ND101", "error", "`overflow`", "`sharp_exp` (Lambda)", "`Exp`"]
    assert finding[6] == "`nandoctor/sample_functions.py:17`"
    assert "float32 overflows above 88.72" in finding[7]
    assert "`tf.exp(tf.clip_by_value(z, -43, 43))`" in finding[8]


def test_markdown_clean_model_has_no_table(reports):
    assert table_rows(markdown.render([reports["healthy"]]), "sample_models/healthy.keras") == []


def test_markdown_escapes_pipes_and_newlines(reports, in_repo):
    report = with_finding(reports["exp_overflow"], layer="a|b\nc", fix="Use `x | y` here.\nThen <retrain>.")
    text = markdown.render([report])
    rows = table_rows(text, "sample_models/exp_overflow.keras")
    finding = rows[2]
    assert len(finding) == len(rows[0])
    assert finding[4] == "`a\\|b c` (Lambda)"
    assert finding[8] == "Use `x \\| y` here.<br>Then \\<retrain\\>."


def test_markdown_training_line(reports):
    text = markdown.render([reports["lr_divergence"]])
    assert "Training replay: 4 of 20 step(s), broke at step 3 (loss)." in text
    row = table_rows(text, "sample_models/lr_divergence.keras")[2]
    assert row[4] == "loss"
    assert row[6] == ""


def test_markdown_is_deterministic(scanned, in_repo):
    first = markdown.render(all_reports(scanned))
    assert markdown.render(list(reversed(all_reports(scanned)))) == first


# HTML.


class TagCollector(HTMLParser):
    """Collect start tags with their attributes, and check that nothing is left open."""

    VOID = {"meta", "br", "hr", "img", "input", "link"}

    def __init__(self):
        super().__init__()
        self.tags = []
        self.open = []
        self.text = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1] if self.open else None}>"
        self.open.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse_html(text):
    parser = TagCollector()
    parser.feed(text)
    parser.close()
    assert parser.open == []
    return parser


def elements(parser, tag, css_class=None):
    return [attrs for name, attrs in parser.tags
            if name == tag and (css_class is None or css_class in attrs.get("class", "").split())]


@pytest.fixture
def html_page(reports, in_repo):
    return html_report.render(all_reports(reports))


def test_html_loads_nothing_external(scanned, in_repo):
    html_page = html_report.render(all_reports(scanned))
    assert re.search(r"https?://", html_page) is None
    parser = parse_html(html_page)
    assert elements(parser, "script") == []
    assert elements(parser, "link") == []
    assert elements(parser, "img") == []
    for tag, attrs in parser.tags:
        assert "src" not in attrs, tag
        assert attrs.get("href", "#").startswith("#"), tag
    assert "url(" not in html_page
    assert "@import" not in html_page


def test_html_has_magnitude_chart_per_model(reports, html_page):
    parser = parse_html(html_page)
    ids = [attrs["id"] for attrs in elements(parser, "svg")]
    # Models come in path order, so lr_divergence, the one with a training replay, is the fourth.
    assert ids == ["magnitude-1", "magnitude-2", "magnitude-3", "magnitude-4", "training-4", "magnitude-5"]


def test_html_chart_points_per_layer(reports, in_repo):
    report = reports["division_by_zero"]
    parser = parse_html(html_report.render([report]))
    assert len(elements(parser, "circle", "output")) == len(report.layers) + 1  # One more in the legend.
    assert len(elements(parser, "circle", "gradient")) == len(report.layers) + 1
    assert len(elements(parser, "rect", "band-origin")) == 2  # The origin layer and the legend swatch.
    assert len(elements(parser, "rect", "band-propagation")) == 3


def test_html_marks_origin(reports, in_repo):
    page = html_report.render([reports["exp_overflow"]])
    parser = parse_html(page)
    assert len(elements(parser, "text", "marker-label")) == 1
    assert ">origin</text>" in page
    # Both layers had non-finite outputs and gradients, so each point gets a ring.
    assert len(elements(parser, "circle", "ring")) == 4 + 1


def test_html_training_chart(reports, in_repo):
    page = html_report.render([reports["lr_divergence"]])
    parser = parse_html(page)
    assert [attrs["id"] for attrs in elements(parser, "svg")] == ["magnitude-1", "training-1"]
    # Step 3 has an infinite loss and a NaN gradient norm: one cross in each panel, one in the legend.
    assert len(elements(parser, "path", "cross")) == 3
    assert "NaN/Inf" in page
    assert ">break</text>" in page
    assert "loss (log)" in page


def test_html_negative_loss_uses_linear_axis(reports, in_repo):
    report = reports["lr_divergence"]
    rows = [dict(row, loss=-1.0 - row["step"]) for row in report.training["per_step"]]
    page = html_report.render([dataclasses.replace(report, training=dict(report.training, per_step=rows))])
    assert ">loss</text>" in page
    assert "loss (log)" not in page
    assert ">-4</text>" in page


def test_html_zero_gradient_lane(reports, in_repo):
    report = reports["healthy"]
    layers = [dataclasses.replace(report.layers[0], gradient_absmax=0.0)] + report.layers[1:]
    page = html_report.render([dataclasses.replace(report, layers=layers)])
    assert '>0</text>' in page


def test_html_escapes_report_text(reports, in_repo):
    hostile = "<script>alert(1)</script>"
    report = with_finding(reports["exp_overflow"], layer=hostile, fix=f"Rename {hostile} & retry.")
    report.layers = [dataclasses.replace(row, name=hostile) for row in report.layers]
    page = html_report.render([report])
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    parse_html(page)


def test_html_shows_findings(reports, html_page):
    finding = reports["sqrt_gradient"].findings[0]
    parser = parse_html(html_page)
    text = " ".join(" ".join(parser.text).split())
    assert len(elements(parser, "article", "finding")) == 4
    assert "#1 ND401 infinite gradient (error)" in text
    assert finding.evidence.sentence in text
    assert "nandoctor/sample_functions.py:23" in text


def test_html_is_deterministic(scanned, in_repo):
    first = html_report.render(all_reports(scanned))
    assert html_report.render(list(reversed(all_reports(scanned)))) == first
    coordinates = re.findall(r' (?:c?[xy][12]?|points|d)="([^"]*)"', first)
    assert coordinates
    assert not any("nan" in value or "inf" in value for value in coordinates)


def test_html_empty_run(in_repo):
    page = html_report.render([])
    assert "0 model(s) scanned, all clean" in page
    parse_html(page)


def test_html_file_paths_stay_relative(scanned, in_repo):
    page = html_report.render(all_reports(scanned))
    assert str(pathlib.Path(REPO)) not in page
