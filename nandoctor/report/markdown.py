"""The Markdown report, for `$GITHUB_STEP_SUMMARY` and pull-request comments.

GitHub-flavoured Markdown: a headline per model, then a table of its findings.
Text from the report is escaped so that a `|` or a line break in a layer name,
an evidence sentence or a fix cannot end a table cell or row.
"""

import re

from nandoctor.report.labels import data_path, model_path, short_path

_COLUMNS = ("#", "code", "severity", "kind", "layer", "op", "source", "evidence", "fix")
_SEVERITIES = ("error", "warning", "info")
# A code span: a run of backticks, then text up to the next run of the same length.
_CODE_SPAN = re.compile(r"(`+)(.+?)(?<!`)\1(?!`)", re.DOTALL)
# Characters that start Markdown or HTML syntax inside a table cell.
_SPECIAL = re.compile(r"([\\`*_\[\]<>|~#&!])")


def render(reports, failures=()):
    """Render scan reports as GitHub-flavoured Markdown.

    Args:
        reports: A list of `ScanReport`, one per scanned model, shown in order of
            model path, then data path.
        failures: (model path, error message) for models that could not be scanned.

    Returns:
        The Markdown text, ending with a newline.
    """
    ordered = sorted(reports, key=lambda report: (model_path(report), data_path(report)))
    lines = ["## nandoctor", "", _summary_line(ordered)]
    if failures:
        lines.append("")
        lines.append(f"**{len(failures)} model(s) could not be scanned.**")
    for path, message in sorted(failures):
        lines.extend(["", f"### {_code(short_path(path))}: not scanned", "", _prose(message)])
    for report in ordered:
        lines.append("")
        lines.extend(_model_section(report))
    return "\n".join(lines) + "\n"


def _summary_line(reports):
    faulty = sum(not report.clean for report in reports)
    counts = _describe_severities([finding for report in reports for finding in report.findings])
    scanned = f"{len(reports)} model(s) scanned"
    if not faulty:
        return f"{scanned}, all clean."
    return f"{scanned}, {faulty} with findings ({counts})."


def _model_section(report):
    """Write the headline, the scan settings, the findings table and the notes of one model."""
    lines = [f"### {_code(model_path(report))}: {_headline(report)}", ""]
    lines.append(f"Scanned on {_code(data_path(report))}: {report.samples} samples, {report.batches} batch(es), "
                 f"loss {_code(report.loss)}.")
    if report.training:
        lines.append("")
        lines.append(_training_line(report.training))
    if report.findings:
        lines.append("")
        lines.append(_row(_COLUMNS))
        lines.append(_row(["---:"] + ["---"] * (len(_COLUMNS) - 1)))
        for rank, finding in enumerate(report.findings, start=1):
            lines.append(_row(_finding_cells(rank, finding)))
    if report.notes:
        lines.append("")
        lines.extend(f"- {_prose(note)}" for note in report.notes)
    return lines


def _headline(report):
    if report.clean:
        return "clean, no NaN or Inf created"
    kinds = {}
    for finding in report.findings:
        kinds[finding.kind] = kinds.get(finding.kind, 0) + 1
    by_severity = _describe_severities(report.findings)
    by_kind = ", ".join(f"{count} {kind}" for kind, count in kinds.items())
    return f"{len(report.findings)} finding(s), {by_severity} ({by_kind})"


def _training_line(training):
    steps = f"Training replay: {training['steps_run']} of {training['steps_requested']} step(s)"
    if training.get("break_step") is None:
        return steps + ", no step turned non-finite."
    reason = f" ({training['break_reason']})" if training.get("break_reason") else ""
    return f"{steps}, broke at step {training['break_step']}{reason}."


def _finding_cells(rank, finding):
    if finding.layer:
        layer = _code(finding.layer) + (f" ({_prose(finding.layer_class)})" if finding.layer_class else "")
    else:
        layer = "data" if finding.phase == "data" else "loss"
    source = ""
    if finding.location:
        source = _code(f"{short_path(finding.location.file)}:{finding.location.line}")
    return [
        str(rank),
        finding.code,
        finding.severity,
        _code(finding.kind),
        layer,
        _code(finding.op) if finding.op else "",
        source,
        _prose(finding.evidence.sentence),
        _prose(finding.fix),
    ]


def _row(cells):
    return "| " + " | ".join(cells) + " |"


def _describe_severities(findings):
    """Count findings by severity as "2 errors, 1 warning", leaving out the zero counts."""
    parts = []
    for name in _SEVERITIES:
        count = sum(finding.severity == name for finding in findings)
        if count:
            parts.append(f"{count} {name}" + ("" if count == 1 else "s"))
    return ", ".join(parts)


def _code(text):
    """Write `text` as an inline code span that is safe inside a table cell."""
    text = " ".join(str(text).split())
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    padding = " " if text.startswith("`") or text.endswith("`") else ""
    # GFM splits table cells on `|` even inside code spans, so the pipe is escaped there too.
    return f"{fence}{padding}{text.replace('|', chr(92) + '|')}{padding}{fence}"


def _prose(text):
    """Escape free text for a table cell, keeping its `code spans` as code.

    Line breaks become `<br>`, and Markdown and HTML characters outside code
    spans are backslash-escaped, so a layer named `<b>` shows as written.
    """
    parts = []
    for paragraph in str(text).splitlines() or [""]:
        pieces = []
        position = 0
        for match in _CODE_SPAN.finditer(paragraph):
            pieces.append(_SPECIAL.sub(r"\\\1", paragraph[position:match.start()]))
            pieces.append(_code(match.group(2).strip()))
            position = match.end()
        pieces.append(_SPECIAL.sub(r"\\\1", paragraph[position:]))
        parts.append("".join(pieces))
    return "<br>".join(parts)

