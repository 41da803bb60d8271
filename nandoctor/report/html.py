"""The HTML report: one self-contained page with findings and inline SVG charts.

The page loads nothing: no scripts, fonts, images or style sheets from files or
the network, and its Content-Security-Policy forbids them. Per model it shows the
findings, a log-scale chart of the per-layer max |x| of outputs and gradients
with the origin layers marked, the per-layer table, and with a training replay a
chart of the loss and gradient norm per step. All report text is HTML-escaped.
"""

import html
import math
import re

from nandoctor import __version__
from nandoctor.diagnosis.registry import RULES
from nandoctor.report.labels import KIND_LABELS, data_path, model_path, short_path

_SEVERITIES = ("error", "warning", "info")
_CODE_SPAN = re.compile(r"`([^`]+)`")

# Chart geometry, in SVG user units. The SVG scales to the page width.
_WIDTH = 880
_LEFT = 78
_RIGHT = 24
_PANEL_HEIGHT = 220
_LEGEND_HEIGHT = 34
_LANE = 28
"""Height of the extra lanes above and below a log axis for non-finite and zero values."""
_MARKER_LABEL_HEIGHT = 16
_MAX_X_LABELS = 32
_LABEL_CHARS = 18

_STYLE = """
:root { color-scheme: light; --fg: #1d232b; --muted: #5b6672; --line: #d6dce3; --error: #c62828;
        --warning: #b26a00; --ok: #2e7d32; --output: #1f63b5; --gradient: #d9730d;
        --loss: #6a3fb5; --origin: #fbe0e0; --propagation: #fff1d6; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 32px 48px; font: 15px/1.5 system-ui, -apple-system, "Segoe UI",
       Roboto, "Helvetica Neue", Arial, sans-serif; color: var(--fg); background: #fff; }
main { max-width: 1120px; margin: 0 auto; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 40px 0 4px; padding-top: 16px; border-top: 2px solid var(--line);
     word-break: break-all; }
h2 .mono { font-size: 18px; }
h3 { font-size: 16px; margin: 24px 0 8px; }
code, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "Liberation Mono", monospace;
              font-size: 13px; }
code { background: #f1f3f6; padding: 1px 4px; border-radius: 3px; }
.muted { color: var(--muted); }
.badge { display: inline-block; padding: 1px 10px; border-radius: 10px; font-weight: 600; font-size: 13px;
         color: #fff; vertical-align: middle; }
.badge.error { background: var(--error); }
.badge.warning { background: var(--warning); }
.badge.info { background: var(--muted); }
.badge.clean { background: var(--ok); }
.finding { border: 1px solid var(--line); border-left: 5px solid var(--muted); border-radius: 4px;
           padding: 8px 14px; margin: 10px 0; }
.finding.error { border-left-color: var(--error); }
.finding.warning { border-left-color: var(--warning); }
.finding h4 { margin: 0 0 6px; font-size: 15px; }
.finding dl { display: grid; grid-template-columns: 90px 1fr; gap: 2px 12px; margin: 0; }
.finding dt { color: var(--muted); }
.finding dd { margin: 0; overflow-wrap: anywhere; }
.fix { color: var(--ok); }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border-bottom: 1px solid var(--line); padding: 3px 10px; text-align: left; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.origin td { background: var(--origin); }
tr.propagation td { background: var(--propagation); }
tr.break td { background: var(--origin); }
figure { margin: 12px 0; }
figcaption { color: var(--muted); font-size: 13px; }
svg.chart { width: 100%; height: auto; max-width: 880px; display: block; }
svg.chart text { font: 12px system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; fill: var(--fg); }
svg.chart .axis { stroke: #8a949e; stroke-width: 1; }
svg.chart .grid { stroke: #e7ebef; stroke-width: 1; }
svg.chart .tick { fill: var(--muted); }
svg.chart .series { fill: none; stroke-width: 2; }
svg.chart .output { stroke: var(--output); }
svg.chart .gradient { stroke: var(--gradient); stroke-dasharray: 6 4; }
svg.chart .loss { stroke: var(--loss); }
svg.chart .point.output, svg.chart .swatch-point.output { fill: var(--output); }
svg.chart .point.gradient, svg.chart .swatch-point.gradient { fill: var(--gradient); }
svg.chart .point.loss, svg.chart .swatch-point.loss { fill: var(--loss); }
svg.chart .point { stroke: #fff; stroke-width: 1; }
svg.chart .ring { fill: none; stroke: var(--error); stroke-width: 2; }
svg.chart .cross { stroke: var(--error); stroke-width: 2.5; }
svg.chart .band-origin { fill: var(--origin); }
svg.chart .band-propagation { fill: var(--propagation); }
svg.chart .marker-line { stroke: var(--error); stroke-width: 1.5; stroke-dasharray: 4 3; }
svg.chart text.marker-label { fill: var(--error); font-weight: 600; }
svg.chart text.lane { fill: var(--error); font-style: italic; }
nav ol { margin: 6px 0; padding-left: 22px; }
details summary { cursor: pointer; color: var(--muted); }
"""


