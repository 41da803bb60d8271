"""The terminal report, rendered with rich."""

import math

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from nandoctor.diagnosis.numbers import format_number
from nandoctor.report.labels import KIND_LABELS, short_path

_SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}
_ROLE_STYLE = {"origin": "red", "propagation": "yellow"}
_BAR_WIDTH = 24


def render(report, console, quiet=False):
    """Print the headline, one panel per finding and, unless `quiet`, the tables and notes."""
    console.print(_headline(report))
    for rank, finding in enumerate(report.findings, start=1):
        console.print(_finding_panel(rank, finding))
    if quiet:
        return
    console.print(_layer_table(report))
    if report.training:
        console.print(_training_table(report.training))
    for note in report.notes:
        console.print(Text(f"note: {note}", style="dim"))


def _headline(report):
    source = report.data["path"] or ("in-memory arrays" if report.data["format"] == "memory" else "random inputs")
    text = Text()
    text.append(f"nandoctor scan: {report.model['path']} on {source} ")
    batches = "1 batch" if report.batches == 1 else f"{report.batches} batches"
    samples = "1 sample" if report.samples == 1 else f"{report.samples} samples"
    text.append(f"({samples}, {batches}; loss: {report.loss})\n", style="dim")
    if report.clean:
        text.append("clean: no NaN or Inf created in the forward or backward pass", style="bold green")
        return text
    counts = {}
    for finding in report.findings:
        counts[finding.kind] = counts.get(finding.kind, 0) + 1
    parts = ", ".join(f"{n} {KIND_LABELS.get(kind, kind)}" for kind, n in counts.items())
    text.append(f"{len(report.findings)} finding(s): {parts}", style="bold red")
    return text


def _finding_panel(rank, finding):
    lines = Text()
    place = f"layer {finding.layer} ({finding.layer_class})" if finding.layer else (
        "data" if finding.phase == "data" else "loss")
    lines.append("where     ", style="dim")
    lines.append(f"{place}, {finding.phase} pass" if finding.phase in ("forward", "backward") else place)
    if finding.op:
        lines.append(f", op {finding.op}")
    if finding.step is not None:
        lines.append(f", training step {finding.step}")
    lines.append("\n")
    if finding.location:
        lines.append("source    ", style="dim")
        lines.append(f"{short_path(finding.location.file)}:{finding.location.line} in {finding.location.function}\n")
    lines.append("evidence  ", style="dim")
    lines.append(finding.evidence.sentence + "\n")
    if finding.propagated_to:
        shown = ", ".join(finding.propagated_to[:6])
        more = f" and {len(finding.propagated_to) - 6} more" if len(finding.propagated_to) > 6 else ""
        lines.append("spreads   ", style="dim")
        lines.append(f"{shown}{more}\n")
    lines.append("fix       ", style="dim")
    lines.append(finding.fix, style="green")
    if finding.fix_verified is not None:
        before, after = finding.fix_check["before"], finding.fix_check["after"]
        status = "verified" if finding.fix_verified else "NOT verified"
        lines.append("\nchecked   ", style="dim")
        lines.append(f"{status} on batch {finding.fix_check['batch']}: non-finite outputs {before['outputs']} -> "
                     f"{after['outputs']}, gradients {before['gradients']} -> {after['gradients']}, loss "
                     f"{'finite' if before['loss_finite'] else 'non-finite'} -> "
                     f"{'finite' if after['loss_finite'] else 'non-finite'}",
                     style="green" if finding.fix_verified else "bold red")
    title = Text()
    title.append(f"#{rank} {finding.code} ", style=_SEVERITY_STYLE.get(finding.severity, ""))
    title.append(f"{KIND_LABELS.get(finding.kind, finding.kind)} ({finding.severity})")
    return Panel(lines, title=title, title_align="left", expand=True)


def _layer_table(report):
    table = Table(title="Magnitude through the network (max |x| of finite values)", title_justify="left")
    table.add_column("layer")
    table.add_column("class")
    table.add_column("output max|x|", justify="right")
    table.add_column("output non-finite", justify="right")
    table.add_column("gradient max|x|", justify="right")
    table.add_column("gradient non-finite", justify="right")
    table.add_column("role")
    for row in report.layers:
        style = _ROLE_STYLE.get(row.role)
        table.add_row(row.name, row.layer_class, _number(row.output_absmax), str(row.output_nonfinite),
                      _number(row.gradient_absmax), str(row.gradient_nonfinite), row.role, style=style)
    return Group(table)


def _training_table(training):
    """Render the loss and gradient norm per replayed step, with a log-scale bar."""
    optimizer = training["optimizer"]
    title = (f"Training replay: {training['steps_run']} of {training['steps_requested']} steps, "
             f"{optimizer['class']} at learning rate {optimizer['learning_rate']:g}"
             if optimizer.get("learning_rate") is not None else
             f"Training replay: {training['steps_run']} of {training['steps_requested']} steps, {optimizer['class']}")
    table = Table(title=title, title_justify="left")
    table.add_column("step", justify="right")
    table.add_column("loss", justify="right")
    table.add_column("gradient norm", justify="right")
    table.add_column("log10 gradient norm")
    table.add_column("max update/weight", justify="right")
    norms = [row["grad_norm"] for row in training["per_step"] if math.isfinite(row["grad_norm"]) and row["grad_norm"] > 0]
    low = math.log10(min(norms)) if norms else 0.0
    high = math.log10(max(norms)) if norms else 1.0
    for row in training["per_step"]:
        broke = row["step"] == training.get("break_step")
        table.add_row(str(row["step"]), _number(row["loss"]), _number(row["grad_norm"]),
                      _bar(row["grad_norm"], low, high), _number(row["max_update_ratio"]),
                      style="red" if broke else None)
    return table


def _bar(value, low, high):
    if not math.isfinite(value):
        return "non-finite"
    if value <= 0:
        return ""
    span = max(high - low, 1e-12)
    filled = 1 + round((math.log10(value) - low) / span * (_BAR_WIDTH - 1))
    return "#" * filled


def _number(value):
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return format_number(value)  # "nan", "inf" or "-inf"
    return f"{value:.3g}"
