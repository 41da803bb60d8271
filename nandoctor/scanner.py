"""Run a whole scan: load, replay, diagnose. Returns a `ScanReport`; prints nothing."""

import logging
import time
from dataclasses import dataclass, field

from nandoctor.errors import DataLoadError, ModelLoadError, UsageError

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 64
HEADROOM_BATCHES = 16
"""Batches traced op by op to measure the headroom of risky ops in custom code."""


@dataclass
class LayerRow:
    """One line of the per-layer magnitude table."""

    name: str
    layer_class: str
    output_absmax: float | None
    output_nonfinite: int
    gradient_absmax: float | None
    gradient_nonfinite: int
    role: str
    """"origin", "propagation" or ""."""
    outputs: list = field(default_factory=list)
    """Per float output: NaN, +Inf and -Inf counts, finite min, max and max |x|,
    samples affected and the first affected sample indices."""


@dataclass
class ScanReport:
    """Everything a scan found, in the form the reports render."""

    model: dict
    data: dict
    loss: str
    findings: list
    layers: list
    batches: int
    samples: int
    notes: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    training: dict | None = None
    """The `--fit-steps` replay: settings, break step and per-step numbers."""
    interrupted: bool = False
    """True when Ctrl-C stopped the replay before the last batch."""
    graph: object = None
    """The `LayerGraph` the replay ran, for later passes over the same model."""

    @property
    def clean(self):
        return not self.findings

    def to_dict(self):
        """Return the report as the JSON document's plain types (see README, "JSON output")."""
        from nandoctor.report.json_report import to_dict

        return to_dict(self)


def scan(model_path, data_path=None, *, trust_code=False, custom_objects=(), x_keys=(), y_keys=(),
         loss=None, batch_size=DEFAULT_BATCH_SIZE, max_samples=None, training=False, fit_steps=0,
         from_init=False, optimizer=None, learning_rate=None, shuffle_seed=None, headroom=True,
         headroom_factor=None, min_denominator=None, max_derivative=None, verify_fixes=False, stress=False,
         save_repro=None, progress=None):
    """Scan a saved model on data and return a `ScanReport`.

    Args:
        model_path: A `.keras` or `.h5` file.
        data_path: A `.npz`, `.npy`, `.h5` or `.hdf5` file, or None to draw
            inputs from a standard normal distribution (seed 0).
        trust_code: Run code stored in the model file (Lambda bytecode).
        custom_objects: Python files or module names that define the
            functions and classes the model refers to by name.
        x_keys: Keys of the input arrays, one per model input.
        y_keys: Keys of the target arrays, one per model output.
        loss: A Keras loss name that overrides the compiled loss.
        batch_size: Samples per replayed batch (default 64).
        max_samples: Read at most this many samples (default: all).
        training: Replay layers in training mode: Dropout active and
            BatchNormalization on batch statistics. Default False (inference).
            The model file is never written, whatever the mode.
        fit_steps: Replay this many optimizer steps after the scan (0: none),
            stopping at the first non-finite loss, gradient or weight.
        from_init: Replay training from freshly initialized weights (seed 0).
        optimizer: A Keras optimizer name that overrides the saved one.
        learning_rate: A learning rate that overrides the optimizer's.
        shuffle_seed: Shuffle the training batches with this seed (default:
            file order, as `model.fit(..., shuffle=False)`).
        headroom: Measure how close risky ops are to failing and warn below
            the thresholds (default True).
        headroom_factor: Warn when an overflow is less than this factor of
            input scale away (default 2).
        min_denominator: Warn when a denominator's smallest magnitude is
            below this (default 1e-6).
        max_derivative: Warn when Sqrt, Log, Acos and the like have a
            derivative above this on the data (default 1e4).
        verify_fixes: For each origin whose op has an in-memory fix (Exp,
            divisions, Log, Sqrt, Rsqrt, Pow, Acos, Asin), apply the fix on the
            first failing batch, replay forward and backward, and set
            `fix_verified` and `fix_check` on the finding.
        stress: Probe the model beyond the data and search for inputs that
            make its risky ops fail (see `nandoctor.replay.stress`). Each
            fault found becomes a finding with phase "stress".
        save_repro: A folder to write each stress finding's inputs to, as an
            `.npz` that `nandoctor scan MODEL FILE` reproduces.
        progress: Optional callable taking the number of samples done.

    Returns:
        A `ScanReport`.

    Raises:
        NandoctorError: A file cannot be read or does not fit the model.
    """
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, received {batch_size}.")
    replay_only = {"--from-init": from_init, "--optimizer": optimizer, "--learning-rate": learning_rate,
                   "--shuffle-seed": shuffle_seed}
    unused = [name for name, value in replay_only.items() if value not in (None, False)]
    if unused and not fit_steps:
        raise UsageError(f"{', '.join(unused)} only apply to the training replay; add --fit-steps N.")
    if save_repro and not stress:
        raise UsageError("--save-repro writes the inputs that --stress finds; add --stress.")
    if max_samples is not None and max_samples < 1:
        raise UsageError(f"--max-samples must be at least 1, received {max_samples}.")
    started = time.perf_counter()

    from nandoctor import tf_setup

    tf_setup.quiet_tensorflow()
    from nandoctor.loading.data import open_data
    from nandoctor.loading.model import load_model

    loaded = load_model(model_path, trust_code=trust_code, custom_object_sources=custom_objects)
    model = loaded.model
    input_specs, output_specs = _model_specs(model, model_path)
    loaded_at = time.perf_counter()

    source = open_data(data_path, input_specs, output_specs, x_keys, y_keys, max_samples)
    try:
        thresholds = _thresholds(headroom, headroom_factor, min_denominator, max_derivative)
        report = _replay_and_diagnose(loaded, source, input_specs, loss, batch_size, training, progress,
                                      thresholds, verify_fixes=verify_fixes)
        if stress and not report.interrupted:
            from nandoctor import risks

            risks.add_stress(report, loaded, source, input_specs, batch_size, training, save_repro, verify_fixes)
        if fit_steps and not report.interrupted:
            _add_training_replay(report, loaded, source, input_specs, loss, batch_size, fit_steps,
                                 from_init, optimizer, learning_rate, shuffle_seed, trust_code)
    finally:
        source.close()
    report.timings = {"load_s": loaded_at - started, "scan_s": time.perf_counter() - loaded_at}
    return report


