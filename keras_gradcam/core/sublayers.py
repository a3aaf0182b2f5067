"""The layers inside a subclassed layer: what a functional graph does not show.

A KerasHub backbone is a functional model, but its transformer blocks live *inside* one
subclassed layer (``ViTBackbone``'s ``vit_encoder`` holds ``transformer_block_1`` ...
``transformer_block_N`` and the final norm ``ln``): they are tracked sub-layers, not graph
nodes, so the graph gives them no output shape. :func:`inner_layers` finds them with one probe:
the subclassed layer's ``call`` runs once (``training=False``) on abstract inputs shaped like its
graph inputs, with a batch of :data:`PROBE_BATCH`, by the backend seam's
:func:`~keras_gradcam.core.backend.abstract_call` (a ``tf.function`` traced, never run, on
TensorFlow; :func:`jax.eval_shape` on JAX; torch's ``meta`` device on PyTorch, or zeros where an op
has no meta kernel), while the ``call`` of every layer inside it is wrapped (in the probing thread only,
undone in ``finally``; see :func:`keras_gradcam.core.patching.thread_patches`) to record the
output shape, how many times it ran and which recorded layers' outputs it read. The result is
cached per layer; the model is not changed (no weight, attribute or state of it is written).

Only custom layers (not Keras' own) and nested models are looked into, attention layers not
(:func:`attention_layer`): the query, key and value projections inside an attention are not maps
anyone explains.
"""

from __future__ import annotations

import inspect
import weakref
from dataclasses import dataclass

import keras

from . import backend
from .patching import thread_patches

__all__ = ["Inner", "PROBE_BATCH", "PROBE_SIZES", "attention_layer", "custom_layer", "inner_layers", "looks_inside", "traced_shape"]

PROBE_BATCH = 3  # the probe's batch size: an output whose first axis differs mixes the batch (windows)
PROBE_SIZES = (4, 5)  # a size the graph leaves unknown (None) in the probe's two runs, off TensorFlow


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


def _spec(t, fill: int):
    """A symbolic input as the probe's: batch :data:`PROBE_BATCH`, an unknown size ``fill`` (None: left unknown)."""
    if isinstance(t, keras.KerasTensor):
        shape = tuple(t.shape)
        if len(shape) == 5 and shape[1] is None:  # (batch, images per prompt, H, W, C): one image per prompt
            shape = shape[:1] + (1,) + shape[2:]
        shape = (PROBE_BATCH,) + tuple(fill if d is None else d for d in shape[1:]) if shape else shape
        return keras.KerasTensor(shape, t.dtype)
    return t


def _unknown_sizes(structure) -> bool:
    return any(None in tuple(t.shape)[1:] for t in keras.tree.flatten(structure) if isinstance(t, keras.KerasTensor))


def _agree(a, b):
    """``a`` where it equals ``b``; None where they differ (recursively through tuples and lists of one length)."""
    if isinstance(a, (tuple, list)) and type(a) is type(b) and len(a) == len(b):
        return type(a)(_agree(x, y) for x, y in zip(a, b))
    return a if a == b else None


def _dimension(d):
    """A dimension as an int, or None where the backend does not know it (None, or JAX's symbolic size)."""
    try:
        return int(d) if d is not None else None
    except TypeError:  # a symbolic dimension
        return None


def _batch_shape(out) -> tuple | None:
    """``(None, *rest)`` for one tensor whose first axis is the probe's batch, else None."""
    if not keras.ops.is_tensor(out):
        return None
    shape = tuple(_dimension(d) for d in out.shape)
    if not shape or shape[0] != PROBE_BATCH:
        return None
    return (None,) + shape[1:]


def _tensors(structure) -> list:
    return [t for t in keras.tree.flatten(structure) if keras.ops.is_tensor(t)]


def _probe(op) -> list[Inner]:
    arguments = op._inbound_nodes[0].arguments
    training = "training" in inspect.signature(op.call).parameters
    tree = _tree(op, "", {id(op)})
    records = []  # per call of a layer inside: (tree index, its output, its input tensors), while the probe runs

    def recorder(call, index):
        def recording_call(*a, **k):
            out = call(*a, **k)
            records.append((index, out, _tensors((a, k))))
            return out

        return recording_call

    def run(*a, **k):
        """``op.call`` once, read as plain data: its own shape and, per layer inside, (index, shape, calls, sources)."""
        del records[:]  # the backend may run it more than once (PyTorch)
        own = _batch_shape(op.call(*a, **k))
        producer, first, calls = {}, {}, {}
        for index, out, inputs in records:  # the tensors are alive in records, so no id is reused
            calls[index] = calls.get(index, 0) + 1
            if index not in first:
                first[index] = (_batch_shape(out), tuple(dict.fromkeys(producer[id(t)] for t in inputs if id(t) in producer)))
            for t in _tensors(out):
                producer[id(t)] = index
        del records[:]
        return own, [(index, first[index][0], calls[index], first[index][1]) for index in first]

    edits = [(layer, "call", recorder(layer.call, i)) for i, (layer, _) in enumerate(tree)]
    # a size unknown to the graph (a text's length) takes two values in two runs; what differs reads None
    # (on TensorFlow it stays unknown: backend.UNKNOWN_SIZES)
    fills = (None,)
    if not backend.UNKNOWN_SIZES and _unknown_sizes((arguments.args, arguments.kwargs)):
        fills = PROBE_SIZES
    reads = []
    with thread_patches(edits):
        for fill in fills:
            args = keras.tree.map_structure(lambda t, f=fill: _spec(t, f), tuple(arguments.args))
            kwargs = keras.tree.map_structure(lambda t, f=fill: _spec(t, f), dict(arguments.kwargs))
            if training:
                kwargs["training"] = False
            reads.append(backend.abstract_call(run, args, kwargs))
    read = reads[0]
    for other in reads[1:]:
        read = _agree(read, other)
    if read is None:  # the runs disagreed on what ran
        return []
    own, inside = read
    if own is not None:
        try:
            _SHAPES[op] = own
        except TypeError:
            pass
    return [Inner(tree[index][0], tree[index][1], shape, calls, tuple(tree[s][0] for s in sources))
            for index, shape, calls, sources in inside]
