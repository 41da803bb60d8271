"""The `nandoctor` command line. Imports only click and the standard library at load time."""

import logging
import os
import sys
import traceback

import click

from nandoctor import __version__
from nandoctor.errors import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    DataLoadError,
    NandoctorError,
)

@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nandoctor")
def cli():
    """Find where NaN and Inf values start in a saved Keras model, and how to fix them.

    \b
    Exit status:
      0  nothing at or above --fail-on was found
      1  findings at or above --fail-on
      2  usage error (unknown option, invalid value)
      3  a model or data file cannot be read or does not fit the model
      4  internal error (a bug in nandoctor; rerun with --debug and report it)
      130 interrupted (Ctrl-C)
    """


# Scan options that a configuration file may also set: click parameter name -> config key.
_SCAN_KEYS = {
    "trust_code": "trust-code", "custom_objects": "custom-objects", "x_keys": "x-key", "y_keys": "y-key",
    "loss": "loss", "batch_size": "batch-size", "max_samples": "max-samples", "training_mode": "training-mode",
    "fit_steps": "fit-steps", "from_init": "from-init", "optimizer_name": "optimizer",
    "learning_rate": "learning-rate", "shuffle_seed": "shuffle-seed", "verify_fixes": "verify-fixes",
    "stress": "stress", "save_repro": "save-repro",
}
_RUN_KEYS = {"fail_on": "fail-on", "output_format": "format", "select": "select", "ignore": "ignore"}
_FORMATS = ("text", "json", "sarif", "junit", "markdown", "html")
_EXTENSIONS = {".txt": "text", ".json": "json", ".sarif": "sarif", ".xml": "junit", ".md": "markdown",
               ".html": "html", ".htm": "html"}


@cli.command()
@click.argument("model", required=False, type=click.Path(dir_okay=True))
@click.argument("data", required=False, type=click.Path(dir_okay=True))
@click.option("--trust-code", is_flag=True,
              help="Run Python code stored in the model file (Lambda bytecode). Off by default: "
                   "such a file is rejected, as in Keras safe mode.")
@click.option("--custom-objects", "custom_objects", multiple=True, metavar="FILE_OR_MODULE",
              help="Python file or module that defines the model's custom functions, layers or "
                   "loss. Imported as a module, so code under `if __name__ == \"__main__\":` does "
                   "not run; top-level code does. Repeatable.")
@click.option("--x-key", "x_keys", multiple=True, metavar="KEY",
              help="Array (npz key or HDF5 dataset path) for a model input; once per input, in "
                   "input order. Default: 'x', or the model's input names.")
@click.option("--y-key", "y_keys", multiple=True, metavar="KEY",
              help="Array of targets; once per output. Default: 'y', or the model's output names.")
@click.option("--loss", metavar="NAME", help="Keras loss name to use instead of the model's compiled loss.")
@click.option("--batch-size", type=int, default=64, show_default=True, help="Samples per replayed batch.")
@click.option("--max-samples", type=int, default=None, help="Scan at most this many samples (default: all).")
@click.option("--training-mode", is_flag=True,
              help="Replay layers as in fit(): Dropout active, BatchNormalization on batch statistics. "
                   "Default: inference mode.")
@click.option("--fit-steps", type=click.IntRange(min=0), default=0, show_default=True,
              help="Replay this many optimizer steps on an in-memory copy and diagnose the first step "
                   "whose loss, gradients or weights turn non-finite. Needs targets.")
@click.option("--from-init", is_flag=True,
              help="With --fit-steps: start from freshly initialized weights (seed 0) instead of the file's.")
@click.option("--optimizer", "optimizer_name", metavar="NAME",
              help="With --fit-steps: Keras optimizer to use instead of the saved one (adam, sgd, ...).")
@click.option("--learning-rate", type=float, help="With --fit-steps: learning rate to use instead of the saved one.")
@click.option("--shuffle-seed", type=int,
              help="With --fit-steps: shuffle the batches of each epoch with this seed. Default: file order.")
@click.option("--verify-fixes", is_flag=True,
              help="Apply each origin's suggested fix in memory, replay its batch forward and backward, "
                   "and report whether the fix clears the fault.")
@click.option("--stress", is_flag=True,
              help="Probe the inputs beyond the data and search for inputs that make risky ops fail; "
                   "faults found this way have phase 'stress'.")
