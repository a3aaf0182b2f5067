"""Find the layer to explain in a Keras model, nested sub-models included.

A layer is addressed by its name (``"conv5_block3_out"``), by a path through nested models
(``"backbone/conv5_block3_out"``) or by the layer object itself. Besides layers, the operations
of a functional graph count too: ``x + branch`` in a residual block (ConvNeXt) is an ``Add``
operation named ``"add_17"``, not a layer, and its output can be explained like a layer's.
Only outputs with *spatial* axes qualify: rank >= 3, i.e. ``(batch, steps, channels)`` for
Conv1D, ``(batch, height, width, channels)`` for Conv2D and ``(batch, depth, height, width,
channels)`` for Conv3D (or channels-first).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Union

import keras

from .sublayers import attention_layer, inner_layers
from .tokens import TokenGrid, declared_grid, declared_grids, explicit_grid, infer_grid, reshape_grid, token_advice

LayerSpec = Union[None, str, keras.Operation]  # noqa: UP007 - a runtime alias, valid on Python 3.10

__all__ = ["LayerInfo", "list_layers", "resolve_layer", "output_layer", "passes_through", "shared_call_count"]

# layers that give back their input unchanged at inference (training=False)
_PASS_THROUGH = (
    keras.layers.Identity,
    keras.layers.Dropout,  # SpatialDropout1D/2D/3D included
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
    keras.layers.ActivityRegularization,
)


@dataclass(frozen=True)
class LayerInfo:
    """A candidate: the layer (or graph operation), its path from the outer model, its output shape.

    ``calls`` is how many times it runs in one forward pass of the outer model, as far as the
    functional graphs tell (a layer shared between two branches runs twice); 1 where no graph
    tells (subclassed models).
    """

    layer: keras.Operation
    path: str
    shape: tuple | None
    calls: int = 1
    data_format: str | None = None  # "channels_first"/"channels_last" where known
    grid: tuple | None = None  # (rows, cols) of a token layer's patches; None for other layers
    prefix_tokens: int = 0  # class/register tokens before the patches (token layers)
    reshape: Callable | None = None  # the user's (B, T, C) -> (B, rows, cols, C), if given
    token_error: str | None = None  # why a layer that looks like tokens has no grid that can be told
    sources: tuple | None = None  # inside a subclassed layer: the layers whose outputs it reads; None in a graph

    @property
    def spatial(self) -> bool:
        return self.shape is not None and len(self.shape) >= 3

    @property
    def tokens(self) -> bool:
        """Whether the output is a token sequence explained on its patch grid ``grid``."""
        return self.grid is not None

    @property
    def standard_shape(self) -> tuple | None:
        """The shape of the activations the methods see: channels last, a token layer on its grid."""
        if self.shape is None:
            return None
        if self.tokens:
            return (self.shape[0],) + tuple(self.grid) + (self.shape[-1],)
        if self.channels_first:
            return (self.shape[0],) + tuple(self.shape[2:]) + (self.shape[1],)
        return tuple(self.shape)

    @property
    def channels_first(self) -> bool:
        if self.tokens:
            return False
        fmt = self.data_format or getattr(self.layer, "data_format", "channels_last")
        return fmt == "channels_first"

    @property
    def floating(self) -> bool:
        """Whether the output is floating point, so that a gradient flows to it (True where unknown)."""
        try:
            dtype = self.layer.output.dtype
        except (AttributeError, ValueError, RuntimeError):
            return True
        return dtype is None or keras.backend.is_float_dtype(dtype)

    @property
    def spatial_shape(self) -> tuple:
        """The spatial axes of the output (batch and channel axes left out); () if not spatial."""
        if not self.spatial:
            return ()
        if self.tokens:
            return tuple(self.grid)
        return tuple(self.shape[2:] if self.channels_first else self.shape[1:-1])

    @property
    def located_axes(self) -> int:
        """Spatial axes with more than one position (an unknown size, None, counts as more than one)."""
        return sum(1 for d in self.spatial_shape if d is None or d > 1)


def _output_shape(layer: keras.Operation) -> tuple | None:
    """The layer's symbolic output shape, or None if it has none or several outputs."""
    try:
        out = layer.output
    except (AttributeError, ValueError, RuntimeError):
        return None
    shape = getattr(out, "shape", None)
    return tuple(shape) if shape is not None else None


