"""Assemble findings from the replay statistics and the op-level traces."""

import numpy as np

from nandoctor.diagnosis.findings import Evidence, Finding, Location, rank
from nandoctor.diagnosis.registry import rule_for_kind
from nandoctor.diagnosis.rules import (
    division_by_zero,
    infinite_gradient,
    invalid_domain,
    nonfinite_input,
    nonfinite_weights,
    overflow,
)


def data_findings(result, input_keys, target_keys, input_names):
    """Return a finding per input or target array that contains NaN or Inf.

    The finding's layer is the model input's name (None for targets), and the
    array's key in the data file is in `evidence.details["array"]`.
    """
    findings = []
    for role, keys, stats_list in (("input", input_keys, result.inputs), ("target", target_keys, result.targets)):
        for position, (key, stats) in enumerate(zip(keys, stats_list)):
            if not stats.nonfinite:
                continue
            rule = rule_for_kind("nonfinite_input")
            indices = tuple(stats.first_indices)
            where = f", first at index {indices[0]}" if indices else ""
            sentence = (
                f"{role} array '{key}' contains {_counts(stats)} in {stats.bad_samples} sample(s){where}"
            )
            findings.append(Finding(
                code=rule.code, rule=rule.name, kind=rule.kind, severity=rule.severity, phase="data",
                layer=input_names[position] if role == "input" else None,
                layer_class="InputLayer" if role == "input" else None,
                op=None, location=None,
                evidence=Evidence(sentence, nan=stats.nan, posinf=stats.posinf, neginf=stats.neginf,
                                  input_min=_finite_or_none(stats.min), input_max=_finite_or_none(stats.max),
                                  samples_affected=stats.bad_samples, first_sample_indices=indices,
                                  batch=stats.first_batch, details={"array": key, "role": role}),
                message=f"The data already contains NaN or Inf in {role} array '{key}'.",
                fix=nonfinite_input.fix(role),
                propagated_to=tuple(_descendant_names(result, ("input", position))) if role == "input" else (),
                layer_index=-1,
            ))
    return findings


def weight_findings(bad_weights, result):
    """Return a finding per layer whose saved weights contain NaN or Inf.

    Args:
        bad_weights: (layer name, layer class, call index or None, weight path,
            nan, posinf, neginf, size) tuples.
        result: The `ReplayResult`, for propagation and layer order.
    """
    findings = []
    rule = rule_for_kind("nonfinite_weights")
    for layer, layer_class, index, path, nan, posinf, neginf, size in bad_weights:
        bad = nan + posinf + neginf
        sentence = f"weight '{path}' contains {_counts_from(nan, posinf, neginf)} of {size} values"
        propagated = _descendant_names(result, ("call", index, 0)) if index is not None else []
        findings.append(Finding(
            code=rule.code, rule=rule.name, kind=rule.kind, severity=rule.severity, phase="weights",
            layer=layer, layer_class=layer_class, op=None, location=None,
            evidence=Evidence(sentence, nan=nan, posinf=posinf, neginf=neginf,
                              details={"weight": path, "size": size, "fraction": bad / max(size, 1)}),
            message=f"Layer '{layer}' has non-finite saved weights in '{path}'.",
            fix=nonfinite_weights.fix(), propagated_to=tuple(propagated),
            layer_index=-1 if index is None else index,
        ))
    return findings


def origin_finding(result, candidate, fault, row_map, loss_label):
    """Return the finding for one forward or backward origin.

    Args:
        result: The `ReplayResult`.
        candidate: The `Candidate` from the compiled replay.
        fault: The `OpFault` from the op-level trace, or None when no single op
            could be named.
        row_map: Array mapping the traced batch rows to sample indices.
        loss_label: How the report names the loss.
    """
    call = None if candidate.call_index is None else result.graph.calls[candidate.call_index]
    layer = call.name if call else None
    layer_class = type(call.layer).__name__ if call else None
    place = f"layer '{layer}' ({layer_class})" if call else f"the {loss_label}"

    if fault is None:
        kind = "infinite_gradient" if candidate.phase == "backward" else _layer_kind(result, candidate)
        op = None
        location = None
        sentence = _layer_sentence(result, candidate, place)
        evidence = Evidence(sentence, samples_affected=candidate.samples,
                            first_sample_indices=tuple(candidate.first_indices), batch=candidate.first_batch,
                            details={"batches": candidate.batches})
    else:
        kind = fault.kind
        op = fault.op
        location = Location(*fault.location) if fault.location else None
        samples = [int(row_map[r]) for r in fault.rows if r < len(row_map)]
        if candidate.phase == "forward" and candidate.samples:
            affected = candidate.samples
            first = tuple(candidate.first_indices)
        else:
            affected = len(samples)
            first = tuple(samples[:5])
        where = ""
        if first and candidate.phase == "forward" and candidate.samples:
            where = f"; {affected} sample(s) affected over all batches, first at index {first[0]}"
        elif first:
            where = f"; {affected} sample(s) affected, first at index {first[0]}"
        evidence = Evidence(f"in batch {candidate.first_batch}, {fault.sentence}{where}", dtype=fault.dtype, shape=fault.shape, nan=fault.nan,
                            posinf=fault.posinf, neginf=fault.neginf, input_min=fault.input_min,
                            input_max=fault.input_max, samples_affected=affected, first_sample_indices=first,
                            batch=candidate.first_batch,
                            details=dict(fault.details, batches=candidate.batches,
                                         hidden_forward_nan=fault.hidden_forward_nan))

    rule = rule_for_kind(kind)
    fix = _fix(kind, op, fault)
    op_text = f" in op {op}" if op else ""
    phase_text = "backward pass" if candidate.phase == "backward" else "forward pass"
    message = f"{rule.summary.rstrip('.')}: {place}{op_text}, {phase_text}."
    if candidate.phase == "backward":
        propagated = _ancestor_names(result, candidate.call_index)
    else:
        propagated = _descendant_names(result, ("call", candidate.call_index, 0)) if call else []
    return Finding(
        code=rule.code, rule=rule.name, kind=kind, severity=rule.severity, phase=candidate.phase,
        layer=layer, layer_class=layer_class, op=op, location=location, evidence=evidence,
        message=message, fix=fix, propagated_to=tuple(propagated),
        layer_index=len(result.graph.calls) if call is None else call.index,
    )