@click.option("--save-repro", type=click.Path(file_okay=False), metavar="DIR",
              help="With --stress: write each stress fault's inputs to DIR as an .npz that scan reproduces.")
@click.option("--no-headroom", is_flag=True, help="Skip the warnings about ops close to failing.")
@click.option("--headroom-factor", type=float, metavar="F",
              help="Warn when an overflow is less than F times the input scale away (default 2).")
@click.option("--min-denominator", type=float, metavar="D",
              help="Warn when a denominator's smallest magnitude is below D (default 1e-6).")
@click.option("--max-derivative", type=float, metavar="G",
              help="Warn when Sqrt, Log, Pow or Acos have a derivative above G on the data (default 1e4).")
@click.option("--select", multiple=True, metavar="CODES",
              help="Report only these rule codes or prefixes (ND1, ND201); comma-separated or repeated.")
@click.option("--ignore", multiple=True, metavar="CODES",
              help="Leave out these rule codes or prefixes; the longest matching prefix wins.")
@click.option("--fail-on", type=click.Choice(["error", "warning", "never"]), default="error", show_default=True,
              help="Lowest severity that makes the exit status 1.")
@click.option("--format", "output_format", type=click.Choice(_FORMATS), default="text",
              show_default=True, help="Report format on stdout.")