def render(reports, failures=()):
    """Render scan reports as one self-contained HTML page.

    Args:
        reports: A list of `ScanReport`, one per scanned model, shown in order of
            model path, then data path.

    Returns:
        The page as text, ending with a newline.
    """
    ordered = sorted(reports, key=lambda report: (model_path(report), data_path(report)))
    faulty = sum(not report.clean for report in ordered)
    summary = f"{len(ordered)} model(s) scanned, " + (f"{faulty} with findings" if faulty else "all clean")

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        # Nothing may load: inline styles only, and no scripts at all.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>nandoctor report</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        "<main>",
        "<h1>nandoctor report</h1>",
        f'<p class="muted">nandoctor {_escape(__version__)}: {_escape(summary)}.</p>',
        _contents(ordered),
    ]
    for path, message in sorted(failures):
        parts.append(f'<section><h2>{_escape(short_path(path))}: not scanned</h2><p>{_escape(message)}</p></section>')
    for number, report in enumerate(ordered, start=1):
        parts.append(_model_section(number, report))
    parts.extend(["</main>", "</body>", "</html>"])
    return "\n".join(parts) + "\n"


def _escape(text):
    return html.escape(str(text), quote=True)


def _prose(text):
    """Escape text and show its `backtick` spans as code."""
    return _CODE_SPAN.sub(r"<code>\1</code>", _escape(text))


def _number(value):
    if value is None:
        return "-"
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.3g}"


def _badge(report):
    if report.clean:
        return '<span class="badge clean">clean</span>'
    badges = []
    for severity in _SEVERITIES:
        count = sum(finding.severity == severity for finding in report.findings)
        if count:
            label = f"{count} {severity}" + ("" if count == 1 else "s")
            badges.append(f'<span class="badge {severity}">{label}</span>')
    return " ".join(badges)


def _contents(reports):
    if len(reports) < 2:
        return ""
    items = "".join(f'<li><a href="#model-{number}">{_escape(model_path(report))}</a> {_badge(report)}</li>'
                    for number, report in enumerate(reports, start=1))
    return f"<nav><ol>{items}</ol></nav>"


def _model_section(number, report):
    """Write one model's section: headline, findings, charts, tables and notes."""
    source = data_path(report)
    parts = [
        f'<section id="model-{number}">',
        f'<h2><span class="mono">{_escape(model_path(report))}</span> {_badge(report)}</h2>',
        f'<p class="muted">Scanned on <span class="mono">{_escape(source)}</span>: '
        f"{_escape(report.samples)} samples, {_escape(report.batches)} batch(es), "
        f"loss <code>{_escape(report.loss)}</code>; model <code>{_escape(report.model.get('name', ''))}</code>, "
        f"{_escape(report.model.get('layers', ''))} layer calls, "
        f"{_escape(report.model.get('parameters', ''))} parameters.</p>",
    ]

    if report.findings:
        parts.append("<h3>Findings</h3>")
        parts.extend(_finding_card(rank, finding) for rank, finding in enumerate(report.findings, start=1))
    else:
        parts.append("<p>No NaN or Inf created in the forward or backward pass.</p>")

    if report.layers:
        parts.append("<h3>Magnitude through the network</h3>")
        parts.append(_magnitude_figure(number, report))
        parts.append(_layer_table(report))
    if report.training:
        parts.append("<h3>Training replay</h3>")
        parts.append(_training_section(number, report.training))
    if report.notes:
        parts.append("<ul class=\"muted\">" + "".join(f"<li>{_prose(note)}</li>" for note in report.notes) + "</ul>")
    parts.append("</section>")
    return "\n".join(parts)