def _graph_node_ids(model: keras.Model) -> set | None:
    """Ids of the nodes (calls) of ``model``'s functional graph; None for a model without one."""
    graph = getattr(model, "_functional", None) if isinstance(model, keras.Sequential) else model
    by_depth = getattr(graph, "_nodes_by_depth", None)
    if by_depth is None:
        return None
    return {id(node) for nodes in by_depth.values() for node in nodes}


def _calls_in(op: keras.Operation, node_ids: set | None) -> int:
    if node_ids is None:
        return 1
    return sum(1 for node in getattr(op, "_inbound_nodes", []) if id(node) in node_ids) or 1


def _data_format(op: keras.Operation, depth: int = 0) -> str | None:
    """``op``'s data format, or that of the op feeding it through shape-preserving ops (Add, BatchNorm...)."""
    fmt = getattr(op, "data_format", None)
    if fmt in ("channels_first", "channels_last") or depth > 64:
        return fmt
    nodes = getattr(op, "_inbound_nodes", None) or []
    if not nodes or not nodes[0].input_tensors:
        return None
    source = nodes[0].input_tensors[0]
    history = getattr(source, "_keras_history", None)
    if history is None or tuple(source.shape) != _output_shape(op):
        return None  # a reshape/permute may have moved the channels: nothing inherited
    parent = history[0]
    if isinstance(parent, keras.Model) or isinstance(parent, keras.layers.InputLayer):
        return None
    return _data_format(parent, depth + 1)


def _operations(model: keras.Model) -> list:
    """The layers and graph operations of ``model`` in execution order (layers only without a graph)."""
    if isinstance(model, keras.Sequential) or not hasattr(model, "_nodes_by_depth"):
        return list(model.layers)
    return list(getattr(model, "operations", None) or model.layers)


def _image_input(model: keras.Model) -> bool:
    """Whether ``model`` has an image input (rank 4), the condition for reading token grids."""
    try:
        return any(len(t.shape) == 4 for t in model.inputs)
    except (AttributeError, TypeError, ValueError):
        return False


def _walk(
    model: keras.Model, prefix: str = "", calls: int = 1, images: bool | None = None, grids: tuple = ()
) -> Iterator[LayerInfo]:
    node_ids = _graph_node_ids(model)
    images = _image_input(model) if images is None else images
    grids = declared_grids(model) or grids
    for op in _operations(model):
        if isinstance(op, keras.layers.InputLayer):
            continue
        path = prefix + op.name
        n = calls * _calls_in(op, node_ids)
        shape = _output_shape(op)
        own = declared_grids(op) or grids
        found = _graph_grid(op, shape, images, own)
        tokens = {} if found is None else {"grid": found.grid, "prefix_tokens": found.prefix, "token_error": found.error}
        info = LayerInfo(op, path, shape, n, _data_format(op), **tokens)
        yield info
        if isinstance(op, keras.Model):
            yield from _walk(op, path + "/", n, images, own)
        else:
            yield from _inside(info, images, own)


def _graph_grid(op, shape, images: bool, grids: tuple) -> TokenGrid | None:
    """The grid of a graph layer's rank-3 output: the backbone's declared grids first, then the graph's."""
    if shape is None or len(shape) != 3:
        return None
    if images and getattr(op, "data_format", None) != "channels_first":
        found = declared_grid(shape[1], grids)
        if found is not None:
            return found
    return infer_grid(op, shape, images)


