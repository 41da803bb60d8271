"""Decide what a run reports and how it exits: rule selection, suppressions, exit status.

Pure functions over findings, shared by every output format.
"""

from dataclasses import dataclass, field

from nandoctor.errors import EXIT_FINDINGS, EXIT_OK

SEVERITY_RANK = {"error": 0, "warning": 1, "info": 2}
FAIL_ON = ("error", "warning", "never")


@dataclass
class ModelResult:
    """The outcome of scanning one model in a run."""

    model: str
    report: object | None = None
    """The `ScanReport`, or None when the scan failed."""
    error: object | None = None
    """The `NandoctorError` that stopped the scan, or None."""
    suppressed: list = field(default_factory=list)
    """(finding, suppression) pairs left out of the report."""


def code_selected(code, select=(), ignore=()):
    """Return whether a rule code passes `--select` and `--ignore`.

    Both take codes or code prefixes (`ND1` matches every overflow rule). The
    longest matching prefix wins, so `--select ND1 --ignore ND101` keeps ND102.
    An empty `select` selects every code.
    """
    code = code.upper()
    # Length of the longest matching prefix: 0 selects all when `select` is empty, -1 is no match.
    chosen = max((len(p) for p in select if code.startswith(p.upper())), default=-1 if select else 0)
    dropped = max((len(p) for p in ignore if code.startswith(p.upper())), default=-1)
    return chosen >= 0 and chosen > dropped


def check_codes(codes, option):
    """Raise a usage error for a code or prefix that matches no rule, so a typo cannot hide findings."""
    from nandoctor.diagnosis.registry import RULES
    from nandoctor.errors import UsageError

    for code in codes:
        if not any(known.startswith(code.upper()) for known in RULES):
            raise UsageError(f"{option} {code}: no rule code starts with it; run `nandoctor rules` for the list.")


def filter_findings(findings, select=(), ignore=(), suppressions=()):
    """Split findings into those reported and those suppressed.

    Returns:
        (kept, suppressed), `suppressed` as (finding, suppression) pairs.
        Findings not selected by code are dropped from both.
    """
    kept = []
    suppressed = []
    for finding in findings:
        if not code_selected(finding.code, select, ignore):
            continue
        match = next((s for s in suppressions if s.matches(finding)), None)
        if match is None:
            kept.append(finding)
        else:
            suppressed.append((finding, match))
    return kept, suppressed


def exit_status(results, fail_on="error"):
    """Return one exit status for a run over several models.

    The highest status wins: a model that could not be scanned (its error's
    exit code, 3 or 4) over findings at or above `fail_on` (1) over none (0).
    """
    status = EXIT_OK
    for result in results:
        if result.error is not None:
            status = max(status, result.error.exit_code)
        elif fail_on != "never" and any(
            SEVERITY_RANK.get(f.severity, 9) <= SEVERITY_RANK[fail_on] for f in result.report.findings
        ):
            status = max(status, EXIT_FINDINGS)
    return status