def _finding_card(rank, finding):
    if finding.layer:
        place = f"layer <code>{_escape(finding.layer)}</code>"
        if finding.layer_class:
            place += f" ({_escape(finding.layer_class)})"
    else:
        place = "data" if finding.phase == "data" else "loss"
    place += f", {_escape(finding.phase)}"
    if finding.op:
        place += f", op <code>{_escape(finding.op)}</code>"
    if finding.step is not None:
        place += f", training step {_escape(finding.step)}"

    rows = [("where", place)]
    if finding.location:
        location = finding.location
        rows.append(("source", f'<span class="mono">{_escape(short_path(location.file))}:{_escape(location.line)}'
                               f"</span> in <code>{_escape(location.function)}</code>"))
    rows.append(("evidence", _prose(finding.evidence.sentence)))
    if finding.propagated_to:
        rows.append(("spreads to", ", ".join(f"<code>{_escape(name)}</code>" for name in finding.propagated_to)))
    rows.append(("fix", f'<span class="fix">{_prose(finding.fix)}</span>'))
    rule = RULES.get(finding.code)
    if rule:
        rows.append(("rule", f"{_escape(rule.name)}: {_prose(rule.summary)}"))

    body = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in rows)
    kind = KIND_LABELS.get(finding.kind, finding.kind)
    return (f'<article class="finding {_escape(finding.severity)}">'
            f"<h4>#{rank} {_escape(finding.code)} {_escape(kind)} ({_escape(finding.severity)})</h4>"
            f"<dl>{body}</dl></article>")


def _layer_table(report):
    head = ("<tr><th>#</th><th>layer</th><th>class</th><th class=\"num\">output max|x|</th>"
            "<th class=\"num\">output non-finite</th><th class=\"num\">gradient max|x|</th>"
            "<th class=\"num\">gradient non-finite</th><th>role</th></tr>")
    rows = []
    for index, row in enumerate(report.layers):
        role_class = f' class="{_escape(row.role)}"' if row.role else ""
        rows.append(
            f"<tr{role_class}><td class=\"num\">{index}</td><td class=\"mono\">{_escape(row.name)}</td>"
            f"<td>{_escape(row.layer_class)}</td><td class=\"num\">{_number(row.output_absmax)}</td>"
            f"<td class=\"num\">{_escape(row.output_nonfinite)}</td><td class=\"num\">{_number(row.gradient_absmax)}</td>"
            f"<td class=\"num\">{_escape(row.gradient_nonfinite)}</td><td>{_escape(row.role)}</td></tr>")
    return (f"<details><summary>Per-layer numbers ({len(rows)} layer calls)</summary>"
            f"<table>{head}{''.join(rows)}</table></details>")