def _inside(parent: LayerInfo, images: bool, grids: tuple) -> Iterator[LayerInfo]:
    """The layers inside a subclassed layer (:func:`keras_gradcam.core.sublayers.inner_layers`), as LayerInfos.

    A rank-3 output there is read on the backbone's declared grid, else on the grid of the
    enclosing layer when it has as many tokens; in an image model, a rank-3 output with neither
    looks like tokens whose grid cannot be told.
    """
    for inner in inner_layers(parent.layer):
        shape, tokens = inner.shape, {}
        if images and shape is not None and len(shape) == 3:
            found = declared_grid(shape[1], grids)
            if found is None and parent.tokens and parent.shape[1] == shape[1]:
                found = TokenGrid(parent.grid, parent.prefix_tokens)
            if found is None:
                found = TokenGrid(error=f"it runs inside the subclassed layer {parent.path!r}, which tells no patch grid")
            tokens = {"grid": found.grid, "prefix_tokens": found.prefix, "token_error": found.error}
        path = parent.path + "/" + inner.path
        yield LayerInfo(inner.layer, path, shape, parent.calls * inner.calls, None, sources=inner.sources, **tokens)


def shared_call_count(info: LayerInfo) -> int:
    """How many times ``info.layer`` runs in one forward pass of the model ``info`` was listed from.

    More than one for a layer shared between branches (or inside a sub-model called twice): it
    then has no single map. Counted from the functional graphs (the layer's inbound nodes that
    belong to the model's graph), so 1 where no graph tells (subclassed models).
    """
    return info.calls


def ensure_built(model: keras.Model, sample=None) -> None:
    """Build a model that has not been called yet (Keras 3 ``Sequential`` without ``Input``).

    Building creates the weights a first call would create; nothing else changes.
    """
    if model.built and _has_graph(model):
        return
    if sample is None:
        raise ValueError(_unbuilt_message(model))
    model(sample, training=False)


def _unbuilt_message(model: keras.Model) -> str:
    return (
        f"Model {model.name!r} has not been built yet, so its layers have no output shapes. Build it "
        "with its input shape, e.g. model.build((None, height, width, channels)), call it once on a "
        "batch (model(x)), or give it one: keras.Sequential([keras.Input((height, width, channels)), "
        "...]). keras-gradcam explainers also build it from the first batch they see."
    )


def _has_graph(model: keras.Model) -> bool:
    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None) is not None
    return True


def list_layers(model: keras.Model, spatial_only: bool = True) -> list[LayerInfo]:
    """List the layers of ``model`` that can be explained, nested models included.

    Parameters
    ----------
    model : keras.Model
        A built Functional or Sequential model.
    spatial_only : bool, default=True
        Keep only layers whose output has spatial axes (rank >= 3).

    Returns
    -------
    list of LayerInfo
        In execution order; ``info.path`` is what ``layer=`` accepts. The operations of a
        functional graph that are not layers (``x + y`` is an ``Add`` operation named ``"add"``,
        ``"add_1"``...) are listed too, with ``info.layer`` the operation.

    Raises
    ------
    ValueError
        ``model`` is a ``Sequential`` that has not been built (no input shape known yet): the
        message says how to build it.
    """
    if isinstance(model, keras.Sequential) and not (model.built and _has_graph(model)):
        raise ValueError(_unbuilt_message(model))
    infos = list(_walk(model))
    return [i for i in infos if i.spatial] if spatial_only else infos


def _candidates_text(model: keras.Model, limit: int = 12) -> str:
    paths = [i.path for i in list_layers(model)]
    if not paths:
        return "the model has no layer with a spatial output (rank >= 3)"
    tail = paths[-limit:]
    more = f" (and {len(paths) - limit} earlier ones)" if len(paths) > limit else ""
    return "candidate spatial layers, last ones: " + ", ".join(repr(p) for p in tail) + more


def _default(model: keras.Model, infos: list[LayerInfo]) -> LayerInfo:
    """The automatic pick: among outputs located in space, the last one with the most located axes."""
    spatial = [i for i in infos if i.spatial]
    if not spatial:
        raise ValueError(
            f"layer=None looks for the last layer with a spatial output in model {model.name!r}, "
            "but found none (all outputs are vectors). Pass layer= explicitly; Grad-CAM needs a "
            "convolutional (or other spatial) layer."
        )
    located = [i for i in spatial if i.located_axes > 0 and i.floating]
    if not located:
        raise ValueError(
            f"layer=None looks for a layer whose output has more than one position along a spatial "
            f"axis in model {model.name!r}, but every spatial output is a single position (e.g. "
            f"{spatial[-1].path!r} has shape {spatial[-1].shape}), which locates nothing. Give the "
            "model larger inputs, or pass layer= explicitly."
        )
    single = [i for i in located if i.calls == 1]
    if not single:
        raise ValueError(
            f"layer=None found no layer that runs once in model {model.name!r}: every candidate is "
            f"shared (e.g. {located[-1].path!r} runs {located[-1].calls} times per forward pass). "
            "Pass layer= naming a layer that runs once."
        )
    most = max(i.located_axes for i in single)
    pick = [i for i in single if i.located_axes == most][-1]
    return _attention_input(infos, single, pick) if pick.tokens else pick