def scan_model(model, x, y=None, *, batch_size=DEFAULT_BATCH_SIZE, training=False, loss=None):
    """Scan an in-memory Keras model on arrays, as `scan` does for files.

    Args:
        model: A built Keras model. Its weights are read, never changed.
        x: Inputs: an array, or a list with one array per model input.
        y: Targets (an array or a list per output), or None for the stand-in loss.
        batch_size: Samples per replayed batch.
        training: Replay layers in training mode.
        loss: A Keras loss name overriding `model.loss`.

    Returns:
        A `ScanReport`.
    """
    import numpy as np

    from nandoctor.loading.data import DataSource
    from nandoctor.loading.model import LoadedModel
    from nandoctor.loading.model_config import ModelConfig

    inputs = [np.asarray(a) for a in (x if isinstance(x, (list, tuple)) else [x])]
    targets = []
    if y is not None:
        targets = [np.asarray(a) for a in (y if isinstance(y, (list, tuple)) else [y])]
    input_specs, output_specs = _model_specs(model, model.name)
    loaded = LoadedModel(model, f"<in-memory model {model.name}>", ModelConfig("memory", {}, None), {},
                         getattr(model, "loss", None))
    source = DataSource(None, "memory", inputs, targets, [s.name for s in input_specs],
                        [s.name for s in output_specs][:len(targets)], len(inputs[0]))
    # NOTE: scan_model has no training replay; use scan() on a saved file for --fit-steps.
    return _replay_and_diagnose(loaded, source, input_specs, loss, batch_size, training, None,
                                _thresholds(True, None, None, None))


def _thresholds(enabled, headroom_factor, min_denominator, max_derivative):
    """Return the headroom `Thresholds`, or None when headroom checks are off."""
    from nandoctor.diagnosis.headroom import Thresholds

    if not enabled:
        return None
    values = {"headroom_factor": headroom_factor, "min_denominator": min_denominator,
              "max_derivative": max_derivative}
    for name, value in values.items():
        if value is not None and not value > 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, received {value}.")
    defaults = Thresholds()
    return Thresholds(*(value if value is not None else getattr(defaults, name) for name, value in values.items()))