def _magnitude_figure(number, report):
    """Chart the max |x| of each layer's outputs and gradients on one log axis."""
    layers = report.layers
    labels = [row.name for row in layers]
    outputs = [_Point(row.output_absmax, row.output_nonfinite > 0,
                      f"{row.name} ({row.layer_class}): output max|x| {_number(row.output_absmax)}, "
                      f"{row.output_nonfinite} non-finite") for row in layers]
    gradients = [_Point(row.gradient_absmax, row.gradient_nonfinite > 0,
                        f"{row.name} ({row.layer_class}): gradient max|x| {_number(row.gradient_absmax)}, "
                        f"{row.gradient_nonfinite} non-finite") for row in layers]
    series = [_Series("output max|x|", "output", outputs), _Series("gradient max|x|", "gradient", gradients)]
    bands = {index: row.role for index, row in enumerate(layers) if row.role in ("origin", "propagation")}
    markers = [(index, "origin") for index, row in enumerate(layers) if row.role == "origin"]
    title = f"Max |x| of finite outputs and gradients per layer, {model_path(report)}"
    legend = [("line", "output", "output max|x|"), ("line", "gradient", "gradient max|x|"),
              ("ring", "", "has non-finite values"), ("band", "origin", "origin layer"),
              ("band", "propagation", "propagation")]

    chart = _Chart(f"magnitude-{number}", title, labels, legend, rotate_labels=True)
    chart.add_panel(series, bands=bands, markers=markers, y_label="max |x|", log=True)
    caption = ("Log scale. Each point is the largest finite |x| of a layer's outputs (solid) or of the gradient "
               "reaching them (dashed); a red ring means that layer also had NaN or Inf values.")
    return f"<figure>{chart.svg()}<figcaption>{_escape(caption)}</figcaption></figure>"


def _training_section(number, training):
    optimizer = training.get("optimizer") or {}
    settings = [f"{training['steps_run']} of {training['steps_requested']} step(s) replayed",
                f"batch size {training.get('batch_size')}",
                f"optimizer {optimizer.get('class', '?')}"]
    if optimizer.get("learning_rate") is not None:
        settings.append(f"learning rate {_number(optimizer['learning_rate'])}")
    if training.get("from_init"):
        settings.append("from fresh weights")
    if training.get("break_step") is not None:
        reason = f" ({training['break_reason']})" if training.get("break_reason") else ""
        settings.append(f"broke at step {training['break_step']}{reason}")
    parts = [f"<p>{_escape('; '.join(settings))}.</p>"]

    rows = training.get("per_step") or []
    if rows:
        parts.append(_training_figure(number, training, rows))
        parts.append(_step_table(training, rows))
    return "\n".join(parts)


def _training_figure(number, training, rows):
    """Chart the loss and the global gradient norm per replayed step, in two panels."""
    labels = [str(row["step"]) for row in rows]
    losses = [_Point(row.get("loss"), False, f"step {row['step']}: loss {_number(row.get('loss'))}")
              for row in rows]
    norms = [_Point(row.get("grad_norm"), False, f"step {row['step']}: gradient norm {_number(row.get('grad_norm'))}")
             for row in rows]
    break_step = training.get("break_step")
    markers = [(index, "break") for index, row in enumerate(rows) if row["step"] == break_step]
    finite_losses = [float(point.value) for point in losses
                     if point.value is not None and math.isfinite(float(point.value))]
    # A loss such as a negative log-likelihood can be 0 or negative, which a log axis cannot show.
    loss_log = bool(finite_losses) and min(finite_losses) > 0
    legend = [("line", "loss", "loss"), ("line", "gradient", "gradient norm"),
              ("cross", "", "non-finite value"), ("marker", "", "first non-finite step")]

    chart = _Chart(f"training-{number}", "Loss and gradient norm per training step", labels, legend,
                   rotate_labels=False, x_title="step")
    chart.add_panel([_Series("loss", "loss", losses)], markers=markers,
                    y_label="loss" + (" (log)" if loss_log else ""), log=loss_log)
    # The second panel draws the same marker lines, labelled once in the first panel.
    chart.add_panel([_Series("gradient norm", "gradient", norms)], markers=[(index, "") for index, _ in markers],
                    y_label="gradient norm (log)", log=True)
    caption = "Loss (top) and global gradient norm (bottom) after each replayed optimizer step."
    return f"<figure>{chart.svg()}<figcaption>{_escape(caption)}</figcaption></figure>"