@click.option("--output", "outputs", multiple=True, metavar="[FORMAT:]FILE",
              help="Also write the report to FILE, in FORMAT or the one its extension names "
                   "(.json, .sarif, .xml for JUnit, .md, .html, .txt). Repeatable.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="Configuration file (default: the nearest nandoctor.toml, or pyproject.toml with "
                   "[tool.nandoctor]).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar; the text report shows findings only.")
@click.option("--debug", is_flag=True, help="Show a traceback for internal errors and debug logs.")
@click.pass_context
def scan(ctx, model, data, debug, quiet, config_path, outputs, **options):
    """Scan MODEL (.keras or .h5) on DATA (.npz, .npy, .h5 or .hdf5).

    Without DATA, inputs are drawn from a standard normal distribution (seed 0).
    Without MODEL, every model listed in the configuration file is scanned, and
    the exit status is the highest of theirs.

    Input arrays of float, integer or bool dtype are cast to the dtype of the
    model input, so int64 or float16 data feeds a float32 model. A value that
    the cast would change, such as 1e300 into float32, is an error. Float data
    for an integer input (an Embedding) is rejected, and so are string, complex
    and object arrays. Object arrays are never unpickled.
    """
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    from nandoctor.config import ModelEntry, find_config, load_config
    from nandoctor.gate import ModelResult, check_codes, exit_status, filter_findings

    config = load_config(config_path or find_config())
    explicit = {name for name in options if ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT}
    run = _run_options(options, explicit, config.defaults)
    check_codes(run["select"], "--select")
    check_codes(run["ignore"], "--ignore")
    for entry in config.models:
        check_codes([rule.code for rule in entry.suppress], f"{config.path}: suppress code")
    targets = _output_targets(outputs)

    if model is not None:
        matching = [entry for entry in config.models if os.path.abspath(entry.model) == os.path.abspath(model)]
        entries = [ModelEntry(model, data, matching[0].options if matching else {},
                              matching[0].suppress if matching else [])]
    elif config.models:
        entries = config.models
    else:
        raise click.UsageError("missing MODEL: pass a .keras or .h5 file, or list models in nandoctor.toml "
                               "or [tool.nandoctor] in pyproject.toml.")

    results = []
    for entry in entries:
        scan_options = _scan_options(options, explicit, config.defaults, entry.options)
        if entry.data is None and (scan_options["x_keys"] or scan_options["y_keys"]):
            raise click.UsageError("--x-key and --y-key select arrays in DATA; pass a data file or drop them.")
        try:
            report = _scan_one(entry.model, entry.data, scan_options, debug, quiet)
        except NandoctorError as error:
            if len(entries) == 1:
                raise
            click.echo(f"Error: {error.format_message()}", err=True)
            results.append(ModelResult(entry.model, error=error))
            continue
        kept, suppressed = filter_findings(report.findings, run["select"], run["ignore"], entry.suppress)
        left_out = len(report.findings) - len(kept) - len(suppressed)
        if left_out:
            report.notes.append(f"{left_out} finding(s) left out by --select or --ignore")
        report.findings = kept
        for finding, rule in suppressed:
            report.notes.append(f"suppressed {finding.code} in {finding.layer or 'the data or loss'}: {rule.reason}")
        results.append(ModelResult(entry.model, report, suppressed=suppressed))

    reports = [result.report for result in results if result.report is not None]
    failures = [(result.model, result.error.format_message(), result.error.exit_code)
                for result in results if result.error is not None]
    try:
        # A run over configured models always writes the multi-model JSON document.
        many = model is None
        _write_stdout(reports, run["output_format"], quiet, many, failures)
        for output_format, path in targets:
            _write_file(reports, output_format, path, run["fail_on"], many, failures)
    except KeyboardInterrupt:
        click.echo("Error: interrupted while printing the report; the output is incomplete.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    if any(report.interrupted for report in reports):
        click.echo("Error: interrupted with Ctrl-C; the report above covers the batches scanned so far.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(exit_status(results, run["fail_on"]))


def _run_options(options, explicit, defaults):
    """Resolve --fail-on, --format, --select and --ignore: command line, then config, then default."""
    run = {}
    for name, key in _RUN_KEYS.items():
        value = options[name] if name in explicit or key not in defaults else defaults[key]
        run[name] = value
    run["select"] = _codes(run["select"])
    run["ignore"] = _codes(run["ignore"])
    if run["fail_on"] not in ("error", "warning", "never"):
        raise click.UsageError(f"fail-on must be error, warning or never, received {run['fail_on']!r}.")
    if run["output_format"] not in _FORMATS:
        raise click.UsageError(f"format must be one of {', '.join(_FORMATS)}, received {run['output_format']!r}.")
    return run


def _scan_options(options, explicit, defaults, model_options):
    """Resolve scan options: command line, then the model's config entry, then config defaults."""
    resolved = {}
    for name, key in _SCAN_KEYS.items():
        if name in explicit:
            value = options[name]
        elif key in model_options:
            value = model_options[key]
        elif key in defaults:
            value = defaults[key]
        else:
            value = options[name]
        resolved[name] = tuple(value) if isinstance(value, list) else value
    resolved["headroom"] = not options["no_headroom"]
    for name in ("headroom_factor", "min_denominator", "max_derivative"):
        resolved[name] = options[name]
    return resolved


def _codes(values):
    return tuple(code.strip().upper() for value in values for code in str(value).split(",") if code.strip())


def _output_targets(outputs):
    """Parse --output values into (format, path) pairs."""
    targets = []
    for value in outputs:
        prefix, separator, rest = value.partition(":")
        if separator and prefix in _FORMATS:
            targets.append((prefix, rest))
            continue
        extension = os.path.splitext(value)[1].lower()
        if extension not in _EXTENSIONS:
            raise click.UsageError(f"--output {value}: cannot tell the format; write FORMAT:FILE with FORMAT "
                                   f"one of {', '.join(_FORMATS)}, or use a .json, .sarif, .xml, .md, .html "
                                   "or .txt file name.")
        targets.append((_EXTENSIONS[extension], value))
    for _, path in targets:
        folder = os.path.dirname(os.path.abspath(path)) if path else ""
        if not path or os.path.isdir(path) or not os.path.isdir(folder):
            raise click.UsageError(f"--output {path or '(empty)'}: expected a file path in an existing folder.")
    return targets


def _scan_one(model, data, options, debug, quiet):
    """Scan one model and return its report; user errors propagate, bugs exit 4."""
    progress = None
    try:
        from nandoctor.scanner import scan as run_scan

        with _progress(quiet) as progress:
            return run_scan(model, data, trust_code=options["trust_code"], custom_objects=options["custom_objects"],
                            x_keys=options["x_keys"], y_keys=options["y_keys"], loss=options["loss"],
                            batch_size=options["batch_size"], max_samples=options["max_samples"],
                            training=options["training_mode"], fit_steps=options["fit_steps"],
                            from_init=options["from_init"], optimizer=options["optimizer_name"],
                            learning_rate=options["learning_rate"], shuffle_seed=options["shuffle_seed"],
                            headroom=options["headroom"], headroom_factor=options["headroom_factor"],
                            min_denominator=options["min_denominator"], max_derivative=options["max_derivative"],
                            verify_fixes=options["verify_fixes"], stress=options["stress"],
                            save_repro=options["save_repro"], progress=progress)
    except DataLoadError as error:
        # The scanner reports any ValueError or TypeError of the replay as a
        # data problem; one that the model's own code raised is named as such.
        from nandoctor.loading.code_errors import model_code_error

        code_error = model_code_error(error.__cause__) if error.__cause__ is not None else None
        if code_error is not None:
            raise code_error from error
        raise
    except NandoctorError:
        raise
    except KeyboardInterrupt:
        click.echo("Error: interrupted before the scan finished; no findings to report.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as error:  # An unexpected exception is a bug, unless the model's own code raised it.
        from nandoctor.loading.code_errors import model_code_error

        user_error = model_code_error(error)
        if user_error is not None:
            raise user_error from error
        if debug:
            traceback.print_exc()
        message = " ".join(str(error).split())[:300]
        click.echo(f"Error: internal error ({type(error).__name__}: {message}); this is a bug in "
                   "nandoctor: rerun with --debug and report the traceback.", err=True)
        sys.exit(EXIT_INTERNAL)


class _progress:
    """A progress line on stderr while batches replay; silent when stderr is not a terminal."""

    def __init__(self, quiet):
        self.enabled = not quiet and sys.stderr.isatty()
        self._display = None

    def __enter__(self):
        if not self.enabled:
            return None
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self._display = Progress(SpinnerColumn(), TextColumn("replayed {task.completed} samples"),
                                 TimeElapsedColumn(), console=Console(stderr=True), transient=True)
        self._display.start()
        task = self._display.add_task("scan", total=None)
        return lambda samples: self._display.update(task, completed=samples)

    def __exit__(self, *exc_info):
        if self._display is not None:
            self._display.stop()
        return False


def _write_stdout(reports, output_format, quiet, many, failures):
    if output_format == "text":
        from rich.console import Console

        from nandoctor.report.text import render

        console = Console(highlight=False, soft_wrap=False)
        for report in reports:
            render(report, console, quiet=quiet)
        return
    click.echo(_render(reports, output_format, "error", many, failures), nl=False)


def _write_file(reports, output_format, path, fail_on, many, failures):
    if output_format == "text":
        import io

        from rich.console import Console

        from nandoctor.report.text import render

        buffer = io.StringIO()
        console = Console(file=buffer, width=100, no_color=True, highlight=False, soft_wrap=False)
        for report in reports:
            render(report, console)
        text = buffer.getvalue()
    else:
        text = _render(reports, output_format, fail_on, many, failures)
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as error:
        raise NandoctorError(f"failed to write --output {path}: {error.strerror or error}; "
                             "check that the folder exists and is writable.") from error


def _render(reports, output_format, fail_on, many, failures):
    """Return the report text in a machine format, ending with a newline.

    JSON is one report's object for a single MODEL, or a document with a
    `reports` list for a run over configured models (`many`). `failures` are
    (model path, message, exit status) of models that could not be scanned;
    every format lists them.
    """
    unscanned = [(path, message) for path, message, _ in failures]
    if output_format == "json":
        from nandoctor.report.json_report import dumps, dumps_many

        return (dumps_many(reports, failures) if many or len(reports) != 1 else dumps(reports[0])) + "\n"
    if output_format == "sarif":
        from nandoctor.report import sarif

        return sarif.render(reports, unscanned)
    if output_format == "junit":
        from nandoctor.report import junit

        return junit.render(reports, fail_on=fail_on, unscanned=unscanned)
    if output_format == "markdown":
        from nandoctor.report import markdown

        return markdown.render(reports, unscanned)
    from nandoctor.report import html

    return html.render(reports, unscanned)


@cli.command()
def rules():
    """List the rule codes with their kind, severity and summary."""
    from nandoctor.diagnosis.registry import RULES

    for rule in RULES.values():
        click.echo(f"{rule.code}  {rule.name:<20} {rule.kind:<18} {rule.severity:<8} {rule.summary}")


@cli.command()
@click.argument("code")
def explain(code):
    """Print the documentation of rule CODE (for example ND101)."""
    from nandoctor.diagnosis.registry import RULES

    rule = RULES.get(code.upper())
    if rule is None:
        raise click.BadParameter(f"unknown rule code {code!r}; run `nandoctor rules` for the list.",
                                 param_hint="CODE")
    click.echo(f"{rule.code} {rule.name} ({rule.kind}, {rule.severity})\n")
    click.echo(rule.doc.strip())


def main():
    """Run the command line and map exceptions to exit statuses."""
    try:
        cli.main(prog_name="nandoctor", standalone_mode=True)
    except BrokenPipeError:
        sys.exit(EXIT_OK)


if __name__ == "__main__":
    main()
