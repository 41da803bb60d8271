"""nandoctor: find where NaN and Inf values start in a saved Keras model."""

__version__ = "0.1.0"


def scan(model_path, data_path=None, **options):
    """Scan a saved model; see `nandoctor.scanner.scan` for the options.

    TensorFlow is imported on the first call, not with the package.
    """
    from nandoctor.scanner import scan as run_scan

    return run_scan(model_path, data_path, **options)
