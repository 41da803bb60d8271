"""Walk a Keras model's layer graph and call each layer through a hook.

Functional and Sequential models, nested at any depth, are opened and their
layers called one by one. A subclassed model has no graph to open, so it is
called as one layer.
"""

from dataclasses import dataclass

import keras
from keras import tree


@dataclass(frozen=True)
class LayerCall:
    """One call of a layer in the flattened graph, in execution order."""

    index: int
    name: str
    """Layer name, prefixed by the names of enclosing models ("encoder/dense")."""
    layer: object
    sources: tuple
    """For each input tensor: ("input", k) for model input k, ("call", i, j) for
    output j of call i, or None for a tensor made outside the graph."""


class LayerGraph:
    """Flat list of the layer calls of a model, filled by the first `run`."""

    def __init__(self, model, training=False):
        self.model = model
        self.training = training
        """Value passed as `training` to layers that take it and were not given one."""
        self.calls = []
        self.output_sources = []
        """Producer of each model output, in the form of `LayerCall.sources`."""
        self._recorded = False

    def input_tensors(self):
        return list(_graph_model(self.model).inputs)

    def run(self, inputs, hook):
        """Run the model on a list of input tensors, calling `hook` per layer.

        Args:
            inputs: One tensor per model input, in `model.inputs` order.
            hook: `hook(call, args, kwargs)` computes and returns the layer's
                outputs. `call` is the `LayerCall`.

        Returns:
            The model outputs as a flat list.
        """
        producers = {id(t): ("input", k) for k, t in enumerate(inputs)}
        state = {"counter": 0, "names": {}}
        outputs = self._run_model(self.model, list(inputs), hook, producers, state, "")
        if not self._recorded:
            self.output_sources = [producers.get(id(t)) for t in outputs]
        self._recorded = True
        return outputs

    def _run_model(self, model, inputs, hook, producers, state, prefix):
        graph_model = _graph_model(model)
        if graph_model is None:
            return tree.flatten(self._call_layer(model, (inputs if len(inputs) > 1 else inputs[0],), {}, hook, producers, state, prefix))

        values = {id(ref): value for ref, value in zip(graph_model.inputs, inputs)}
        for depth in sorted(graph_model._nodes_by_depth, reverse=True):
            for node in graph_model._nodes_by_depth[depth]:
                if not node.operation or node.is_input:
                    continue
                if any(id(x) not in values for x in node.input_tensors):
                    continue
                args, kwargs = node.arguments.fill_in(values)
                operation = node.operation
                nested = _graph_model(operation) if isinstance(operation, keras.Model) else None
                flat_args = [x for x in tree.flatten(args) if x is not None]
                if nested is not None and not kwargs.get("mask") and len(flat_args) == len(nested.inputs):
                    outputs = self._run_model(operation, flat_args, hook, producers, state, prefix + operation.name + "/")
                else:
                    outputs = tree.flatten(self._call_layer(operation, args, kwargs, hook, producers, state, prefix))
                for ref, value in zip(node.outputs, outputs):
                    values[id(ref)] = value
        return [values[id(ref)] for ref in graph_model.outputs]

    def _call_layer(self, layer, args, kwargs, hook, producers, state, prefix):
        index = state["counter"]
        state["counter"] += 1
        if not self._recorded:
            name = prefix + layer.name
            seen = state["names"].get(name, 0)
            state["names"][name] = seen + 1
            if seen:
                name = f"{name} (call {seen + 1})"
            sources = tuple(
                producers.get(id(x)) for x in tree.flatten((args, kwargs)) if _is_tensor(x)
            )
            self.calls.append(LayerCall(index, name, layer, sources))
        call = self.calls[index]

        if getattr(layer, "_call_has_training_arg", False) and kwargs.get("training") is None:
            kwargs = dict(kwargs, training=self.training)
        outputs = hook(call, args, kwargs)
        for j, value in enumerate(tree.flatten(outputs)):
            producers[id(value)] = ("call", index, j)
        return outputs


def _graph_model(model):
    """Return the functional graph behind a model, or None for a subclassed one."""
    if isinstance(model, keras.Sequential):
        functional = getattr(model, "_functional", None)
        return functional
    if hasattr(model, "_nodes_by_depth") and getattr(model, "_nodes_by_depth", None) and getattr(model, "inputs", None):
        return model
    return None


def _is_tensor(value):
    return hasattr(value, "dtype") and hasattr(value, "shape")


def copy_float_inputs(args, kwargs):
    """Give a layer call its own copy of each float input tensor.

    The gradient with respect to a copy is this call's share of the input's
    gradient, even when other layers read the same tensor. Keras masks carried
    on the tensor are kept.

    Returns:
        (args, kwargs, copies), with `copies` the new tensors in order.
    """
    import tensorflow as tf

    from nandoctor.replay.stats import is_float

    copies = []

    def copy(value):
        if tf.is_tensor(value) and is_float(value):
            duplicate = tf.identity(value)
            mask = getattr(value, "_keras_mask", None)
            if mask is not None:
                duplicate._keras_mask = mask
            copies.append(duplicate)
            return duplicate
        return value

    args, kwargs = tree.map_structure(copy, (args, kwargs))
    return args, kwargs, copies