def _model_specs(model, path):
    from nandoctor.loading.data import TensorSpec
    from nandoctor.replay.graph import _graph_model

    graph_model = _graph_model(model)
    try:
        inputs = list(graph_model.inputs if graph_model is not None else model.inputs)
        outputs = list(graph_model.outputs if graph_model is not None else model.outputs)
    except (AttributeError, ValueError, TypeError) as error:
        raise ModelLoadError(
            f"{path}: the model has no defined inputs (a subclassed or unbuilt model); "
            "build it with keras.Input shapes before saving."
        ) from error
    names = list(getattr(model, "output_names", None) or [])
    input_specs = [TensorSpec(t.name, tuple(t.shape), str(t.dtype)) for t in inputs]
    output_specs = [
        TensorSpec(names[k] if k < len(names) else t.name, tuple(t.shape), str(t.dtype))
        for k, t in enumerate(outputs)
    ]
    return input_specs, output_specs


def _replay_and_diagnose(loaded, source, input_specs, loss_name, batch_size, training, progress,
                         thresholds=None, headroom_batches=HEADROOM_BATCHES, verify_fixes=False):
    from nandoctor import risks
    from nandoctor.diagnosis import build
    from nandoctor.replay.batches import finite_rows
    from nandoctor.replay.loss import build_loss
    from nandoctor.replay.ops import trace_batch
    from nandoctor.replay.passes import CompiledReplay, ReplayOpError
    from nandoctor.diagnosis.op_analysis import first_backward_fault, first_forward_fault

    model = loaded.model
    replay_loss = build_loss(model, loss_name, source.has_targets, loaded.loss)
    bad_variables = _nonfinite_variables(model)
    if training:
        import keras

        # Dropout masks then repeat between the compiled pass and the op-level re-run.
        keras.utils.set_random_seed(0)
    replay = CompiledReplay(model, replay_loss, bad_variable_ids={id(v) for v, *_ in bad_variables},
                            training=training)
    try:
        result = replay.run(source, input_specs, batch_size, progress)
    except ReplayOpError as failure:
        from nandoctor.loading.code_errors import model_code_error

        # A failed tf.py_function carries the user's traceback, which names the function and line.
        raise (model_code_error(failure.error) or _op_failure(failure, source)) from failure.error
    except (ValueError, TypeError) as error:
        raise DataLoadError(
            f"the model failed to run on {source.path or 'random inputs'}: "
            f"{' '.join(str(error).split())[:300]}; check the data shapes and --x-key."
        ) from error

    logger.debug("replayed %s batches; %s candidate origins", result.batches, len(result.candidates))
    findings = build.data_findings(result, source.input_keys, source.target_keys,
                                   [spec.name for spec in input_specs])
    findings += build.weight_findings(_weight_rows(bad_variables, result), result)

    loss_label = f"loss ({replay_loss.description})"
    by_batch = {}
    for candidate in result.candidates:
        by_batch.setdefault(candidate.first_batch, []).append(candidate)
    for candidates in by_batch.values():
        batch = candidates[0].batch
        rows = finite_rows(batch)
        if not rows.size:
            continue
        traced = {c.call_index if c.call_index is not None else "loss" for c in candidates}
        inputs = [x[rows] for x in batch.inputs]
        targets = [y[rows] for y in (batch.targets or [])]
        trace = trace_batch(result.graph, replay_loss, inputs, targets, traced)
        row_map = batch.start + rows
        for candidate in candidates:
            records = trace.ops.get(candidate.call_index if candidate.call_index is not None else "loss", [])
            if candidate.phase == "forward":
                fault = first_forward_fault(records)
            else:
                fault = first_backward_fault(records)
            if fault is None and candidate.mixed:
                continue  # Not reproduced on the finite samples: spread from other samples.
            findings.append(build.origin_finding(result, candidate, fault, row_map, loss_label))
        candidate_batch_release(candidates)

    if verify_fixes:
        findings = risks.verify_fixes(findings, result, replay_loss, source, input_specs, batch_size)
    if thresholds is not None:
        findings += risks.headroom_findings(result, replay_loss, source, input_specs, batch_size, thresholds,
                                       headroom_batches, findings, loss_label)
    findings = build.finalize(findings)
    origins = {f.layer for f in findings if f.layer is not None and f.severity == "error"}
    propagated = {name for f in findings for name in f.propagated_to}
    layers = []
    for call, record in zip(result.graph.calls, result.layers):
        grads = [s for s in record.grad_outputs if s is not None]
        absmax = [s.absmax for s in record.outputs if s.absmax is not None]
        grad_absmax = [s.absmax for s in grads if s.absmax is not None]
        role = ""
        if call.name in origins:
            role = "origin"
        elif call.name in propagated:
            role = "propagation"
        layers.append(LayerRow(
            call.name, type(call.layer).__name__,
            max(absmax) if absmax else None, sum(s.nonfinite for s in record.outputs),
            max(grad_absmax) if grad_absmax else None, sum(s.nonfinite for s in grads), role,
            [stats.as_dict() for stats in record.outputs],
        ))

    notes = []
    if result.interrupted:
        notes.append(f"interrupted with Ctrl-C after {result.batches} batches ({result.samples} samples); "
                     "the findings cover those batches only")
    if source.kind == "random":
        notes.append(f"no data file: inputs are {source.num_samples} samples drawn from a standard normal distribution (seed 0)")
    if training:
        notes.append("layers ran in training mode (training=True): Dropout is active and BatchNormalization "
                     "uses batch statistics; rerun without --training-mode for inference")
    else:
        notes.append("layers ran in inference mode (training=False): Dropout is off and BatchNormalization "
                     "uses its moving statistics; rerun with --training-mode to replay as in fit()")
    data = {"path": source.path, "format": source.kind, "samples": result.samples, "batch_size": batch_size,
            "input_keys": list(source.input_keys), "target_keys": list(source.target_keys)}
    model_info = {"path": loaded.path, "format": loaded.config.format, "name": model.name,
                  "layers": len(result.graph.calls), "parameters": int(model.count_params())}
    return ScanReport(model_info, data, replay_loss.description, findings, layers, result.batches,
                      result.samples, notes, interrupted=result.interrupted, graph=result.graph)