def finalize(findings):
    """Rank findings and drop repeats of the same origin."""
    seen = set()
    unique = []
    for finding in rank(findings):
        key = (finding.code, finding.phase, finding.layer, finding.op, finding.evidence.details.get("weight"),
               finding.evidence.details.get("array"))
        if key not in seen:
            seen.add(key)
            unique.append(finding)
    return unique


def _fix(kind, op, fault):
    if kind == "overflow":
        limit = fault.details.get("dtype_max", float(np.finfo(np.float32).max)) if fault else float(np.finfo(np.float32).max)
        return overflow.fix(op, limit)
    if kind == "division_by_zero":
        return division_by_zero.fix(op)
    if kind == "invalid_domain":
        return invalid_domain.fix(op)
    return infinite_gradient.fix(op, bool(fault and fault.hidden_forward_nan))


def _layer_kind(result, candidate):
    if candidate.call_index is None:
        return "invalid_domain"
    outputs = result.layers[candidate.call_index].outputs
    infinite = sum(s.posinf + s.neginf for s in outputs)
    return "overflow" if infinite else "invalid_domain"


def _layer_sentence(result, candidate, place):
    if candidate.call_index is None:
        return f"{place} turns finite outputs into a non-finite {'gradient' if candidate.phase == 'backward' else 'loss'}"
    record = result.layers[candidate.call_index]
    if candidate.phase == "backward":
        leaving = [s for s in record.grad_inputs if s is not None] + [s for _, s in record.grad_weights if s is not None]
        bad = sum(s.nonfinite for s in leaving)
        return f"{place} receives a finite gradient and passes on {bad} non-finite gradient value(s)"
    counts = _counts_from(sum(s.nan for s in record.outputs), sum(s.posinf for s in record.outputs),
                          sum(s.neginf for s in record.outputs))
    first = f", first at index {candidate.first_indices[0]}" if candidate.first_indices else ""
    return f"{place} turns finite inputs into {counts} in {candidate.samples} sample(s){first}"


def _descendant_names(result, source, include_self=False):
    """Names of layers downstream of `source` whose outputs were non-finite."""
    reached = {source[:2]}
    names = []
    for call, record in zip(result.graph.calls, result.layers):
        is_self = source[0] == "call" and call.index == source[1]
        if is_self or any(s is not None and s[:2] in reached for s in call.sources):
            reached.add(("call", call.index))
            bad = any(stats.nonfinite for stats in record.outputs)
            if bad and (include_self or not is_self):
                names.append(call.name)
    return names


def _ancestor_names(result, index):
    """Names of layers upstream of call `index` whose gradients were non-finite."""
    if index is None:
        index = len(result.graph.calls)
        upstream = {("call", s[1]) for s in result.graph.output_sources if s and s[0] == "call"}
    else:
        upstream = {("call", s[1]) for s in result.graph.calls[index].sources if s and s[0] == "call"}
    names = []
    for call in reversed(result.graph.calls[:index]):
        if ("call", call.index) not in upstream:
            continue
        upstream.update(("call", s[1]) for s in call.sources if s and s[0] == "call")
        record = result.layers[call.index]
        grads = [s for s in record.grad_outputs if s is not None]
        if any(s.nonfinite for s in grads):
            names.append(call.name)
    return names


def _counts(stats):
    return _counts_from(stats.nan, stats.posinf, stats.neginf)


def _counts_from(nan, posinf, neginf):
    parts = [f"{n} {label}" for n, label in ((nan, "NaN"), (posinf, "+Inf"), (neginf, "-Inf")) if n]
    return ", ".join(parts) or "no non-finite values"


def _finite_or_none(value):
    return float(value) if np.isfinite(value) else None
