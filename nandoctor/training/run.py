"""Run `--fit-steps`: replay training, then diagnose the step that broke."""

import dataclasses
import logging
import re


from nandoctor.errors import UsageError

logger = logging.getLogger(__name__)

INIT_SEED = 0
"""Seed of the fresh weights for `--from-init`."""

_PROBABILITY_LOSSES = ("categorical_crossentropy", "binary_crossentropy", "sparse_categorical_crossentropy")


def replay_training(loaded, source, input_specs, *, steps, batch_size, loss_name=None, optimizer_name=None,
                    learning_rate=None, shuffle_seed=None, from_init=False, trust_code=False, diagnose):
    """Replay `steps` optimizer steps and explain the first one that breaks.

    Args:
        loaded: The `LoadedModel`; its in-memory model is trained (or replaced
            by a freshly initialized copy with `from_init`). The file is not written.
        source: A `DataSource` with targets.
        input_specs: The model's input specs.
        steps, batch_size, loss_name, optimizer_name, learning_rate, shuffle_seed:
            See `nandoctor.scanner.scan`.
        from_init: Rebuild the model from its config with fresh weights (seed 0).
        trust_code: Whether the model's code may run (needed to rebuild lambdas).
        diagnose: `diagnose(loaded, source)` runs the forward, backward and
            op-level diagnosis and returns a `ScanReport`.

    Returns:
        (findings, summary) where `summary` is the JSON-ready record of the replay.
    """
    from nandoctor.diagnosis.divergence import (
        chain_sentence,
        divergence_finding,
        gradient_warnings,
        likely_causes,
    )
    from nandoctor.loading.data import DataSource
    from nandoctor.training.fit_replay import fit_replay, make_optimizer

    if steps < 1:
        raise UsageError(f"--fit-steps must be 0 (off) or a positive number of steps, received {steps}.")
    if not source.has_targets:
        raise UsageError("--fit-steps needs targets in the data file (key 'y' or --y-key).")
    loss = loss_name or loaded.loss
    if loss is None:
        raise UsageError("the model was saved without a compiled loss; pass --loss NAME for --fit-steps.")
    if from_init:
        loaded = _fresh_copy(loaded, trust_code)

    model = loaded.model
    optimizer = make_optimizer(model, loaded.config.compile_config, optimizer_name, learning_rate)
    if _computes_in_float16(model) and not hasattr(optimizer, "inner_optimizer"):
        import keras

        # compile() wraps the optimizer this way when the model is built under
        # the mixed_float16 policy; a loaded model's own policy is float32.
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    result = fit_replay(model, loss, optimizer, source, input_specs, steps, batch_size, shuffle_seed)
    findings = []
    if result.break_step is not None:
        for variable, value in zip(model.weights, result.weights_before):
            variable.assign(value)
        indices = result.steps[result.break_step].sample_indices
        batch_source = DataSource(None, "memory", result.batch_inputs, result.batch_targets,
                                  list(source.input_keys), list(source.target_keys), len(indices))
        report = diagnose(loaded, batch_source)
        origins = [f for f in report.findings if f.phase in ("forward", "backward", "data")]
        causes = likely_causes(result, [f for f in origins if f.phase != "data"],
                               _computes_in_float16(model), _loss_on_probabilities(loss))
        chain = chain_sentence(result)
        for finding in origins:
            findings.append(_as_training(finding, result.break_step, indices, causes, chain))
        if not [f for f in origins if f.phase != "data"]:
            findings.append(divergence_finding(result, causes))
    else:
        findings.extend(gradient_warnings(result))

    summary = {
        "steps_requested": steps,
        "steps_run": len(result.steps),
        "break_step": result.break_step,
        "break_reason": result.break_reason,
        "from_init": from_init,
        "shuffle_seed": shuffle_seed,
        "batch_size": batch_size,
        "optimizer": result.optimizer,
        "per_step": [
            {"step": s.step, "loss": s.loss, "grad_norm": s.grad_norm,
             "max_update_ratio": max(s.update_ratios.values(), default=0.0), "skipped": s.skipped}
            for s in result.steps
        ],
    }
    return findings, summary


def _as_training(finding, step, indices, causes, chain):
    """Turn a finding on the breaking batch into a training finding of that step."""
    mapped = tuple(int(indices[i]) for i in finding.evidence.first_sample_indices if 0 <= i < len(indices))
    details = dict(finding.evidence.details, chain=chain, causes=[c.name for c in causes])
    sentence = finding.evidence.sentence
    if sentence.startswith("in batch "):
        sentence = sentence.split(", ", 1)[1]  # The batch is the step's own, numbered by the step.
    # The diagnosis numbered the step's samples from 0; name them by their place in the file.
    sentence = re.sub(r"first at index (\d+)",
                      lambda m: f"first at index {int(indices[int(m.group(1))]) if int(m.group(1)) < len(indices) else m.group(1)}",
                      sentence)
    evidence = dataclasses.replace(finding.evidence, first_sample_indices=mapped, batch=step, details=details,
                                   sentence=f"at training step {step}, {sentence}")
    extra = [c for c in causes if c.name != "unbounded op"][:3]
    fix = " ".join([finding.fix] + [f"Likely cause, {c.name}: {c.fix}." for c in extra])
    return dataclasses.replace(finding, phase="training", step=step, evidence=evidence, fix=fix)


def _fresh_copy(loaded, trust_code):
    """Rebuild the model from its config with freshly initialized weights."""
    import keras
    from keras.src.saving import serialization_lib

    from nandoctor.loading.model import LoadedModel

    keras.utils.set_random_seed(INIT_SEED)
    # NOTE: SafeModeScope is a private Keras class; it keeps lambdas rejected
    # unless the user passed --trust-code, as when loading.
    with serialization_lib.SafeModeScope(safe_mode=not trust_code), \
            keras.saving.custom_object_scope(loaded.custom_objects):
        model = keras.models.clone_model(loaded.model)
    return LoadedModel(model, loaded.path, loaded.config, loaded.custom_objects, loaded.loss)


def _computes_in_float16(model):
    for layer in model._flatten_layers(include_self=False, recursive=True):
        policy = getattr(layer, "dtype_policy", None)
        if policy is not None and getattr(policy, "compute_dtype", None) == "float16":
            return True
    return False


def _loss_on_probabilities(loss):
    if isinstance(loss, dict):
        items = list(loss.values())
    elif isinstance(loss, (list, tuple)):
        items = list(loss)
    else:
        items = [loss]
    for item in items:
        if isinstance(item, str) and item in _PROBABILITY_LOSSES:
            return True
        if getattr(item, "from_logits", None) is False or getattr(item, "_fn_kwargs", {}).get("from_logits") is False:
            return True
    return False


