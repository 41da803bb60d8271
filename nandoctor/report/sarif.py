"""The SARIF 2.1.0 report, for code-scanning annotations in CI.

One run lists every rule in the registry and one result per finding. A result
points at the Python file and line of the op when the finding has a source
location (Lambda layers, custom layers and losses), so code scanning annotates
that line, and at the model file otherwise.
"""

import hashlib
import inspect
import json
import os
import pathlib
import urllib.parse

from nandoctor import __version__
from nandoctor.diagnosis.registry import RULES
from nandoctor.diagnosis.rule import DOC_SECTIONS
from nandoctor.report.labels import data_path, model_path, short_path

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA_URI = "https://raw.githubusercontent.com/oasis-tcs/sarif-spec/master/Schemata/sarif-schema-2.1.0.json"

_LEVELS = {"error": "error", "warning": "warning", "info": "note"}
_FINGERPRINT_KEY = "nandoctorFinding/v1"


def render(reports, failures=()):
    """Render scan reports as one SARIF 2.1.0 log with a single run.

    Args:
        reports: A list of `ScanReport`, one per scanned model. Results come
            in order of model path, then data path, each model's findings in
            rank order.

    Returns:
        The log as JSON text with sorted keys and a final newline.
    """
    results = []
    for report in _sorted_reports(reports):
        results.extend(_result(report, finding) for finding in report.findings)

    log = {
        "$schema": SARIF_SCHEMA_URI,
        "version": SARIF_VERSION,
        "runs": [{
            "tool": {
                "driver": {
                    "name": "nandoctor",
                    "version": __version__,
                    "semanticVersion": __version__,
                    "rules": [_rule(RULES[code]) for code in sorted(RULES)],
                },
            },
            "results": results,
        }],
    }
    if failures:
        # A model that could not be scanned fails the run instead of vanishing from it.
        log["runs"][0]["invocations"] = [{
            "executionSuccessful": False,
            "toolExecutionNotifications": [
                {"level": "error", "message": {"text": f"{short_path(path)}: {message}"}}
                for path, message in sorted(failures)
            ],
        }]
    return json.dumps(log, sort_keys=True, indent=2, allow_nan=False) + "\n"


def _sorted_reports(reports):
    return sorted(reports, key=lambda report: (model_path(report), data_path(report)))


def _rule(rule):
    sections = _doc_sections(rule.doc)
    return {
        "id": rule.code,
        "name": rule.name,
        "shortDescription": {"text": rule.summary},
        "fullDescription": {"text": " ".join(sections["What it detects"].split())},
        "help": {"text": inspect.cleandoc(rule.doc), "markdown": _help_markdown(sections)},
        "defaultConfiguration": {"level": _LEVELS[rule.severity]},
        "properties": {"kind": rule.kind, "tags": ["nandoctor", rule.kind]},
    }


def _doc_sections(doc):
    """Split a rule docstring into its `DOC_SECTIONS`, each with its body dedented."""
    sections = {}
    current = None
    for line in inspect.cleandoc(doc).splitlines():
        heading = line.rstrip().rstrip(":")
        if line.endswith(":") and heading in DOC_SECTIONS:
            current = heading
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    return {name: inspect.cleandoc("\n".join(lines)) for name, lines in sections.items()}


def _help_markdown(sections):
    parts = []
    for name in DOC_SECTIONS:
        body = sections.get(name, "")
        if name == "Example":
            body = f"```python\n{body}\n```"
        parts.append(f"**{name}**\n\n{body}")
    return "\n\n".join(parts)


def _result(report, finding):
    path = model_path(report)
    model_location = {"physicalLocation": {"artifactLocation": {"uri": _uri(report.model["path"])}}}
    if finding.location:
        primary = {
            "physicalLocation": {
                "artifactLocation": {"uri": _uri(finding.location.file)},
                "region": {"startLine": finding.location.line},
            },
        }
    else:
        # A model file is binary, so the result has no line region.
        primary = dict(model_location)
    primary["logicalLocations"] = [{
        "name": _place(finding),
        "fullyQualifiedName": f"{report.model['name']}/{_place(finding)}",
    }]

    result = {
        "ruleId": finding.code,
        "ruleIndex": sorted(RULES).index(finding.code),
        "level": _LEVELS.get(finding.severity, "warning"),
        "message": {"text": _message(report, finding)},
        "locations": [primary],
        "partialFingerprints": {_FINGERPRINT_KEY: _fingerprint(report, finding)},
        "properties": {
            "model": path,
            "data": data_path(report),
            "kind": finding.kind,
            "phase": finding.phase,
            "layer": finding.layer,
            "layerClass": finding.layer_class,
            "op": finding.op,
            "step": finding.step,
            "batch": finding.evidence.batch,
            "samplesAffected": finding.evidence.samples_affected,
            "propagatedTo": list(finding.propagated_to),
        },
    }
    if finding.location:
        result["relatedLocations"] = [dict(model_location, id=0, message={"text": "the scanned model"})]
    return result


def _place(finding):
    """Return the layer name, or "data" or "loss" for a finding outside any layer."""
    if finding.layer:
        return finding.layer
    return "data" if finding.phase == "data" else "loss"


def _message(report, finding):
    sentence = finding.evidence.sentence
    parts = [finding.message]
    if sentence:
        parts.append(sentence[0].upper() + sentence[1:].rstrip(".") + ".")
    parts.append(f"Fix: {finding.fix}")
    if finding.location:
        parts.append(f"Model: {model_path(report)}.")
    return " ".join(parts)


def _fingerprint(report, finding):
    """Hash what identifies a finding across runs: model, rule, place and op."""
    key = "\0".join(str(part) for part in (model_path(report), finding.code, finding.phase,
                                           finding.layer, finding.op))
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def _uri(path):
    """Return a URI reference for `path`: relative when inside the working directory, else `file:`.

    A path that is already relative is kept relative, as the scan received it.
    """
    if not os.path.isabs(path):
        return urllib.parse.quote(pathlib.PurePath(path).as_posix())
    try:
        relative = os.path.relpath(path)
    except ValueError:  # A path on another drive, on Windows.
        relative = os.pardir
    if relative == os.pardir or relative.startswith(os.pardir + os.sep):
        return pathlib.Path(path).as_uri()
    return urllib.parse.quote(pathlib.PurePath(relative).as_posix())
