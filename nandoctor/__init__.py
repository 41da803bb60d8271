"""nandoctor: find where NaN and Inf values start in a saved Keras model."""

__version__ = "0.1.0"


def scan(model_path, data_path=None, **options):
    """Scan a saved model and return a `ScanReport`; see `nandoctor.scanner.scan` for the options.

    TensorFlow is imported on the first call, not with the package.
    `report.to_dict()` gives the same data as `--format json`.
    """
    from nandoctor.scanner import scan as run_scan

    return run_scan(model_path, data_path, **options)


def scan_model(model, x, y=None, **options):
    """Scan an in-memory Keras model on arrays; see `nandoctor.scanner.scan_model`."""
    from nandoctor.scanner import scan_model as run_scan_model

    return run_scan_model(model, x, y, **options)
