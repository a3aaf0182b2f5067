"""Find the layer to explain in a Keras model, nested sub-models included.

A layer is addressed by its name (``"conv5_block3_out"``), by a path through
nested models (``"backbone/conv5_block3_out"``) or by the layer object itself.
Only layers with a *spatial* output qualify: rank >= 3, i.e. ``(batch, steps,
channels)`` for Conv1D, ``(batch, height, width, channels)`` for Conv2D and
``(batch, depth, height, width, channels)`` for Conv3D (or channels-first).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Union

import keras

LayerSpec = Union[None, str, keras.layers.Layer]

__all__ = ["LayerInfo", "list_layers", "resolve_layer", "output_layer"]


@dataclass(frozen=True)
class LayerInfo:
    """A candidate layer: the object, its path from the outer model and its output shape."""

    layer: keras.layers.Layer
    path: str
    shape: tuple | None

    @property
    def spatial(self) -> bool:
        return self.shape is not None and len(self.shape) >= 3

    @property
    def channels_first(self) -> bool:
        return getattr(self.layer, "data_format", "channels_last") == "channels_first"


def _output_shape(layer: keras.layers.Layer) -> tuple | None:
    """The layer's symbolic output shape, or None if it has none or several outputs."""
    try:
        out = layer.output
    except (AttributeError, ValueError, RuntimeError):
        return None
    shape = getattr(out, "shape", None)
    return tuple(shape) if shape is not None else None


def _walk(model: keras.Model, prefix: str = "") -> Iterator[LayerInfo]:
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        path = prefix + layer.name
        yield LayerInfo(layer, path, _output_shape(layer))
        if isinstance(layer, keras.Model):
            yield from _walk(layer, path + "/")


def ensure_built(model: keras.Model, sample=None) -> None:
    """Build a model that has not been called yet (Keras 3 ``Sequential`` without ``Input``).

    Building creates the weights a first call would create; nothing else changes.
    """
    if model.built and _has_graph(model):
        return
    if sample is None:
        raise ValueError(
            f"Model {model.name!r} has not been built yet, so its layers have no output shapes. "
            "Call it once on a batch (model(x)), give it a keras.Input, or pass images to the "
            "explainer first; keras-gradcam builds it from the first batch it sees."
        )
    model(sample, training=False)


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
        In execution order; ``info.path`` is what ``layer=`` accepts.
    """
    infos = list(_walk(model))
    return [i for i in infos if i.spatial] if spatial_only else infos


def _candidates_text(model: keras.Model, limit: int = 12) -> str:
    paths = [i.path for i in list_layers(model)]
    if not paths:
        return "the model has no layer with a spatial output (rank >= 3)"
    tail = paths[-limit:]
    more = f" (and {len(paths) - limit} earlier ones)" if len(paths) > limit else ""
    return "candidate spatial layers, last ones: " + ", ".join(repr(p) for p in tail) + more


def resolve_layer(model: keras.Model, spec: LayerSpec) -> LayerInfo:
    """Turn ``layer=`` (None, a name, a ``"outer/inner"`` path or a Layer) into a spatial layer.

    Raises
    ------
    ValueError
        Unknown name (the message lists candidate layers), ambiguous name, or a layer whose output
        is not spatial (Dense, Flatten, pooling to a vector...).
    TypeError
        ``spec`` is not None, a string or a Layer.
    """
    infos = list_layers(model, spatial_only=False)
    if spec is None:
        spatial = [i for i in infos if i.spatial]
        if not spatial:
            raise ValueError(
                f"layer=None looks for the last layer with a spatial output in model {model.name!r}, "
                "but found none (all outputs are vectors). Pass layer= explicitly; Grad-CAM needs a "
                "convolutional (or other spatial) layer."
            )
        return spatial[-1]
    if isinstance(spec, keras.layers.Layer):
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
        raise ValueError(f"{what} is not in model {model.name!r}; {_candidates_text(model)}.")
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
    return info


def output_layer(model: keras.Model, index: int = 0) -> keras.layers.Layer | None:
    """The layer that produces output ``index`` of ``model``, looking inside nested models.

    Returns None where it cannot be told (subclassed models).
    """
    if isinstance(model, keras.Sequential):
        if not model.layers:
            return None
        layer = model.layers[-1]
        return output_layer(layer, 0) if isinstance(layer, keras.Model) else layer
    outputs = getattr(model, "outputs", None)
    if not outputs or index >= len(outputs):
        return None
    history = getattr(outputs[index], "_keras_history", None)
    if history is None:
        return None
    layer, _, tensor_index = history
    if isinstance(layer, keras.Model):
        return output_layer(layer, tensor_index)
    return layer