def _step_table(training, rows):
    head = ("<tr><th class=\"num\">step</th><th class=\"num\">loss</th><th class=\"num\">gradient norm</th>"
            "<th class=\"num\">max update/weight</th><th>skipped</th></tr>")
    body = []
    for row in rows:
        broke = ' class="break"' if row["step"] == training.get("break_step") else ""
        body.append(f"<tr{broke}><td class=\"num\">{_escape(row['step'])}</td>"
                    f"<td class=\"num\">{_number(row.get('loss'))}</td>"
                    f"<td class=\"num\">{_number(row.get('grad_norm'))}</td>"
                    f"<td class=\"num\">{_number(row.get('max_update_ratio'))}</td>"
                    f"<td>{'yes' if row.get('skipped') else ''}</td></tr>")
    return (f"<details><summary>Per-step numbers ({len(rows)} steps)</summary>"
            f"<table>{head}{''.join(body)}</table></details>")


class _Point:
    """One value of a series: None for missing, and a flag drawn as a red ring."""

    def __init__(self, value, flagged, tooltip):
        self.value = None if value is None else float(value)
        self.flagged = flagged
        self.tooltip = tooltip


class _Series:
    def __init__(self, name, css_class, points):
        self.name = name
        self.css_class = css_class
        self.points = points


class _Axis:
    """Map values to y on a log or linear axis, with lanes for values the axis cannot show.

    A log axis puts 0 (and negative values) in a lane under the lowest decade. Both
    kinds put NaN and ±Inf in a lane above the top.
    """

    def __init__(self, values, top, bottom, log):
        finite = [value for value in values if value is not None and math.isfinite(value)]
        self.log = log
        self.has_nonfinite = any(value is not None and not math.isfinite(value) for value in values)
        self.has_zero_lane = log and any(value <= 0 for value in finite)
        self.nonfinite_y = top + _LANE / 2
        self.zero_y = bottom - _LANE / 2
        self.top = top + (_LANE if self.has_nonfinite else 0)
        self.bottom = bottom - (_LANE if self.has_zero_lane else 0)

        if log:
            positive = [value for value in finite if value > 0] or [1.0]
            self.low = math.floor(math.log10(min(positive)))
            self.high = math.ceil(math.log10(max(positive)))
            if self.high == self.low:
                self.high += 1
            # Widen the top to a whole number of tick strides, so the top grid line is labelled.
            self.stride = max(1, math.ceil((self.high - self.low) / 8))
            self.high = self.low + math.ceil((self.high - self.low) / self.stride) * self.stride
        else:
            low = min(finite, default=0.0)
            high = max(finite, default=1.0)
            step = _nice_step((high - low) / 5 if high > low else abs(high) or 1.0)
            self.step = step
            self.low = math.floor(low / step) * step
            self.high = math.ceil(high / step) * step
            if self.high == self.low:
                self.high += step

    def y(self, value):
        """Return the y of `value`, or the y of its lane."""
        if not math.isfinite(value):
            return self.nonfinite_y
        if self.log:
            if value <= 0:
                return self.zero_y
            position = (math.log10(value) - self.low) / (self.high - self.low)
        else:
            position = (value - self.low) / (self.high - self.low)
        return self.bottom - position * (self.bottom - self.top)

    def ticks(self):
        """Return (value, label) pairs, at most about 9 of them."""
        if self.log:
            return [(10.0 ** exponent, _power_label(exponent))
                    for exponent in range(self.low, self.high + 1, self.stride)]
        count = round((self.high - self.low) / self.step)
        stride = max(1, math.ceil(count / 8))
        return [(self.low + index * self.step, f"{self.low + index * self.step:.3g}")
                for index in range(0, count + 1, stride)]


def _nice_step(raw):
    """Round a step up to 1, 2 or 5 times a power of ten."""
    exponent = math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if raw <= factor * 10.0 ** exponent:
            return factor * 10.0 ** exponent
    return 10.0 ** (exponent + 1)


def _power_label(exponent):
    return {0: "1", 1: "10", 2: "100", -1: "0.1"}.get(exponent, f"1e{exponent}")


