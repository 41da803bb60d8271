"""The compiled forward and backward replay over all batches.

One `tf.function` runs the model layer by layer inside a `GradientTape`,
takes gradients with respect to every layer's outputs, inputs and trainable
weights, and returns small per-tensor summaries. The host folds them into
running statistics and marks the layers where non-finite values first appear.
"""

import logging
import re
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf
from keras import tree

from nandoctor.replay.graph import LayerGraph, copy_float_inputs
from nandoctor.replay.stats import TensorStats, is_float, pack, summarize, unpack

logger = logging.getLogger(__name__)


class ReplayOpError(Exception):
    """A TensorFlow op failed while replaying a batch (not a non-finite value)."""

    def __init__(self, call, batch_index, batch, error):
        super().__init__(str(error))
        self.call = call
        """The `LayerCall` whose op failed, or None when the message names none."""
        self.batch_index = batch_index
        self.batch = batch
        self.error = error


@dataclass
class Candidate:
    """A place where non-finite values first appear, before op-level diagnosis."""

    call_index: int | None
    """Index of the layer call, or None for the loss."""
    phase: str
    """"forward" or "backward"."""
    first_batch: int
    batch: object
    """The first `Batch` that shows it, kept for the op-level re-run."""
    samples: int = 0
    """Number of samples where it appears (forward only)."""
    first_indices: list = field(default_factory=list)
    batches: int = 0
    """Number of batches where it appears."""
    mixed: bool = False
    """True when the same batch also had non-finite inputs at this layer, so
    the layer may only spread them across samples; the op-level re-run decides."""


@dataclass
class LayerRecord:
    """Statistics of one layer call over all batches."""

    outputs: list
    """A `TensorStats` per float output."""
    grad_outputs: list
    """A `TensorStats` per float output (None where no gradient arrives)."""
    grad_inputs: list
    grad_weights: list
    """(weight path, `TensorStats`) per trainable weight."""


@dataclass
class ReplayResult:
    """Everything the compiled replay measured."""

    graph: LayerGraph
    layers: list
    inputs: list
    """A `TensorStats` per model input."""
    targets: list
    loss: TensorStats
    batches: int = 0
    samples: int = 0
    candidates: list = field(default_factory=list)
    interrupted: bool = False
    """True when Ctrl-C stopped the replay; the counts cover the batches done."""


