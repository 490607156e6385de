"""Cut points of a Keras model: its layer graph handed to the cut search (splitpoint/cuts.py).

`find_cut_points` walks the functional graph back from the outputs, orders the layer
calls topologically (ties in model.summary() order, so k counts layers as a user reads
them), builds the abstract graph with each tensor's int8 bytes, and maps the offered
cuts back to KerasTensors: the head of split k is Model(inputs, cut tensors), its
tail Model(cut tensors, outputs).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from splitpoint import cuts as cuts_mod
from splitpoint.errors import PartitionError

log = logging.getLogger("splitpoint.partition")  # the partitioner's logger: users filter on one name


@dataclass(frozen=True)
class CutPoint:
    split: int  # layers on the edge
    layer: str  # the last edge layer (in topological order)
    tensors: tuple[Any, ...]  # the KerasTensors that cross the cut (the model outputs for k = K, () for k = 0)

    @property
    def tensor(self) -> Any:
        """The one tensor of a single-tensor cut (None for k = 0)."""
        return self.tensors[0] if self.tensors else None


def as_functional(model: Any) -> Any:
    """A Sequential model rebuilt as a functional one over the same layers (weights shared)."""
    import keras

    if isinstance(model, keras.Sequential):
        try:
            inputs = model.inputs
        except AttributeError:  # Keras 3 raises instead of returning [] for an unbuilt Sequential
            inputs = None
        if not inputs:
            raise PartitionError(f"Sequential model {model.name!r} is not built: give it an Input layer")
        x = inp = keras.Input(batch_shape=inputs[0].shape, dtype=inputs[0].dtype, name="input")
        for layer in model.layers:
            x = layer(x)
        return keras.Model(inp, x, name=model.name)
    if not hasattr(model, "inputs") or not model.inputs:
        raise PartitionError(f"model {getattr(model, 'name', model)!r} is subclassed or not built; use a functional or Sequential model")
    return model


def inline_nested(model: Any) -> tuple[Any, list[str]]:
    """(`model` with every nested model's layers called in its own graph, the nested models' names).

    A nested model - a keras.applications backbone called as one layer, the usual transfer-learning
    build - is one node to the cut search, so no split fell inside it: MobileNetV2 under a
    GlobalAveragePooling2D and a Dense offered splits 0, 1, 2, 3 - all of the backbone or none on
    the edge. Re-running the outer graph with each nested model's own graph in its place gives the
    same computation (the same layer objects and weights) with every layer a node. A model this
    cannot rebuild (layer names that clash once side by side) is returned as it was.
    """
    import keras

    if not any(isinstance(layer, keras.Model) for layer in model.layers):
        return model, []
    try:  # Keras' own class and graph walk (private): a Keras without them keeps nested models whole
        from keras.src.models.functional import Functional
    except ImportError:
        log.debug("this Keras has no keras.src.models.functional: nested models stay one layer each")
        return model, []
    nested: list[str] = []

    def inline(op: Any) -> Any:
        if isinstance(op, keras.Sequential):
            nested.append(op.name)

            def chain(x: Any, **_: Any) -> Any:
                for layer in op.layers:
                    x = inline(layer)(x)
                return x
            return chain
        if isinstance(op, Functional):
            nested.append(op.name)
            return lambda *args, **_: op._run_through_graph(args[0] if len(args) == 1 else args, operation_fn=inline)
        return op

    x = keras.Input(batch_shape=model.inputs[0].shape, dtype=model.inputs[0].dtype, name=model.inputs[0].name)
    try:
        flat = keras.Model(x, model._run_through_graph(x, operation_fn=inline), name=model.name)
    except Exception as exc:  # noqa: BLE001 - the nested model stays one layer, as before
        log.info("nested model(s) kept whole, as one layer each (%s: %s): no split falls inside them",
                 type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        return model, []
    return flat, list(dict.fromkeys(nested))  # a model called twice is named once


def _node_key(tensor: Any) -> tuple[int, int]:
    op, node_index, _ = tensor._keras_history
    return id(op), node_index


def find_cut_points(model: Any, max_cut_tensors: int = 1) -> tuple[list[CutPoint], int]:
    """(offered cut points including k = 0 and k = K, K) for a functional model.

    With max_cut_tensors = 1 these are the points where one tensor carries all state
    forward; with more, cuts whose frontier is up to that many tensors (splitpoint/cuts.py).
    """
    if len(model.inputs) != 1:
        raise PartitionError(
            f"model {model.name!r} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
            "splitpoint partitions models with one image input"
        )
    if max_cut_tensors < 1:
        raise PartitionError(f"--max-cut-tensors {max_cut_tensors}: must be at least 1")
    compute = layer_nodes(model)
    check_splittable(model, f"model {model.name!r}", compute)
    graph, tensors = model_graph(model, compute)
    offered = cuts_mod.offered_cuts(graph, max_cut_tensors)
    out = [CutPoint(0, "", ())]
    for c in offered[1:]:
        last = compute[c.last_node].operation.name
        frontier = tuple(model.outputs) if c.size == len(compute) else tuple(tensors[t] for t in c.frontier)
        out.append(CutPoint(c.size, last, frontier))
    return out, len(compute)


def check_splittable(model: Any, what: str, compute: list[Any] | None = None) -> None:
    """Refuse, in one line starting with `what`, a one-input model whose graph no split can be cut from.

    Each of these once got past the cut search and ended in a traceback (exit 1) while a split was
    built: a layer called twice, or one output listed twice, made Keras refuse the tail ("Output with
    path 0 is not connected to inputs": a tail built from cut tensors maps each cut tensor's layer to
    the tail's input, all of its calls); an output that is the input itself cannot come out of a tail,
    which never sees the image; a model with no layer at all failed an assertion building split 0.
    `compute` is layer_nodes(model), when the caller has it.
    """
    import keras

    nodes = layer_nodes(model) if compute is None else compute
    if not nodes:
        raise PartitionError(f"{what} has no layers: its output is its input, so there is nothing to split; "
                             "partition a model with layers that compute (Conv2D, Dense, ...)")
    seen: dict[tuple[int, int, int], int] = {}
    for i, t in enumerate(model.outputs, 1):
        op, node_index, tensor_index = t._keras_history
        if isinstance(op, keras.layers.InputLayer):
            raise PartitionError(f"{what}: its output {i} is its input, passed through unchanged, which no split's "
                                 "tail can return (the tail never sees the image): in the program that builds the "
                                 "model, leave that output out and save it again")
        first = seen.setdefault((id(op), node_index, tensor_index), i)
        if first != i:
            raise PartitionError(f"{what}: its outputs {first} and {i} are one tensor (of layer {op.name!r}), which "
                                 "a split's tail cannot return twice: in the program that builds the model, list "
                                 "each output once and save it again")
    calls: dict[int, int] = {}
    for node in nodes:
        calls[id(node.operation)] = calls.get(id(node.operation), 0) + 1
    for node in nodes:
        if calls[id(node.operation)] > 1:
            raise PartitionError(f"{what}: layer {node.operation.name!r} is called {calls[id(node.operation)]} times "
                                 "(a shared layer, or one of a nested model called more than once); splitpoint cuts "
                                 "between layer calls and needs each layer called once: in the program that builds "
                                 "the model, give each call its own layer and save it again")


def layer_nodes(model: Any) -> list[Any]:
    """The model's layer calls (Keras nodes) that lead to its outputs, in topological order."""
    # Walk back from the outputs: the nodes that matter, each with its input tensors.
    nodes: dict[tuple[int, int], Any] = {}
    stack = list(model.outputs)
    while stack:
        t = stack.pop()
        key = _node_key(t)
        if key in nodes:
            continue
        op, node_index, _ = t._keras_history
        node = op._inbound_nodes[node_index]
        nodes[key] = node
        stack.extend(node.input_tensors)
    # Topological order: Kahn's algorithm, ties broken by the model's layer order so
    # that k counts layers the way model.summary() lists them.
    layer_rank = {id(layer): i for i, layer in enumerate(model.layers)}
    deps = {k: {_node_key(t) for t in n.input_tensors} for k, n in nodes.items()}
    order: list[tuple[int, int]] = []
    ready = sorted((k for k, d in deps.items() if not d), key=lambda k: (layer_rank.get(k[0], -1), k[1]))
    done: set[tuple[int, int]] = set()
    while ready:
        k = ready.pop(0)
        order.append(k)
        done.add(k)
        newly = [c for c, d in deps.items() if c not in done and c not in ready and d <= done]
        ready = sorted(ready + newly, key=lambda k: (layer_rank.get(k[0], -1), k[1]))
    return [nodes[k] for k in order if nodes[k].input_tensors]  # InputLayer nodes have no inputs


def model_graph(model: Any, compute: list[Any]) -> tuple[cuts_mod.Graph, dict[int, Any]]:
    """The cut search's view of the model (compute: its layer nodes in topological order):
    (graph with tensor ids in production order and int8 bytes each, tensor id -> KerasTensor)."""
    ids: dict[int, int] = {}
    tensors: dict[int, Any] = {}

    def tid(t: Any) -> int:
        if id(t) not in ids:
            ids[id(t)] = len(ids)
            tensors[ids[id(t)]] = t
        return ids[id(t)]

    for t in model.inputs:
        tid(t)
    node_inputs = tuple(tuple(tid(t) for t in n.input_tensors) for n in compute)
    node_outputs = tuple(tuple(tid(t) for t in n.output_tensors) for n in compute)
    sizes = {i: int(np.prod([d or 1 for d in t.shape[1:]], dtype=np.int64)) for i, t in tensors.items()}
    graph = cuts_mod.Graph(node_inputs, node_outputs, sizes,
                           frozenset(ids[id(t)] for t in model.inputs), frozenset(ids[id(t)] for t in model.outputs))
    return graph, tensors


def tensor_name(t: Any) -> str:
    """A cut tensor's name on the wire: its layer's, with the output index for multi-output layers."""
    op, _, index = t._keras_history
    return op.name if index == 0 else f"{op.name}:{index}"