def _attention_input(infos: list[LayerInfo], candidates: list[LayerInfo], pick: LayerInfo) -> LayerInfo:
    """For a transformer, the input of its last token-mixing layer (else ``pick``).

    After the last attention, every layer acts on each token alone (norm, MLP, residual add), so
    a head that reads the class token gives the patch tokens a zero gradient there: the last layer
    that still sees the patches' influence is the input of the last attention. With a head that
    averages the patch tokens the later layers have gradients too, but the last attention's input
    localised at least as well as the last block's output or the final norm in
    ``benchmarks/vit_layers.py`` (small ViTs trained on shapes; docs/transformers.md, "Which
    layer"): after the last mixing, each token carries what attention gathered from the others,
    so its place on the grid says less about where the evidence is. A token-mixing
    layer is a ``MultiHeadAttention``; in a graph also a layer that is not Keras' own whose input
    and output are token sequences (a transformer block written as a custom layer); inside a
    subclassed layer (KerasHub's encoders) an attention layer
    (:func:`keras_gradcam.core.sublayers.attention_layer`), its input read from the probe.
    """
    tokens = {id(i.layer): i for i in candidates if i.tokens}
    for info in reversed(infos):
        op = info.layer
        if info.sources is not None:
            if attention_layer(op):
                for source in info.sources:
                    if id(source) in tokens:
                        return tokens[id(source)]
            continue
        mixing = isinstance(op, keras.layers.MultiHeadAttention) or (
            info.tokens and not type(op).__module__.startswith("keras.") and not isinstance(op, keras.Model)
        )
        nodes = getattr(op, "_inbound_nodes", None) or []
        if not mixing or not nodes:
            continue
        for t in keras.tree.flatten(nodes[0].input_tensors):
            history = getattr(t, "_keras_history", None)
            if history is not None and id(history[0]) in tokens:
                return tokens[id(history[0])]
    return pick


def _consumers(model: keras.Model, tensor) -> list[str]:
    """Names of the operations of ``model``'s graph that read ``tensor``."""
    found = []
    for op in _operations(model):
        for node in getattr(op, "_inbound_nodes", []):
            if any(t is tensor for t in node.input_tensors) and op.name not in found:
                found.append(op.name)
    return found


def _shared_error(model: keras.Model, what: str, info: LayerInfo) -> ValueError:
    after = []
    for node in getattr(info.layer, "_inbound_nodes", []):
        for t in node.output_tensors:
            after += [n for n in _consumers(model, t) if n not in after and n != info.layer.name]
    hint = (
        f" Layers right after its calls in model {model.name!r}: " + ", ".join(repr(n) for n in after) + "."
        if after and "/" not in info.path
        else ""
    )
    return ValueError(
        f"{what} is shared: it runs {info.calls} times in one forward pass of model {model.name!r}, "
        "so it has no single map to explain. Pick one of its calls by naming a layer that runs once, "
        "e.g. the layer right after that call." + hint
    )


def _input_layers(model: keras.Model, prefix: str = "") -> Iterator[tuple[str, keras.Operation]]:
    """The input layers of ``model`` and of the models nested in it, with their paths."""
    try:
        inputs = keras.tree.flatten(model.inputs or [])
    except (AttributeError, TypeError, ValueError):
        inputs = []
    for tensor in inputs:
        history = getattr(tensor, "_keras_history", None)
        if history is not None and isinstance(history[0], keras.layers.InputLayer):
            yield prefix + history[0].name, history[0]
    for op in _operations(model):
        if isinstance(op, keras.Model):
            yield from _input_layers(op, prefix + op.name + "/")


