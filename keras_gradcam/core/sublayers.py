"""The layers inside a subclassed layer: what a functional graph does not show.

A KerasHub backbone is a functional model, but its transformer blocks live *inside* one
subclassed layer (``ViTBackbone``'s ``vit_encoder`` holds ``transformer_block_1`` ...
``transformer_block_N`` and the final norm ``ln``): they are tracked sub-layers, not graph
nodes, so the graph gives them no output shape. :func:`inner_layers` finds them with one probe:
the subclassed layer's ``call`` is traced once (``tf.function``, ``training=False``, nothing is
run) on symbolic inputs shaped like its graph inputs, while the ``call`` of every layer inside it
is wrapped (in the tracing thread only, undone in ``finally``; see
:func:`keras_gradcam.core.patching.thread_patches`) to record the output shape, how many times it
ran and which recorded layers' outputs it read. The result is cached per layer; the model is not
changed (no weight, attribute or state of it is written).

Only custom layers (not Keras' own) and nested models are looked into, attention layers not
(:func:`attention_layer`): the query, key and value projections inside an attention are not maps
anyone explains.
"""

from __future__ import annotations

import inspect
import weakref
from dataclasses import dataclass

import keras
import tensorflow as tf

from .patching import thread_patches

__all__ = ["Inner", "PROBE_BATCH", "attention_layer", "custom_layer", "inner_layers", "looks_inside", "traced_shape"]

PROBE_BATCH = 3  # the probe's batch size: an output whose first axis differs mixes the batch (windows)


@dataclass(frozen=True)
class Inner:
    """A layer inside a subclassed layer, as the probe saw it.

    ``path`` is relative to the subclassed layer (``"transformer_block_2/ln_1"``); ``shape`` has
    the batch axis ``None``, and is None where the output is not one tensor or its first axis is
    not the batch (Swin's windows fold them into the batch axis); ``calls`` is how many times it
    ran in one call of the subclassed layer; ``sources`` are the recorded layers whose outputs its
    first call read.
    """

    layer: keras.Layer
    path: str
    shape: tuple | None
    calls: int
    sources: tuple = ()


def custom_layer(layer) -> bool:
    """Whether ``layer`` is not one of Keras' own layers (a KerasHub or user layer)."""
    return not type(layer).__module__.startswith("keras.")


def attention_layer(layer) -> bool:
    """Whether ``layer`` mixes tokens: a ``MultiHeadAttention``, or a layer whose class is named for attention.

    KerasHub writes its own attention layers (Swin's ``WindowAttention``, MiT's
    ``SegFormerMultiheadAttention``, ``DINOV2Attention``); their insides (query/key/value
    projections, the attention probabilities per head) are not opened.
    """
    return isinstance(layer, keras.layers.MultiHeadAttention) or "attention" in type(layer).__name__.lower()


def _children(layer) -> list:
    try:
        return list(layer._flatten_layers(include_self=False, recursive=False))
    except (AttributeError, TypeError):
        return []


def looks_inside(op) -> bool:
    """Whether :func:`inner_layers` applies: a custom, non-model layer with tracked sub-layers, called in a graph."""
    if isinstance(op, keras.Model) or not isinstance(op, keras.Layer) or not custom_layer(op):
        return False
    return bool(_children(op)) and bool(getattr(op, "_inbound_nodes", None))


def _tree(layer, prefix: str, seen: set) -> list:
    """``(layer, path)`` for the layers inside ``layer``, parents first; only custom layers and models are opened."""
    found = []
    for child in _children(layer):
        if id(child) in seen:
            continue
        seen.add(id(child))
        path = prefix + child.name
        found.append((child, path))
        if isinstance(child, keras.Model) or (custom_layer(child) and not attention_layer(child)):
            found += _tree(child, path + "/", seen)
    return found


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_SHAPES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # what the probed call returned, batch axis None


def traced_shape(op) -> tuple | None:
    """The output shape that ``op``'s ``call`` gave in the probe of :func:`inner_layers` (batch axis None).

    None where ``op`` was not probed or does not return one batch-first tensor. It can differ
    from the symbolic shape of ``op``'s graph output, which its ``compute_output_shape`` reports:
    KerasHub's ``SigLIPVisionEmbedding`` says 17 tokens for a 4x4 grid and makes 16.
    """
    inner_layers(op)
    try:
        return _SHAPES.get(op)
    except TypeError:
        return None


def inner_layers(op) -> list[Inner]:
    """The layers that ran inside ``op`` (see the module docstring), in the order their calls returned.

    Empty if ``op`` is not a custom layer with sub-layers in a functional graph, or if the probe
    cannot trace it (a layer whose ``call`` only runs eagerly, say): the layer is then listed as
    before, without its inside.
    """
    if not looks_inside(op):
        return []
    try:
        return _CACHE[op]
    except (KeyError, TypeError):
        pass
    try:
        found = _probe(op)
    except Exception:  # noqa: BLE001 - any layer may fail to trace; its inside is then not listed
        found = []
    try:
        _CACHE[op] = found
    except TypeError:
        pass
    return found


def _spec(t):
    if isinstance(t, keras.KerasTensor):
        shape = tuple(t.shape)
        if len(shape) == 5 and shape[1] is None:  # (batch, images per prompt, H, W, C): one image per prompt
            shape = shape[:1] + (1,) + shape[2:]
        return tf.TensorSpec((PROBE_BATCH,) + shape[1:] if shape else shape, t.dtype)
    return t


def _probe(op) -> list[Inner]:
    node = op._inbound_nodes[0]
    arguments = node.arguments
    args = keras.tree.map_structure(_spec, tuple(arguments.args))
    kwargs = keras.tree.map_structure(_spec, dict(arguments.kwargs))
    if "training" in inspect.signature(op.call).parameters:
        kwargs["training"] = False
    tree = _tree(op, "", {id(op)})
    records = []  # (tree index, output, input tensors): kept alive until the trace is read

    def recorder(call, index):
        def recording_call(*a, **k):
            out = call(*a, **k)
            records.append((index, out, [t for t in tf.nest.flatten((a, k)) if tf.is_tensor(t)]))
            return out

        return recording_call

    edits = [(layer, "call", recorder(layer.call, i)) for i, (layer, _) in enumerate(tree)]
    returned = []
    with thread_patches(edits):
        traced = tf.function(lambda *a, **k: returned.append(op.call(*a, **k)) or returned[-1], autograph=False)
        traced.get_concrete_function(*args, **kwargs)
    own = returned[0] if returned else None
    if tf.is_tensor(own) and own.shape.rank and own.shape[0] == PROBE_BATCH:
        try:
            _SHAPES[op] = (None,) + tuple(own.shape.as_list()[1:])
        except TypeError:
            pass
    producer, first, calls = {}, {}, {}
    for index, out, inputs in records:
        calls[index] = calls.get(index, 0) + 1
        if index not in first:
            first[index] = (out, [producer[id(t)] for t in inputs if id(t) in producer])
        for t in tf.nest.flatten(out):
            producer[id(t)] = index
    found = []
    for index in dict.fromkeys(r[0] for r in records):
        out, sources = first[index]
        shape = None
        if tf.is_tensor(out) and out.shape.rank and out.shape[0] == PROBE_BATCH:
            shape = (None,) + tuple(out.shape.as_list()[1:])
        layer, path = tree[index]
        found.append(Inner(layer, path, shape, calls[index], tuple(tree[s][0] for s in dict.fromkeys(sources))))
    return found
