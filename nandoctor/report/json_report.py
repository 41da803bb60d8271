"""The JSON form of a scan report. Field by field in README.md, "JSON output"."""

import dataclasses
import json
import math

from nandoctor import __version__

SCHEMA_VERSION = "1"


def to_dict(report):
    """Return the report as plain JSON types, with non-finite numbers as strings."""
    kinds = {}
    for finding in report.findings:
        kinds[finding.kind] = kinds.get(finding.kind, 0) + 1
    severities = {name: sum(f.severity == name for f in report.findings) for name in ("error", "warning", "info")}
    document = {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "nandoctor", "version": __version__},
        "model": report.model,
        "data": report.data,
        "loss": report.loss,
        "summary": {
            "status": _status(report),
            "findings": len(report.findings),
            "by_kind": kinds,
            "by_severity": severities,
            "batches": report.batches,
            "samples": report.samples,
            "interrupted": report.interrupted,
        },
        "findings": [_finding(f) for f in report.findings],
        "layers": [dataclasses.asdict(row) for row in report.layers],
        "notes": list(report.notes),
        "training": report.training,
    }
    return _clean(document)


def _status(report):
    """Return "clean", "warnings" (warnings or info only) or "faults" (at least one error)."""
    if report.clean:
        return "clean"
    return "faults" if any(f.severity == "error" for f in report.findings) else "warnings"


def dumps(report):
    """Serialize the report: sorted keys, no NaN or Infinity literals."""
    return json.dumps(to_dict(report), sort_keys=True, indent=2, allow_nan=False)


def dumps_many(reports, failures=()):
    """Serialize several reports (a run over configured models) as one document.

    `failures` are (model path, message, exit status) of models that could not be scanned.
    """
    document = {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "nandoctor", "version": __version__},
        "reports": [to_dict(report) for report in reports],
        "errors": [{"model": path, "message": message, "exit_status": status}
                   for path, message, status in failures],
    }
    return json.dumps(_clean(document), sort_keys=True, indent=2, allow_nan=False)


def _finding(finding):
    evidence = dataclasses.asdict(finding.evidence)
    evidence["shape"] = list(finding.evidence.shape) if finding.evidence.shape is not None else None
    evidence["first_sample_indices"] = list(finding.evidence.first_sample_indices)
    location = dataclasses.asdict(finding.location) if finding.location else None
    return {
        "code": finding.code,
        "rule": finding.rule,
        "kind": finding.kind,
        "severity": finding.severity,
        "phase": finding.phase,
        "layer": finding.layer,
        "layer_class": finding.layer_class,
        "op": finding.op,
        "location": location,
        "message": finding.message,
        "evidence": evidence,
        "fix": finding.fix,
        "propagated_to": list(finding.propagated_to),
        "step": finding.step,
        "repro": finding.repro,
        "fix_verified": finding.fix_verified,
        "fix_check": finding.fix_check,
    }


def _clean(value):
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return _clean(value.item())
    return value
