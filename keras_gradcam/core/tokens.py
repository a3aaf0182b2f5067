"""Token layers: a ``(batch, tokens, channels)`` output explained on its patch grid.

A vision transformer cuts the image into patches, embeds each as a token and prepends a few
*prefix* tokens (a class token, distillation or register tokens). Its layers output
``(batch, prefix + rows * cols, channels)``. To explain such a layer, the prefix tokens are dropped
and the patch tokens reshaped to ``(batch, rows, cols, channels)``: every method then runs on an
ordinary feature map. The rule that tells a token layer from a 1-D sequence (a Conv1D time series)
and finds its grid is :func:`infer_grid`; it reads only the functional graph (nothing is run).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import keras

from .validate import non_negative_int, positive_int

__all__ = ["MAX_PREFIX", "TokenGrid", "declared_grid", "declared_grids", "explicit_grid", "infer_grid", "reshape_grid", "to_grid", "token_advice", "token_mask", "token_options"]

MAX_PREFIX = 16  # prefix tokens accepted when the grid is read from a patch embedding


@dataclass(frozen=True)
class TokenGrid:
    """What the graph says about a rank-3 output: its grid, or why it has none.

    ``grid`` is None for a 1-D sequence; ``error`` says why a layer that looks like tokens has no
    grid that can be told (the layer can then only be explained with ``grid=`` or ``reshape=``).
    ``patch`` is the spatial size of the nearest rank-4 map upstream (the patch embedding's
    output, or the image when a layer cuts the patches itself), when known.
    """

    grid: tuple | None = None
    prefix: int = 0
    error: str | None = None
    patch: tuple | None = None


def _nearest_map(op: keras.Operation):
    """The nearest rank-4 tensor upstream of ``op``'s (first) call, breadth first: ``(tensor, producer)``."""
    nodes = getattr(op, "_inbound_nodes", None) or []
    if not nodes:
        return None, None
    frontier, seen = list(keras.tree.flatten(nodes[0].input_tensors)), set()
    while frontier:
        nxt = []
        for t in frontier:
            if id(t) in seen:
                continue
            seen.add(id(t))
            history = getattr(t, "_keras_history", None)
            if history is None:
                continue
            if len(getattr(t, "shape", ())) == 4:
                return t, history[0]
            parent, index, _ = history
            parents = getattr(parent, "_inbound_nodes", None) or []
            if index < len(parents):
                nxt += keras.tree.flatten(parents[index].input_tensors)
        frontier = nxt
    return None, None


def _hw(tensor, producer) -> tuple:
    shape = tuple(tensor.shape)
    first = getattr(producer, "data_format", None) == "channels_first"
    return tuple(shape[2:4] if first else shape[1:3])


def _is_patch_embedding(producer) -> bool:
    """A Conv2D with kernel == strides > 1: one token per non-overlapping patch (ViT, DeiT, DINOv2)."""
    if not isinstance(producer, keras.layers.Conv2D):
        return False
    strides, kernel = tuple(producer.strides), tuple(producer.kernel_size)
    return strides == kernel and max(strides) > 1


