"""Latent-risk passes over a scanned model: headroom warnings, stress inputs and fix checks.

Each runs after the main replay, on the same in-memory model and `LayerGraph`.
"""

from nandoctor.replay.batches import finite_rows


def add_stress(report, loaded, source, input_specs, batch_size, training, save_repro, verify_fixes):
    """Run the stress probes and search, and add the faults they find to the report."""
    import dataclasses
    import os

    import numpy as np

    from nandoctor.diagnosis.build import finalize
    from nandoctor.loading.data import DataSource
    from nandoctor.replay.stress import find_stress_inputs

    graph = report.graph
    custom = {call.index for call in graph.calls if is_custom_layer(call.layer)}
    found = find_stress_inputs(graph, source, input_specs, batch_size, custom)
    stress_source = DataSource(None, "memory", found.inputs, [], list(source.input_keys), [], len(found.origins))
    from nandoctor.scanner import _replay_and_diagnose

    sub = _replay_and_diagnose(loaded, stress_source, input_specs, None, batch_size, training, None,
                               verify_fixes=verify_fixes)

    known = {(f.code, f.layer, f.op) for f in report.findings}
    added = []
    for finding in sub.findings:
        if finding.phase not in ("forward", "backward") or (finding.code, finding.layer, finding.op) in known:
            continue
        rows = list(finding.evidence.first_sample_indices) or [0]
        origin = found.origins[rows[0]] if rows[0] < len(found.origins) else "a stress input"
        repro = None
        if save_repro:
            os.makedirs(save_repro, exist_ok=True)
            repro = os.path.join(save_repro, f"stress-{len(added) + 1}-{finding.code}-{finding.layer or 'loss'}.npz")
            np.savez(repro, **{key: array[rows] for key, array in zip(source.input_keys, found.inputs)})
        evidence = dataclasses.replace(finding.evidence, details=dict(finding.evidence.details, stress_input=origin),
                                       sentence=f"on a stress input ({origin}), {finding.evidence.sentence}")
        added.append(dataclasses.replace(finding, phase="stress", evidence=evidence, repro=repro))
        known.add((finding.code, finding.layer, finding.op))
    report.findings = finalize(report.findings + added)
    report.notes.append(f"stress search: {found.budget}; {len(added)} new fault(s) found")


def verify_fixes(findings, result, replay_loss, source, input_specs, batch_size):
    """Apply each origin's fix in memory on its first failing batch and record whether it clears the fault."""
    import dataclasses

    from nandoctor.diagnosis.rules import overflow
    from nandoctor.replay.fixes import FIXABLE_OPS, verify

    batches = {}
    wanted = {f.evidence.batch for f in findings if f.phase in ("forward", "backward") and f.op in FIXABLE_OPS}
    for batch_index, batch in enumerate(source.batches(batch_size, input_specs)):
        if batch_index in wanted:
            batches[batch_index] = batch
        if len(batches) == len(wanted):
            break

    checked = []
    for finding in findings:
        batch = batches.get(finding.evidence.batch)
        if finding.phase not in ("forward", "backward") or finding.op not in FIXABLE_OPS or batch is None:
            checked.append(finding)
            continue
        rows = finite_rows(batch)
        target = "loss" if finding.layer is None else finding.layer_index
        outcome = verify(result.graph, replay_loss, [x[rows] for x in batch.inputs],
                         [y[rows] for y in (batch.targets or [])], target, finding.op)
        fix = finding.fix
        if finding.op in ("Exp", "Expm1") and outcome["verified"]:
            fix = overflow.fix(finding.op, finding.evidence.details.get("dtype_max", 3.4028234663852886e38),
                               bound=outcome["parameter"])
        elif not outcome["verified"]:
            fix += (" The in-memory check of this fix did not clear the fault, so the values after this op "
                    "need a bound too.")
        check = {"batch": finding.evidence.batch, "before": outcome["before"], "after": outcome["after"]}
        checked.append(dataclasses.replace(finding, fix=fix, fix_verified=outcome["verified"], fix_check=check))
    return checked


def headroom_findings(result, replay_loss, source, input_specs, batch_size, thresholds, headroom_batches,
                       faults, loss_label):
    """Measure the margins of risky ops in custom code and of all layer outputs and gradients."""
    from nandoctor.diagnosis import headroom
    from nandoctor.replay.ops import trace_batch

    calls = result.graph.calls
    targets = {call.index for call in calls if is_custom_layer(call.layer)}
    if replay_loss.custom:
        targets.add("loss")
    risks = {}
    if targets:
        for batch_index, batch in enumerate(source.batches(batch_size, input_specs)):
            if batch_index >= headroom_batches:
                break
            rows = finite_rows(batch)
            if not rows.size:
                continue
            trace = trace_batch(result.graph, replay_loss, [x[rows] for x in batch.inputs],
                                [y[rows] for y in (batch.targets or [])], targets)
            for target, records in trace.ops.items():
                headroom.merge(risks, headroom.measure(records, target, thresholds))
    risks.update(headroom.activation_risks(calls, result.layers, thresholds))

    # A layer that already fails, or only carries another layer's failure, gets
    # no risk on top of that fault.
    failing = {f.layer for f in faults if f.severity == "error"}
    failing.update(name for f in faults if f.severity == "error" for name in f.propagated_to)
    failing_loss = any(f.severity == "error" and f.layer is None and f.phase in ("forward", "backward") for f in faults)
    risks = {key: risk for key, risk in risks.items()
             if not (isinstance(key[0], int) and calls[key[0]].name in failing) and not (key[0] == "loss" and failing_loss)}
    return headroom.findings(risks, calls, loss_label)


def is_custom_layer(layer):
    """Return whether a layer runs user code: a Lambda, or a class defined outside Keras."""
    import keras

    return isinstance(layer, keras.layers.Lambda) or not type(layer).__module__.startswith("keras")