class CompiledReplay:
    """Replays a model's forward and backward pass with in-graph checks."""

    def __init__(self, model, loss, bad_variable_ids=(), training=False):
        """Prepare the replay.

        Args:
            model: A Keras model.
            loss: A `ReplayLoss`.
            bad_variable_ids: `id()` of variables whose saved values are
                already non-finite. Layers that own one are not marked as
                origins, because the weights finding explains them.
            training: Run layers in training mode (Dropout active,
                BatchNormalization on batch statistics).
        """
        self.graph = LayerGraph(model, training=training)
        self.loss = loss
        self.bad_variable_ids = set(bad_variable_ids)
        self._skip_layers = None
        self._trainable_upstream = None
        self._partial = None
        self._functions = {}
        """Compiled steps: False for the fast clean check, True for full counts."""
        self._templates = {}

    def _step(self, inputs, targets, detailed):
        records = []

        def hook(call, args, kwargs):
            args, kwargs, copies = copy_float_inputs(args, kwargs)
            outputs = call.layer(*args, **kwargs)
            flat = [t for t in tree.flatten(outputs) if tf.is_tensor(t)]
            records.append((call, copies, flat))
            return outputs

        with tf.GradientTape() as tape:
            # Watching the inputs records layers that have no weights before
            # them, so gradients reach every layer output.
            for tensor in inputs:
                if is_float(tensor):
                    tape.watch(tensor)
            outputs = self.graph.run(list(inputs), hook)
            loss = self.loss(targets, outputs)

        sources = []
        layout = []
        for call, copies, flat in records:
            float_outputs = [t for t in flat if is_float(t)]
            weights = list(call.layer.trainable_weights)
            layout.append((len(float_outputs), len(copies), len(weights)))
            sources.extend(float_outputs)
            sources.extend(copies)
            sources.extend(weights)
        gradients = tape.gradient(loss, sources, unconnected_gradients=tf.UnconnectedGradients.NONE)

        def summary(tensor):
            if tensor is None:
                return None
            if isinstance(tensor, tf.IndexedSlices):
                tensor = tf.convert_to_tensor(tensor)
            return summarize(tensor, detailed)

        result = {"loss": summary(tf.reshape(loss, [1]) if loss.shape.rank == 0 else loss),
                  "inputs": [summary(x) for x in inputs if is_float(x)],
                  "targets": [summary(y) for y in targets if is_float(y)],
                  "layers": []}
        position = 0
        for (call, copies, flat), (n_out, n_in, n_w) in zip(records, layout):
            float_outputs = [t for t in flat if is_float(t)]
            chunk = gradients[position:position + n_out + n_in + n_w]
            position += n_out + n_in + n_w
            result["layers"].append({
                "outputs": [summary(t) for t in float_outputs],
                "grad_outputs": [summary(g) for g in chunk[:n_out]],
                "grad_inputs": [summary(g) for g in chunk[n_out:n_out + n_in]],
                "grad_weights": [summary(g) for g in chunk[n_out + n_in:]],
            })
        batch_size = tf.shape(inputs[0], out_type=tf.int32)[0]
        self._templates[detailed], scalars, masks = pack(result, batch_size)
        return scalars, masks

    def run(self, source, input_specs, batch_size, progress=None):
        """Replay every batch of `source` and return a `ReplayResult`.

        Ctrl-C after at least one batch returns the result so far, with
        `interrupted` set, so that the findings up to then can be reported.
        """
        result = None
        candidates = {}
        try:
            result = self._run_batches(source, input_specs, batch_size, progress, candidates)
        except KeyboardInterrupt:
            result = self._partial
            if result is None:
                raise
            result.interrupted = True
        result.candidates = sorted(candidates.values(), key=lambda c: (c.first_batch, c.phase != "forward", -1 if c.call_index is None else c.call_index))
        return result

    def _run_batches(self, source, input_specs, batch_size, progress, candidates):
        result = None
        self._partial = None
        for batch_index, batch in enumerate(source.batches(batch_size, input_specs)):
            try:
                summary = self._summaries(batch, detailed=False)
                if any(summary_flags_fault(item) for item in _leaves(summary)):
                    # Some tensor is not finite: redo the batch with full counts and per-sample flags.
                    summary = self._summaries(batch, detailed=True)
            except tf.errors.OpError as error:
                raise ReplayOpError(self._failing_call(error), batch_index, batch, error) from error
            if result is None:
                result = self._empty_result(summary)
            self._fold(result, summary, batch, batch_index)
            self._mark_candidates(result, summary, batch, batch_index, candidates)
            result.batches += 1
            result.samples += len(batch.inputs[0])
            # NOTE: Ctrl-C in the middle of the folding above can leave one batch half counted.
            self._partial = result
            if progress is not None:
                progress(result.samples)
        return result

    def _failing_call(self, error):
        """Return the layer call named in a failed op's node path, or None."""
        nodes = re.findall(r"(?:\{\{node |node ')([^}'\s]+)", str(error))
        names = {call.layer.name: call for call in self.graph.calls}
        for node in nodes:
            for part in node.split("/"):
                call = names.get(part) or names.get(re.sub(r"_\d+$", "", part))
                if call is not None:
                    return call
        return None

    def _summaries(self, batch, detailed):
        if detailed not in self._functions:
            self._functions[detailed] = self._trace(batch, detailed)
        inputs = [tf.convert_to_tensor(x) for x in batch.inputs]
        targets = [tf.convert_to_tensor(y) for y in batch.targets or []]
        scalars, masks = self._functions[detailed](inputs, targets)
        return unpack(self._templates[detailed], scalars.numpy(), masks.numpy())

    def _trace(self, batch, detailed):
        input_signature = [
            tf.TensorSpec([None] + list(x.shape[1:]), tf.as_dtype(x.dtype)) for x in batch.inputs
        ]
        target_signature = [
            tf.TensorSpec([None] + list(y.shape[1:]), tf.as_dtype(y.dtype)) for y in (batch.targets or [])
        ]
        logger.debug("compiling the replay for inputs %s and targets %s", input_signature, target_signature)
        return tf.function(lambda inputs, targets: self._step(inputs, targets, detailed),
                           input_signature=[input_signature, target_signature])

    def _empty_result(self, summary):
        layers = []
        for call, entry in zip(self.graph.calls, summary["layers"]):
            weights = [w.path for w in call.layer.trainable_weights]
            layers.append(LayerRecord(
                outputs=[TensorStats() for _ in entry["outputs"]],
                grad_outputs=[None if g is None else TensorStats() for g in entry["grad_outputs"]],
                grad_inputs=[None if g is None else TensorStats() for g in entry["grad_inputs"]],
                grad_weights=[(path, None if g is None else TensorStats()) for path, g in zip(weights, entry["grad_weights"])],
            ))
        return ReplayResult(
            graph=self.graph,
            layers=layers,
            inputs=[TensorStats() for _ in summary["inputs"]],
            targets=[TensorStats() for _ in summary["targets"]],
            loss=TensorStats(),
        )

    @staticmethod
    def _fold(result, summary, batch, batch_index):
        start = batch.start
        for stats, item in zip(result.inputs, summary["inputs"]):
            stats.add(item, start, batch_index)
        for stats, item in zip(result.targets, summary["targets"]):
            stats.add(item, start, batch_index)
        result.loss.add(summary["loss"], start, batch_index)
        for record, entry in zip(result.layers, summary["layers"]):
            for stats, item in zip(record.outputs, entry["outputs"]):
                stats.add(item, start, batch_index)
            for group, items in ((record.grad_outputs, entry["grad_outputs"]), (record.grad_inputs, entry["grad_inputs"])):
                for stats, item in zip(group, items):
                    if stats is not None and item is not None:
                        stats.add(item, start, batch_index)
            for (_, stats), item in zip(record.grad_weights, entry["grad_weights"]):
                if stats is not None and item is not None:
                    stats.add(item, start, batch_index)

    def _mark_candidates(self, result, summary, batch, batch_index, candidates):
        if self._skip_layers is None:
            self._skip_layers = {
                call.index for call in self.graph.calls
                if any(id(w) in self.bad_variable_ids for w in call.layer.weights)
            }
            self._trainable_upstream = _trainable_upstream(self.graph.calls)
        size = len(batch.inputs[0])
        masks = {}
        for k, item in enumerate(summary["inputs"]):
            masks[("input", k)] = _sample_mask(item, size)
        loss_finite = _count(summary["loss"]) == 0
        outputs_finite = True
        forward_clean = {}

        for call, entry in zip(self.graph.calls, summary["layers"]):
            in_bad = np.zeros(size, bool)
            for source in call.sources:
                if source is not None and source in masks:
                    in_bad |= masks[source]
            out_bad = np.zeros(size, bool)
            for j, item in enumerate(entry["outputs"]):
                mask = _sample_mask(item, size)
                masks[("call", call.index, j)] = mask
                out_bad |= mask
            forward_clean[call.index] = not in_bad.any() and not out_bad.any()

            new = out_bad & ~in_bad
            if new.any() and call.index not in self._skip_layers:
                rows = np.flatnonzero(new)
                candidate = candidates.get((call.index, "forward"))
                if candidate is None:
                    candidate = candidates[(call.index, "forward")] = Candidate(call.index, "forward", batch_index, batch, mixed=bool(in_bad.any()))
                candidate.samples += len(rows)
                candidate.batches += 1
                room = TensorStats.MAX_INDICES - len(candidate.first_indices)
                candidate.first_indices.extend(int(batch.start + r) for r in rows[:max(room, 0)])

        model_outputs = [source for source in self.graph.output_sources if source is not None]
        for source in model_outputs:
            if source in masks and masks[source].any():
                outputs_finite = False
        targets_finite = all(_count(item) == 0 for item in summary["targets"])
        inputs_finite = all(_count(item) == 0 for item in summary["inputs"])

        if outputs_finite and targets_finite and inputs_finite and not loss_finite:
            _note(candidates, (None, "forward"), batch_index, batch)
        if not loss_finite:
            return

        for call, entry in zip(self.graph.calls, summary["layers"]):
            if not forward_clean[call.index]:
                continue
            arriving_finite = all(g is None or _count(g) == 0 for g in entry["grad_outputs"])
            # A non-finite gradient with respect to the inputs matters only when
            # it can reach a trainable weight upstream.
            leaving = list(entry["grad_weights"])
            if self._trainable_upstream[call.index]:
                leaving += entry["grad_inputs"]
            leaving = [g for g in leaving if g is not None]
            if arriving_finite and any(_count(g) for g in leaving):
                _note(candidates, (call.index, "backward"), batch_index, batch)
        if outputs_finite and inputs_finite and targets_finite:
            for source in model_outputs:
                if source[0] != "call":
                    continue
                grads = summary["layers"][source[1]]["grad_outputs"]
                grad = grads[source[2]] if source[2] < len(grads) else None
                if grad is not None and _count(grad):
                    _note(candidates, (None, "backward"), batch_index, batch)


def _trainable_upstream(calls):
    """Return, per call, whether a layer with trainable weights feeds it."""
    flags = []
    for call in calls:
        upstream = False
        for source in call.sources:
            if source is not None and source[0] == "call":
                producer = calls[source[1]]
                upstream = upstream or flags[source[1]] or bool(producer.layer.trainable_weights)
        flags.append(upstream)
    return flags


def _note(candidates, key, batch_index, batch):
    candidate = candidates.get(key)
    if candidate is None:
        candidate = candidates[key] = Candidate(key[0], key[1], batch_index, batch)
    candidate.batches += 1


def _count(item):
    return int(item["nan"]) + int(item["posinf"]) + int(item["neginf"])


def _sample_mask(item, size):
    bad = item.get("bad_samples")
    if bad is not None and len(bad) == size:
        return np.asarray(bad, bool)
    return np.full(size, _count(item) > 0)


def summary_flags_fault(summary):
    """Return whether a summary reports any non-finite value."""
    return _count(summary) > 0


def _leaves(node):
    if node is None:
        return
    if isinstance(node, dict) and "nan" in node:
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _leaves(value)
    else:
        for value in node:
            yield from _leaves(value)