class _Chart:
    """An SVG chart of one or more panels that share a categorical x axis."""

    def __init__(self, element_id, title, labels, legend, *, rotate_labels, x_title=None):
        self.element_id = element_id
        self.title = title
        self.labels = labels
        self.legend = legend
        self.rotate_labels = rotate_labels and len(labels) > 6
        self.x_title = x_title
        self.panels = []

    def add_panel(self, series, *, y_label, log, bands=None, markers=()):
        self.panels.append((series, bands or {}, list(markers), y_label, log))

    def svg(self):
        """Write the chart as an inline `<svg>` element."""
        label_height = 16
        if self.rotate_labels:
            # About 6.2 units per character at 12 px, times sin(40°) for the rotated text.
            longest = max(len(_short_label(label)) for label in self.labels)
            label_height += longest * 6.2 * 0.65
        if self.x_title:
            label_height += 18
        plot_width = _WIDTH - _LEFT - _RIGHT
        height = _LEGEND_HEIGHT + len(self.panels) * (_PANEL_HEIGHT + 16) + label_height
        slot = plot_width / max(len(self.labels), 1)

        body = [self._legend()]
        top = _LEGEND_HEIGHT
        for series, bands, markers, y_label, log in self.panels:
            body.append(self._panel(series, bands, markers, y_label, log, top, slot))
            top += _PANEL_HEIGHT + 16
        body.append(self._x_labels(top - 16, slot))

        return (f'<svg class="chart" id="{_escape(self.element_id)}" '
                f'viewBox="0 0 {_WIDTH} {height:.0f}" role="img" aria-labelledby="{_escape(self.element_id)}-title">'
                f'<title id="{_escape(self.element_id)}-title">{_escape(self.title)}</title>'
                + "".join(body) + "</svg>")

    def _x(self, index, slot):
        return _LEFT + (index + 0.5) * slot

    def _legend(self):
        items = []
        x = _LEFT
        for shape, css_class, text in self.legend:
            y = 16
            if shape == "line":
                items.append(f'<line class="series {css_class}" x1="{x}" y1="{y}" x2="{x + 26}" y2="{y}"/>'
                             f'<circle class="point {css_class}" cx="{x + 13}" cy="{y}" r="3.5"/>')
            elif shape == "ring":
                items.append(f'<circle class="ring" cx="{x + 13}" cy="{y}" r="6"/>')
            elif shape == "cross":
                items.append(_cross(x + 13, y))
            elif shape == "band":
                items.append(f'<rect class="band-{css_class}" x="{x + 4}" y="{y - 8}" width="18" height="16"/>')
            elif shape == "marker":
                items.append(f'<line class="marker-line" x1="{x + 13}" y1="{y - 9}" x2="{x + 13}" y2="{y + 9}"/>')
            items.append(f'<text x="{x + 32}" y="{y + 4}">{_escape(text)}</text>')
            x += 40 + len(text) * 6.6
        return "".join(items)

    def _panel(self, series, bands, markers, y_label, log, top, slot):
        """Draw one panel: bands, grid and ticks, markers, then the series on top."""
        bottom = top + _PANEL_HEIGHT
        label_y = top + 12
        if any(label for _, label in markers):
            top += _MARKER_LABEL_HEIGHT  # Labels sit above the plot area, clear of the points.
        values = [point.value for line in series for point in line.points if point.value is not None]
        axis = _Axis(values, top, bottom, log)
        right = _WIDTH - _RIGHT
        parts = []

        for index, role in sorted(bands.items()):
            x = self._x(index, slot) - slot / 2
            parts.append(f'<rect class="band-{role}" x="{x:.1f}" y="{top}" width="{slot:.1f}" '
                         f'height="{bottom - top}"><title>{_escape(self.labels[index])}: {role}</title></rect>')
        for value, label in axis.ticks():
            y = axis.y(value)
            parts.append(f'<line class="grid" x1="{_LEFT}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}"/>'
                         f'<text class="tick" x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
        if axis.has_nonfinite:
            parts.append(f'<text class="lane" x="{_LEFT - 6}" y="{axis.nonfinite_y + 4:.1f}" '
                         f'text-anchor="end">NaN/Inf</text>')
        if axis.has_zero_lane:
            parts.append(f'<text class="tick" x="{_LEFT - 6}" y="{axis.zero_y + 4:.1f}" text-anchor="end">0</text>')
        parts.append(f'<line class="axis" x1="{_LEFT}" y1="{top}" x2="{_LEFT}" y2="{bottom}"/>'
                     f'<line class="axis" x1="{_LEFT}" y1="{bottom}" x2="{right}" y2="{bottom}"/>')
        middle = (top + bottom) / 2
        parts.append(f'<text class="tick" x="14" y="{middle:.1f}" text-anchor="middle" '
                     f'transform="rotate(-90 14 {middle:.1f})">{_escape(y_label)}</text>')
        for index, label in markers:
            x = self._x(index, slot)
            parts.append(f'<line class="marker-line" x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}"/>')
            if label:
                # Near the right edge the label goes left of the line, so it stays inside the chart.
                near_edge = x > right - 60
                anchor = "end" if near_edge else "start"
                label_x = x - 4 if near_edge else x + 4
                parts.append(f'<text class="marker-label" x="{label_x:.1f}" y="{label_y}" '
                             f'text-anchor="{anchor}">{_escape(label)}</text>')
        for line in series:
            parts.append(self._series(line, axis, slot))
        return f'<g class="panel">{"".join(parts)}</g>'

    def _series(self, line, axis, slot):
        """Draw a series as line segments broken at missing values, with a marker per value."""
        segments = []
        current = []
        marks = []
        for index, point in enumerate(line.points):
            if point.value is None:
                if current:
                    segments.append(current)
                current = []
                continue
            x = self._x(index, slot)
            y = axis.y(point.value)
            current.append(f"{x:.1f},{y:.1f}")
            tooltip = f"<title>{_escape(point.tooltip)}</title>"
            if not math.isfinite(point.value):
                marks.append(f"<g>{_cross(x, y)}{tooltip}</g>")
                continue
            marks.append(f'<circle class="point {line.css_class}" cx="{x:.1f}" cy="{y:.1f}" r="4">{tooltip}</circle>')
            if point.flagged:
                marks.append(f'<circle class="ring" cx="{x:.1f}" cy="{y:.1f}" r="8">{tooltip}</circle>')
        if current:
            segments.append(current)
        paths = "".join(f'<polyline class="series {line.css_class}" points="{" ".join(segment)}"/>'
                        for segment in segments if len(segment) > 1)
        return f'<g class="series-group" data-series="{_escape(line.name)}">{paths}{"".join(marks)}</g>'

    def _x_labels(self, bottom, slot):
        stride = max(1, math.ceil(len(self.labels) / _MAX_X_LABELS))
        parts = []
        for index in range(0, len(self.labels), stride):
            x = self._x(index, slot)
            label = self.labels[index]
            text = _escape(_short_label(label))
            full = f"<title>{_escape(label)}</title>"
            if self.rotate_labels:
                parts.append(f'<text class="tick" x="{x:.1f}" y="{bottom + 14}" text-anchor="end" '
                             f'transform="rotate(-40 {x:.1f} {bottom + 14})">{text}{full}</text>')
            else:
                parts.append(f'<text class="tick" x="{x:.1f}" y="{bottom + 16}" text-anchor="middle">{text}{full}</text>')
        if self.x_title:
            parts.append(f'<text class="tick" x="{_LEFT + (_WIDTH - _LEFT - _RIGHT) / 2:.1f}" y="{bottom + 34}" '
                         f'text-anchor="middle">{_escape(self.x_title)}</text>')
        return "".join(parts)


def _short_label(label):
    return label if len(label) <= _LABEL_CHARS else label[:_LABEL_CHARS - 1] + "\u2026"


def _cross(x, y):
    size = 5
    return (f'<path class="cross" d="M{x - size:.1f},{y - size:.1f} L{x + size:.1f},{y + size:.1f} '
            f'M{x - size:.1f},{y + size:.1f} L{x + size:.1f},{y - size:.1f}"/>')
