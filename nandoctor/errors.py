"""User errors and the exit statuses of the command line."""

import click

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_INTERNAL = 4
EXIT_INTERRUPTED = 130


class NandoctorError(click.ClickException):
    """Base class of every error that a user can fix.

    The message is one line: what failed, on which file or value, and what to
    do next. `cli.main` prints it without a traceback.
    """

    exit_code = EXIT_INPUT

    def format_message(self):
        return " ".join(str(self.message).split())


class ModelLoadError(NandoctorError):
    """A model file that cannot be read or rebuilt."""


class UntrustedCodeError(NandoctorError):
    """A model file whose code would run only with `--trust-code`."""


class MissingCustomObjectsError(NandoctorError):
    """A model file that names functions or classes nandoctor cannot find."""


class CustomObjectsError(NandoctorError):
    """A `--custom-objects` file or module that cannot be imported."""


class DataLoadError(NandoctorError):
    """A data file that cannot be read or does not fit the model."""


class UsageError(NandoctorError):
    """An option value that is invalid on its own or with the others."""

    exit_code = EXIT_USAGE


class ModelCodeError(NandoctorError):
    """Code of the model (a Lambda function, custom layer or loss) that raised while running."""
