"""The JUnit XML report, for CI test dashboards.

One test case per scanned model. A model fails when it has findings at or above
the failure severity; the findings below it go to the test case's standard output.
"""

import re
import xml.etree.ElementTree as ET

from nandoctor import __version__
from nandoctor.diagnosis.findings import SEVERITY_ORDER
from nandoctor.report.labels import data_path, model_path, short_path

FAIL_ON_CHOICES = ("error", "warning", "never")
_PHASE_LABELS = {"data": "input data", "weights": "saved weights", "forward": "forward pass",
                 "backward": "backward pass", "training": "training replay"}

# XML 1.0 allows tab, line feed, carriage return and the characters from U+0020 on,
# except surrogates and U+FFFE, U+FFFF.
_INVALID_XML_CHARS = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def render(reports, *, fail_on="error", unscanned=()):
    """Render scan reports as a JUnit XML document with one test suite.

    Args:
        reports: A list of `ScanReport`, one per scanned model. Test cases come
            in order of model path, then data path.
        fail_on: Lowest severity that fails a model's test case: "error"
            (default), "warning" or "never", as the `--fail-on` option.

    Returns:
        The XML document as text, with an XML declaration and a final newline.

    Raises:
        ValueError: `fail_on` is not one of `FAIL_ON_CHOICES`.
    """
    if fail_on not in FAIL_ON_CHOICES:
        raise ValueError(f"fail_on must be one of {', '.join(FAIL_ON_CHOICES)}, received {fail_on!r}.")
    ordered = sorted(reports, key=lambda report: (model_path(report), data_path(report)))

    suite = ET.Element("testsuite", name="nandoctor")
    properties = ET.SubElement(suite, "properties")
    ET.SubElement(properties, "property", name="nandoctor.version", value=__version__)
    ET.SubElement(properties, "property", name="fail_on", value=fail_on)
    model_paths = [model_path(report) for report in ordered]
    failures = 0
    for report in ordered:
        # A model scanned on several data files gets one test case per data file.
        name = model_path(report)
        if model_paths.count(name) > 1:
            name = f"{name} on {data_path(report)}"
        failures += _add_testcase(suite, report, name, fail_on)
    # A model that could not be scanned is a test case in error, not a pass.
    for path, message in sorted(unscanned):
        case = ET.SubElement(suite, "testcase", classname="nandoctor", name=short_path(path))
        ET.SubElement(case, "error", message=message, type="not scanned")
    tests = len(ordered) + len(unscanned)
    # No `time` attributes, so that two runs on the same inputs give the same bytes.
    suite.set("tests", str(tests))
    suite.set("failures", str(failures))
    suite.set("errors", str(len(unscanned)))
    suite.set("skipped", "0")

    root = ET.Element("testsuites", name="nandoctor", tests=str(tests), failures=str(failures),
                      errors=str(len(unscanned)))
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _add_testcase(suite, report, name, fail_on):
    """Add the model's test case to `suite` and return 1 if it fails, else 0."""
    case = ET.SubElement(suite, "testcase", classname="nandoctor", name=_xml_text(name))
    failing = [finding for finding in report.findings if _fails(finding, fail_on)]
    passing = [finding for finding in report.findings if not _fails(finding, fail_on)]

    if failing:
        failure = ET.SubElement(case, "failure", message=_xml_text(_count_message(failing)),
                                type=",".join(sorted({finding.code for finding in failing})))
        failure.text = _xml_text("\n".join(_finding_line(finding) for finding in failing))

    output = [_scan_line(report)]
    if not report.findings:
        output.append("clean: no NaN or Inf created in the forward or backward pass")
    output.extend(_finding_line(finding) for finding in passing)
    output.extend(f"note: {note}" for note in report.notes)
    ET.SubElement(case, "system-out").text = _xml_text("\n".join(output))
    return 1 if failing else 0


def _fails(finding, fail_on):
    if fail_on == "never":
        return False
    return SEVERITY_ORDER.get(finding.severity, 9) <= SEVERITY_ORDER[fail_on]


def _count_message(findings):
    """Summarize findings as their count, then the count of each kind in rank order."""
    kinds = {}
    for finding in findings:
        kinds[finding.kind] = kinds.get(finding.kind, 0) + 1
    severities = {}
    for finding in findings:
        severities[finding.severity] = severities.get(finding.severity, 0) + 1
    by_severity = ", ".join(f"{severities[name]} {name}" for name in sorted(severities, key=SEVERITY_ORDER.get))
    by_kind = ", ".join(f"{count} {kind}" for kind, count in kinds.items())
    return f"{len(findings)} finding(s) ({by_severity}): {by_kind}"


def _scan_line(report):
    return (f"scanned {model_path(report)} on {data_path(report)}: {report.samples} samples, "
            f"{report.batches} batch(es), loss {report.loss}")


def _finding_line(finding):
    """Write one finding as a line: code, severity, place, op, source, evidence and fix."""
    if finding.layer:
        place = f"layer {finding.layer}"
    elif finding.phase == "data":
        place = "data"
    else:
        place = "loss"
    parts = [f"{finding.code} {finding.kind} ({finding.severity})", place,
             _PHASE_LABELS.get(finding.phase, finding.phase)]
    if finding.op:
        parts.append(f"op {finding.op}")
    if finding.step is not None:
        parts.append(f"training step {finding.step}")
    if finding.location:
        parts.append(f"at {short_path(finding.location.file)}:{finding.location.line} in {finding.location.function}")
    line = ", ".join(parts) + f": {finding.evidence.sentence}. Fix: {finding.fix}"
    return " ".join(line.split())


def _xml_text(text):
    """Drop the characters that XML 1.0 cannot carry, such as NUL and other control characters."""
    return _INVALID_XML_CHARS.sub("", text)