def _missing_error(model: keras.Model, spec, what: str) -> ValueError:
    """Why ``spec`` names no layer of ``model``: it is an input of the model, or it is not there at all."""
    for path, layer in _input_layers(model):
        named = isinstance(spec, str) and (spec == path or path.endswith("/" + spec))
        if named or spec is layer:
            owner = f"model {model.name!r}"
            if "/" in path:
                owner = f"the model {path.rsplit('/', 1)[0]!r} nested in model {model.name!r}"
            return ValueError(
                f"{what} is the input of {owner}: it holds the data as it enters the model, with no "
                "activations computed from it, so there is nothing to explain there. Name a layer that computes a "
                f"feature map from it; {_candidates_text(model)}."
            )
    return ValueError(f"{what} is not in model {model.name!r}; {_candidates_text(model)}.")


def resolve_layer(
    model: keras.Model, spec: LayerSpec, *, grid=None, prefix_tokens: int | None = None, reshape: Callable | None = None
) -> LayerInfo:
    """Turn ``layer=`` (None, a name, a ``"outer/inner"`` path or a layer) into a spatial layer.

    ``layer=None`` picks the deepest map that still locates something: among the outputs with at
    least one spatial axis of more than one position (an axis of unknown size, ``None``, counts as
    more than one; a 1x1 map such as MobileNetV3's ``logits`` carries no location), the last one
    with the largest number of such axes, skipping shared layers and integer or boolean outputs.
    For a plain CNN, Conv1D or Conv3D model this is the last feature map before the global
    pooling (or flatten) of the head; for a vision transformer (token layers, see
    :func:`keras_gradcam.core.tokens.infer_grid`), the input of its last attention;
    for a ``TimeDistributed`` video model, the per-frame convolution output
    ``(batch, frames, height, width, channels)`` rather than the per-frame pooled features
    ``(batch, frames, channels)``, so the map is over space and time.

    Layers inside a subclassed layer (the transformer blocks of KerasHub's encoders) are
    candidates too, with paths such as ``"vit_backbone/vit_encoder/transformer_block_12/ln_1"``
    (:mod:`keras_gradcam.core.sublayers`). The last attention's input is chosen whatever the head
    (class token or mean of the tokens): on small ViTs trained on shapes it localised at least as
    well as the final norm with either head (``benchmarks/vit_layers.py``, docs/transformers.md).

    Parameters
    ----------
    model : keras.Model
        A built model.
    spec : None, str, keras.Layer or keras.Operation
        A name, a path through nested models, a layer or a functional-graph operation object.
    grid : (int, int), optional
        The patch grid ``(rows, cols)`` of a token layer ``(batch, tokens, channels)``, where the
        graph does not tell it (inferred when None).
    prefix_tokens : int, optional
        Tokens before the patches (class, distillation, register tokens); inferred when None.
    reshape : callable, optional
        ``(batch, tokens, channels) -> (batch, rows, cols, channels)``, instead of ``grid``.

    Returns
    -------
    LayerInfo

    Raises
    ------
    ValueError
        Unknown name (the message lists candidate layers), the model's input layer (the data as it
        enters, with no activations to explain; the message lists candidate layers), ambiguous name, a layer whose output
        is not spatial (Dense, Flatten, pooling to a vector...) or not floating point (an integer
        or boolean operation, which no gradient reaches), a layer shared between several
        calls (the message names the layers right after its calls), ``layer=None`` finding no
        map with more than one position, a token layer whose grid cannot be told (the message
        says to pass ``grid=`` and ``prefix_tokens=``, or ``reshape=``), or a ``grid`` /
        ``prefix_tokens`` / ``reshape`` that does not fit the layer.
    TypeError
        ``spec`` is not None, a string or a layer/operation.
    """
    infos = list_layers(model, spatial_only=False)
    if spec is None:
        return _tokens(_default(model, infos), grid, prefix_tokens, reshape)
    if isinstance(spec, keras.Operation):
        found = [i for i in infos if i.layer is spec]
        what = f"layer object {spec.name!r}"
    elif isinstance(spec, str):
        found = [i for i in infos if i.path == spec]
        if not found:  # a bare name may live inside a nested model
            found = [i for i in infos if i.path.endswith("/" + spec)]
        what = f"layer {spec!r}"
    else:
        raise TypeError(
            f"layer must be None, a layer name, a 'outer/inner' path or a keras Layer; got {type(spec).__name__}."
        )
    if not found:
        raise _missing_error(model, spec, what)
    if len(found) > 1:
        raise ValueError(
            f"{what} is ambiguous in model {model.name!r}: it matches "
            + ", ".join(repr(i.path) for i in found)
            + ". Pass the full path."
        )
    info = found[0]
    if not info.spatial:
        got = "no single output shape" if info.shape is None else f"output shape {info.shape}"
        raise ValueError(
            f"{what} ({type(info.layer).__name__}) has {got}; Grad-CAM needs a layer with spatial axes, "
            f"e.g. (batch, height, width, channels). Pick an earlier layer: {_candidates_text(model)}."
        )
    if not info.floating:
        raise ValueError(
            f"{what} ({type(info.layer).__name__}) outputs {info.layer.output.dtype} values, which no "
            f"gradient reaches; Grad-CAM needs a floating-point feature map. {_candidates_text(model)}."
        )
    if shared_call_count(info) > 1:
        raise _shared_error(model, what, info)
    return _tokens(info, grid, prefix_tokens, reshape)