def _grids(count: int, prefixes, hw: tuple) -> list[tuple]:
    """``(prefix, rows, cols)`` with ``rows * cols = count - prefix`` and the image's aspect ratio."""
    h, w = hw
    found = []
    for p in prefixes:
        n = count - p
        if n <= 0:
            continue
        if h is None or w is None or h == w:
            r = math.isqrt(n)
            if r * r == n:
                found.append((p, r, r))
            continue
        for r in range(1, n + 1):
            if n % r == 0 and r * w == (n // r) * h:
                found.append((p, r, n // r))
    return found


def token_advice() -> str:
    """How to say which grid a token layer has (the end of every error about it)."""
    example = "e.g. grid=(14, 14), prefix_tokens=1 for 197 tokens (a class token and 14x14 patches)"
    return (
        "Pass grid=(rows, cols) and prefix_tokens=<number of class/register tokens before the patches> "
        f"({example}), or reshape=<a callable (batch, tokens, channels) -> (batch, rows, cols, channels)>."
    )


def infer_grid(op: keras.Operation, shape: tuple, images: bool) -> TokenGrid:
    """Whether the rank-3 output ``shape`` of ``op`` is a token sequence, and on which grid.

    The rule (docs/layers.md, "Vision transformers"): only in a model with an image input
    (``images``: a rank-4 input) and only for a channels-last rank-3 output computed from a rank-4
    map. With ``T`` tokens and ``(h, w)`` the spatial size of the nearest rank-4 map upstream:

    - that map comes from a layer (a patch embedding Conv2D, a CNN stem) and
      ``0 <= T - h * w <= MAX_PREFIX``: grid ``(h, w)`` after ``T - h * w`` prefix tokens;
    - the map is the image itself (a layer cuts and embeds the patches, as KerasHub's ViT does):
      the grid with the image's aspect ratio and ``T`` or ``T - 1`` cells, if exactly one fits;
      otherwise an error that says to pass ``grid=``;
    - the map comes from a patch embedding (Conv2D with kernel == strides > 1) whose grid does not
      fit ``T``: an error that says to pass ``grid=``;
    - anything else (a CNN whose map is reshaped to a sequence over one axis, a Conv1D model): a
      1-D sequence, explained as such.
    """
    if not images or len(shape) != 3 or getattr(op, "data_format", None) == "channels_first":
        return TokenGrid()
    tensor, producer = _nearest_map(op)
    if tensor is None:
        return TokenGrid()
    hw, count = _hw(tensor, producer), shape[1]
    direct = isinstance(producer, keras.layers.InputLayer)
    if not direct and None not in hw and count is not None and 0 <= count - hw[0] * hw[1] <= MAX_PREFIX:
        return TokenGrid((int(hw[0]), int(hw[1])), int(count - hw[0] * hw[1]), patch=hw)
    if not direct and not _is_patch_embedding(producer):
        return TokenGrid()
    what = f"{count} tokens" if count is not None else "an unknown number of tokens"
    if count is None:
        return TokenGrid(error=f"it has {what} (a model built for any image size)", patch=hw)
    if not direct:
        return TokenGrid(
            error=f"its patch embedding {producer.name!r} gives a {hw[0]}x{hw[1]} grid, which does not fit {what}",
            patch=hw,
        )
    found = _grids(count, (0, 1), hw)
    if len(found) == 1:
        p, r, c = found[0]
        return TokenGrid((r, c), p, patch=hw)
    size = f"{hw[0]}x{hw[1]}"
    if found:
        options = ", ".join(f"{p} prefix + {r}x{c}" for p, r, c in found)
        return TokenGrid(error=f"several grids of the {size} image's aspect fit {what}: {options}", patch=hw)
    return TokenGrid(
        error=f"no grid of the {size} image's aspect ratio has {count} or {count - 1} cells (0 or 1 prefix token)",
        patch=hw,
    )


def _pair(value) -> tuple | None:
    if isinstance(value, int) and value > 0:
        return (value, value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value):
        return tuple(value)
    return None


def declared_grids(model) -> tuple:
    """The patch grids a backbone declares in its attributes (KerasHub's), largest first; () if none.

    ``image_shape`` (``(height, width, channels)``, or channels first with
    ``data_format="channels_first"``) and ``patch_size`` give the patch grid of ViT, DeiT and
    DINOv2; Swin (``depths``) halves it at each later stage; MiT/SegFormer has one grid per stage,
    the image divided by the product of ``layerwise_strides`` so far. Read by duck typing, so
    that keras-gradcam needs no KerasHub import.
    """
    shape = getattr(model, "image_shape", None)
    if not isinstance(shape, (tuple, list)) or len(shape) != 3:
        return ()
    first = getattr(model, "data_format", None) == "channels_first"
    h, w = (shape[1], shape[2]) if first else (shape[0], shape[1])
    if not (isinstance(h, int) and isinstance(w, int)):
        return ()
    strides = getattr(model, "layerwise_strides", None)
    if isinstance(strides, (tuple, list)) and strides and all(isinstance(s, int) and s > 0 for s in strides):
        grids, step = [], 1
        for s in strides:
            step *= s
            grids.append((h // step, w // step))
        return tuple(grids)
    patch = _pair(getattr(model, "patch_size", None))
    if patch is None or h % patch[0] or w % patch[1]:
        return ()
    stages = len(getattr(model, "depths", None) or ()) or 1
    return tuple((h // patch[0] // 2**k, w // patch[1] // 2**k) for k in range(stages))


def declared_grid(count, grids: tuple) -> TokenGrid | None:
    """The grid of ``count`` tokens among a backbone's ``grids`` (:func:`declared_grids`), or None.

    The first (finest) grid may follow up to :data:`MAX_PREFIX` prefix tokens (ViT's class token,
    DeiT's class and distillation tokens, DINOv2's class and register tokens); a later stage's
    grid (Swin, MiT) has none.
    """
    if count is None:
        return None
    for k, (rows, cols) in enumerate(grids):
        prefix = count - rows * cols
        if prefix == 0 or (k == 0 and 0 < prefix <= MAX_PREFIX):
            return TokenGrid((int(rows), int(cols)), int(prefix))
    return None


def explicit_grid(path: str, shape: tuple, auto: tuple | None, grid, prefix_tokens) -> tuple[tuple, int]:
    """Check the user's ``grid=`` / ``prefix_tokens=`` against the layer's ``shape``: ``(grid, prefix)``.

    A missing one is inferred from the other and the token count; with ``prefix_tokens`` alone, the
    grid is the graph's (``auto``) if it fits, else the square of the patch tokens.
    """
    if len(shape) != 3:
        raise ValueError(
            f"grid= and prefix_tokens= apply to token layers, whose output is (batch, tokens, channels); layer "
            f"{path!r} has output shape {shape}. Leave them out for this layer, or pick a token layer."
        )
    count = shape[1]
    if grid is not None:
        rows, cols = (int(g) for g in grid)
        if prefix_tokens is None:
            prefix_tokens = count - rows * cols if count is not None else 0
        if prefix_tokens < 0 or (count is not None and prefix_tokens + rows * cols != count):
            raise ValueError(
                f"grid={(rows, cols)} with prefix_tokens={prefix_tokens} makes {rows * cols + max(prefix_tokens, 0)} "
                f"tokens, but layer {path!r} outputs {count} (shape {shape}). Pass the grid of its patches and the "
                "number of tokens before them (class, distillation, register tokens)."
            )
        return (rows, cols), int(prefix_tokens)
    if auto is not None and count is not None and auto[0] * auto[1] + prefix_tokens == count:
        return tuple(auto), int(prefix_tokens)
    found = _grids(count, (prefix_tokens,), (None, None)) if count is not None else []
    if len(found) != 1:
        raise ValueError(
            f"prefix_tokens={prefix_tokens} leaves {count if count is None else count - prefix_tokens} patch tokens "
            f"in layer {path!r} (shape {shape}), which is not one grid of the image's aspect ratio. Pass grid=(rows, cols) too."
        )
    return found[0][1:], int(prefix_tokens)


def reshape_grid(path: str, shape: tuple, reshape: Callable) -> tuple:
    """The grid that the user's ``reshape=`` callable gives for the layer's ``shape``, checked on zeros."""
    if len(shape) != 3 or shape[1] is None or shape[2] is None:
        raise ValueError(
            f"reshape= applies to token layers with a known number of tokens, output (batch, tokens, channels); "
            f"layer {path!r} has output shape {shape}."
        )
    out = reshape(keras.ops.zeros((1,) + tuple(shape[1:])))
    got = tuple(getattr(out, "shape", ()))
    if len(got) != 4 or got[0] != 1 or got[-1] != shape[-1]:
        raise ValueError(
            f"reshape= must map (batch, tokens, channels) to (batch, rows, cols, channels); on layer {path!r} it "
            f"maps {(1,) + tuple(shape[1:])} to {got}."
        )
    return int(got[1]), int(got[2])


def to_grid(t, grid: tuple, prefix: int, reshape: Callable | None = None):
    """``(B, prefix + rows * cols, C)`` -> ``(B, rows, cols, C)``: prefix tokens dropped (or ``reshape(t)``).

    Linear in ``t``, so the same call maps activations and their gradients.
    """
    if reshape is not None:
        return reshape(t)
    rows, cols = grid
    shape = keras.ops.shape(t)
    return keras.ops.reshape(t[:, prefix:], (shape[0], rows, cols, shape[-1]))


def token_mask(t, prefix: int, reshape: Callable | None = None):
    """``(1, tokens, 1)`` float32 for the raw tokens ``t``: 1 on the patch tokens an edit of the map acts on.

    0 on the ``prefix`` tokens; with a user ``reshape=``, which tokens are patches is unknown and
    every token is 1.
    """
    positions = keras.ops.arange(keras.ops.shape(t)[1])
    keep = positions >= (0 if reshape is not None else prefix)
    return keras.ops.cast(keep, "float32")[None, :, None]


def token_options(grid, prefix_tokens, reshape) -> tuple:
    """``grid=``, ``prefix_tokens=`` and ``reshape=`` checked: two positive ints, an int >= 0, a callable."""
    if grid is not None:
        if isinstance(grid, (str, bytes)) or not hasattr(grid, "__len__") or len(grid) != 2:
            raise TypeError(f"grid must be None or (rows, cols), two positive ints; got {grid!r}.")
        grid = tuple(positive_int("grid", g, expected="(rows, cols), two positive ints") for g in grid)
    if prefix_tokens is not None:
        prefix_tokens = non_negative_int("prefix_tokens", prefix_tokens)
    if reshape is not None and not callable(reshape):
        raise TypeError(
            f"reshape must be None or a callable (batch, tokens, channels) -> (batch, rows, cols, channels); "
            f"got {type(reshape).__name__}."
        )
    if reshape is not None and (grid is not None or prefix_tokens is not None):
        raise ValueError("pass either reshape= or grid=/prefix_tokens=, not both: reshape= says the whole layout.")
    return grid, prefix_tokens, reshape