def _add_training_replay(report, loaded, source, input_specs, loss, batch_size, fit_steps, from_init,
                         optimizer, learning_rate, shuffle_seed, trust_code):
    import dataclasses

    from nandoctor.diagnosis.build import finalize
    from nandoctor.training.run import replay_training

    if not from_init and any(f.kind == "nonfinite_weights" for f in report.findings):
        report.findings = [dataclasses.replace(f, step=-1) if f.kind == "nonfinite_weights" else f
                           for f in report.findings]
        report.notes.append("the training replay did not run because the saved weights are already "
                            "non-finite; rerun with --from-init to replay from fresh weights")
        return

    def diagnose(model_state, batch_source):
        # Training mode, as in the fit step that broke.
        return _replay_and_diagnose(model_state, batch_source, input_specs, loss, batch_source.num_samples,
                                    True, None)

    findings, summary = replay_training(
        loaded, source, input_specs, steps=fit_steps, batch_size=batch_size, loss_name=loss,
        optimizer_name=optimizer, learning_rate=learning_rate, shuffle_seed=shuffle_seed,
        from_init=from_init, trust_code=trust_code, diagnose=diagnose)
    report.findings = finalize(report.findings + findings)
    report.training = summary
    if from_init:
        report.notes.append("the training replay started from fresh weights (seed 0), not from the file's")


def candidate_batch_release(candidates):
    """Drop the batches kept for the op-level re-run once it is done."""
    for candidate in candidates:
        candidate.batch = None


def _op_failure(failure, source):
    """Describe a TensorFlow op that failed during the replay as a user error."""
    from nandoctor.errors import ModelCodeError

    call = failure.call
    place = f"layer '{call.name}' ({type(call.layer).__name__})" if call else "a layer"
    start = failure.batch.start
    stop = start + len(failure.batch.inputs[0]) - 1
    text = getattr(failure.error, "message", str(failure.error))
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.strip().startswith(("[[", "Traceback"))]
    detail = " ".join(lines[:2])[:300]
    return ModelCodeError(
        f"{place} failed on {source.path or 'the generated inputs'}, batch {failure.batch_index} "
        f"(samples {start} to {stop}): {detail}; check that the data fits the layer (such as Embedding "
        "ids below input_dim) or fix the layer's code."
    )


def _nonfinite_variables(model):
    import numpy as np

    rows = []
    for variable in model.weights:
        value = np.asarray(variable.numpy())
        if value.dtype.kind != "f" or np.isfinite(value).all():
            continue
        rows.append((variable, int(np.isnan(value).sum()), int(np.isposinf(value).sum()),
                     int(np.isneginf(value).sum()), int(value.size)))
    return rows


def _weight_rows(bad_variables, result):
    rows = []
    for variable, nan, posinf, neginf, size in bad_variables:
        owner = None
        for call in result.graph.calls:
            if any(w is variable for w in call.layer.weights):
                owner = call
                break
        name = owner.name if owner else variable.path.rsplit("/", 1)[0]
        layer_class = type(owner.layer).__name__ if owner else None
        rows.append((name, layer_class, owner.index if owner else None, variable.path, nan, posinf, neginf, size))
    return rows