def _tokens(info: LayerInfo, grid, prefix_tokens, reshape) -> LayerInfo:
    """``info`` with the user's token options applied, or its own grid checked to be known."""
    if reshape is not None:
        return replace(info, grid=reshape_grid(info.path, info.shape, reshape), prefix_tokens=0, reshape=reshape, token_error=None)
    if grid is not None or prefix_tokens is not None:
        found = explicit_grid(info.path, info.shape, info.grid, grid, prefix_tokens)
        return replace(info, grid=found[0], prefix_tokens=found[1], token_error=None)
    if info.token_error is not None:
        raise ValueError(
            f"layer {info.path!r} outputs {info.shape} and reads an image, so it looks like the tokens of a vision "
            f"transformer, but its patch grid cannot be told: {info.token_error}. {token_advice()}"
        )
    return info


def passes_through(op) -> bool:
    """Whether ``op`` gives back its input unchanged at inference (Dropout, Identity, linear Activation)."""
    if isinstance(op, _PASS_THROUGH):
        return True
    return isinstance(op, keras.layers.Activation) and op.activation is keras.activations.linear


def output_layer(model: keras.Model, index: int = 0) -> keras.Operation | None:
    """The layer that computes output ``index`` of ``model``, looking inside nested models.

    Layers that give back their input unchanged at inference (``Dropout`` and the other noise
    layers, ``Identity``, ``ActivityRegularization``, ``Activation("linear")``) are looked
    through: for ``Dense -> Activation("softmax") -> Dropout`` it is the softmax layer, so that a
    softmax/sigmoid head is found however it is followed. A ``Lambda`` is not looked through (its
    function cannot be seen). Returns None where it cannot be told (subclassed models).
    """
    if isinstance(model, keras.Sequential):
        layers = list(model.layers)
        while len(layers) > 1 and passes_through(layers[-1]):
            layers.pop()
        if not layers:
            return None
        layer = layers[-1]
        return output_layer(layer, 0) if isinstance(layer, keras.Model) else layer
    outputs = getattr(model, "outputs", None)
    if not outputs or index >= len(outputs):
        return None
    tensor = outputs[index]
    while True:
        history = getattr(tensor, "_keras_history", None)
        if history is None:
            return None
        layer, node_index, tensor_index = history
        if isinstance(layer, keras.Model):
            return output_layer(layer, tensor_index)
        if not passes_through(layer):
            return layer
        inputs = layer._inbound_nodes[node_index].input_tensors
        source = getattr(inputs[0], "_keras_history", None) if len(inputs) == 1 else None
        if source is None or isinstance(source[0], keras.layers.InputLayer):
            return layer
        tensor = inputs[0]
