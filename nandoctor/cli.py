"""The `nandoctor` command line. Imports only click and the standard library at load time."""

import logging
import sys
import traceback

import click

from nandoctor import __version__
from nandoctor.errors import (
    EXIT_FINDINGS,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    DataLoadError,
    NandoctorError,
)

_SEVERITY_RANK = {"error": 0, "warning": 1, "info": 2}


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


@cli.command()
@click.argument("model", type=click.Path(dir_okay=True))
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
@click.option("--fail-on", type=click.Choice(["error", "warning", "never"]), default="error", show_default=True,
              help="Lowest severity that makes the exit status 1.")
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Report format on stdout.")
@click.option("--debug", is_flag=True, help="Show a traceback for internal errors and debug logs.")
def scan(model, data, trust_code, custom_objects, x_keys, y_keys, loss, batch_size, max_samples,
         training_mode, fit_steps, from_init, optimizer_name, learning_rate, shuffle_seed, fail_on,
         output_format, debug):
    """Scan MODEL (.keras or .h5) on DATA (.npz, .npy, .h5 or .hdf5).

    Without DATA, inputs are drawn from a standard normal distribution (seed 0).

    Input arrays of float, integer or bool dtype are cast to the dtype of the
    model input, so int64 or float16 data feeds a float32 model. A value that
    the cast would change, such as 1e300 into float32, is an error. Float data
    for an integer input (an Embedding) is rejected, and so are string, complex
    and object arrays. Object arrays are never unpickled.
    """
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    if data is None and (x_keys or y_keys):
        raise click.UsageError("--x-key and --y-key select arrays in DATA; pass a data file or drop them.")

    try:
        from nandoctor.scanner import scan as run_scan

        report = run_scan(model, data, trust_code=trust_code, custom_objects=custom_objects,
                          x_keys=x_keys, y_keys=y_keys, loss=loss, batch_size=batch_size,
                          max_samples=max_samples, training=training_mode, fit_steps=fit_steps,
                          from_init=from_init, optimizer=optimizer_name, learning_rate=learning_rate,
                          shuffle_seed=shuffle_seed)
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

    try:
        if output_format == "json":
            from nandoctor.report.json_report import dumps

            click.echo(dumps(report))
        else:
            from rich.console import Console

            from nandoctor.report.text import render

            render(report, Console(highlight=False, soft_wrap=False))
    except KeyboardInterrupt:
        click.echo("Error: interrupted while printing the report; the output is incomplete.", err=True)
        sys.exit(EXIT_INTERRUPTED)

    if fail_on == "never":
        sys.exit(EXIT_OK)
    threshold = _SEVERITY_RANK[fail_on]
    failing = any(_SEVERITY_RANK.get(f.severity, 9) <= threshold for f in report.findings)
    sys.exit(EXIT_FINDINGS if failing else EXIT_OK)


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
