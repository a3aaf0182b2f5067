"""Figures: images, heatmaps and overlays side by side, for people to look at.

:func:`plot` turns explanations (one method or several) and the images they explain into a
Matplotlib figure: one row per sample, the image, then a heatmap and an overlay per method, titles
with the explained class and its score, and one colorbar. Maps of Conv1D models (time series) are
drawn as a line plot with the heatmap as a coloured band behind it; maps of Conv3D models (video)
as a strip of frames. Overlays come from :func:`keras_gradcam.viz.overlay`, the same blend the
TensorBoard callback logs.

Matplotlib is imported when a figure is drawn, never when ``keras_gradcam`` is imported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..core.explanation import Explanation
from ..methods.registry import display_name
from .overlay import colormap_table, overlay

if TYPE_CHECKING:  # pragma: no cover - typing only, keeps matplotlib a lazy import
    from matplotlib.figure import Figure

__all__ = ["plot"]

_SHOW = ("image", "heatmap", "overlay")

# -- what to draw -------------------------------------------------------------------------------
@dataclass
class _Series:
    """One column group: the maps of one method (or of a bare heatmap array)."""

    label: str
    heatmaps: np.ndarray  # (n, *spatial), values in [0, 1]
    targets: np.ndarray | None
    scores: np.ndarray | None


def _is_explanations(x) -> bool:
    if isinstance(x, Explanation):
        return True
    if isinstance(x, Mapping):
        return len(x) > 0 and all(isinstance(v, Explanation) for v in x.values())
    if isinstance(x, (list, tuple)):
        return len(x) > 0 and all(isinstance(v, Explanation) for v in x)
    return False


def _as_array(x, name: str) -> np.ndarray:
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):
        x = x.numpy()
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{name} must be a numeric array; got {type(x).__name__} of dtype {arr.dtype}.")
    return arr


def _series(explanations) -> list[_Series]:
    if isinstance(explanations, Explanation):
        items = [(display_name(explanations.method), explanations)]
    elif isinstance(explanations, Mapping):
        items = [(str(k), v) for k, v in explanations.items()]
    else:
        items = [(display_name(e.method), e) for e in explanations]
        labels = [label for label, _ in items]
        if len(set(labels)) < len(labels):  # same method at several layers: say which layer
            items = [(f"{label} @ {e.layer}", e) for label, e in items]
    return [_Series(label, np.asarray(e.heatmaps), e.targets, e.scores) for label, e in items]


def _parse(first, second, max_samples: int, display_images=None):
    """Sort the positional arguments into (images or None, list of _Series).

    ``display_images``, when given, are the images returned (the ones drawn): the positional images
    are then only what the model saw.
    """
    arrays, series = [], None
    for arg in (first, second):
        if arg is None:
            continue
        if _is_explanations(arg):
            if series is not None:
                raise TypeError(
                    "plot() got two sets of explanations; pass several methods together as a list "
                    "[exp1, exp2] or a dict {'title': exp}, plus the images."
                )
            series = _series(arg)
        elif isinstance(arg, (list, tuple, Mapping)) and len(arg) and any(isinstance(v, Explanation) for v in (arg.values() if isinstance(arg, Mapping) else arg)):
            raise TypeError("a list or dict of explanations must hold only Explanation objects.")
        else:
            arrays.append(arg)
    images = _as_array(arrays[0], "images") if arrays else None
    if series is None:
        if len(arrays) < 2:
            raise TypeError(
                "plot() needs something to explain the images with: an Explanation (kg.plot(exp, images)), "
                "several (kg.plot([exp1, exp2], images) or a dict), or a heatmap array (kg.plot(images, heatmaps))."
            )
        heat = _as_array(arrays[1], "heatmaps")
        if heat.ndim < 2:
            raise ValueError(f"heatmaps must have shape (n_samples, ...spatial); got shape {heat.shape}.")
        series = [_Series("heatmap", heat, None, None)]
    elif len(arrays) > 1:
        raise TypeError("plot() got explanations and two arrays; pass the explanations and one array of images.")
    images_name = "images"
    if display_images is not None:
        images, images_name = _as_array(display_images, "display_images"), "display_images"

    n = series[0].heatmaps.shape[0]
    for s in series:
        if s.heatmaps.shape[0] != n:
            raise ValueError(
                f"all explanations must cover the same samples; got {[t.heatmaps.shape[0] for t in series]} samples."
            )
        if s.heatmaps.shape[1:] != series[0].heatmaps.shape[1:]:
            raise ValueError(
                "all explanations must have maps of the same shape; got "
                f"{[t.heatmaps.shape[1:] for t in series]}. Explain the same images at input resolution."
            )
        if not np.isfinite(s.heatmaps).all():
            raise ValueError(f"the heatmaps of {s.label!r} contain NaN or inf values.")
    if images is not None and images.shape[0] != n:
        raise ValueError(
            f"{images_name} has {images.shape[0]} samples but the explanations have {n}; pass the same images that "
            "were explained (or slice both, e.g. kg.plot(exp[:4], images[:4]))."
        )
    if isinstance(max_samples, bool) or not isinstance(max_samples, (int, np.integer)) or max_samples < 1:
        raise ValueError(f"max_samples must be an int >= 1; got {max_samples!r}.")
    rows = min(n, int(max_samples))
    series = [_Series(s.label, s.heatmaps[:rows], None if s.targets is None else np.asarray(s.targets)[:rows],
                      None if s.scores is None else np.asarray(s.scores)[:rows]) for s in series]
    return (None if images is None else images[:rows]), series


def _class_text(k, class_names) -> str:
    k = int(k)
    if class_names is not None and 0 <= k < len(class_names):
        return str(class_names[k])
    return f"class {k}"


def _cell_title(s: _Series, i: int, class_names) -> str:
    parts = []
    if s.targets is not None:
        parts.append(_class_text(s.targets[i], class_names))
    if s.scores is not None:
        parts.append(f"({float(s.scores[i]):.2f})" if parts else f"score {float(s.scores[i]):.2f}")
    return " ".join(parts)


def _axes_grid(ax, rows: int, cols: int, figsize, plt):
    """The Axes to draw into: a new figure, or the user's ``ax`` checked against the grid's shape."""
    if ax is None:
        width, height = figsize if figsize is not None else (2.1 * cols + 0.9, 2.1 * rows + 0.3)
        fig, axes = plt.subplots(rows, cols, figsize=(width, height), squeeze=False, layout="constrained")
        return fig, axes
    from matplotlib.axes import Axes

    axes = np.asarray(ax, dtype=object)
    if axes.ndim == 0:
        axes = axes.reshape(1, 1)
    if not all(isinstance(a, Axes) for a in axes.flat):
        raise TypeError(f"ax must be a Matplotlib Axes or an array of them (from plt.subplots); got {type(ax).__name__}.")
    if axes.ndim == 1 and axes.size == rows * cols and 1 in (rows, cols):
        axes = axes.reshape(rows, cols)
    if axes.shape != (rows, cols):
        raise ValueError(
            f"ax holds Axes of shape {axes.shape}, but this plot needs a grid of {rows} x {cols} (rows = samples, "
            "columns = image / heatmap / overlay per method). Pass ax=None for a new figure, an array from "
            f"plt.subplots({rows}, {cols}), or fewer panels (show='overlay', max_samples=1)."
        )
    return axes[0, 0].figure, axes


def _colorbar(fig, axes, colormap, plt) -> None:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    mappable = ScalarMappable(norm=Normalize(0.0, 1.0), cmap=colormap)
    bar = fig.colorbar(mappable, ax=list(np.ravel(axes)), shrink=0.8, fraction=0.05, pad=0.02)
    bar.set_label("heatmap (0 = none, 1 = strongest evidence)", fontsize=8)
    bar.ax.tick_params(labelsize=7)


def _check_options(show, alpha, colormap) -> tuple:
    if show is not None:
        show = (show,) if isinstance(show, str) else tuple(show)
        bad = [s for s in show if s not in _SHOW]
        if bad or not show:
            raise ValueError(f"show must name panels from {_SHOW}, e.g. show=('image', 'overlay'); got {show!r}.")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.number)) or not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be a number in [0, 1] (the heatmap's opacity); got {alpha!r}.")
    if isinstance(colormap, str):
        colormap_table(colormap)  # unknown names fail here, listing valid ones
    return show


# -- the public function ----------------------------------------------------------------------
def plot(
    explanations_or_images,
    images_or_heatmaps=None,
    /,
    *,
    display_images=None,
    class_names: Sequence[str] | None = None,
    labels=None,
    show: str | Sequence[str] | None = None,
    max_samples: int = 8,
    max_frames: int = 8,
    alpha: float = 0.4,
    colormap: str = "jet",
    colorbar: bool | None = None,
    ax=None,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Draw images, heatmaps and overlays in a grid: one row per sample, methods side by side.

    Parameters
    ----------
    explanations_or_images : Explanation, list or dict of Explanation, or array-like
        What to draw, in either order with the second argument: an :class:`Explanation`; several
        (a list, titled by method name, or a dict ``{"title": explanation}``) explaining the
        same samples; or, with no explanation, the images followed by a heatmap array
        ``(n_samples, ...)`` of values in [0, 1].
    images_or_heatmaps : array-like, optional
        The images the explanations explain, ``(n_samples, height, width[, channels])`` for 2-D
        maps, ``(n_samples, steps[, channels])`` for time series, ``(n_samples, frames, height,
        width[, channels])`` for video; any range :func:`keras_gradcam.viz.overlay` accepts (uint8,
        [0, 1], [0, 255] or preprocessed). Images in [0, 1] or [0, 255] are drawn as they are; any
        other range (e.g. inputs preprocessed to ``[-1, 1]`` or ImageNet mean-subtracted BGR) is
        min-max rescaled per image for display, so the picture's contrast is stretched and a
        mean-subtracted BGR image shows with its channels swapped: pass ``display_images`` to
        show the original pictures instead. Without images only the heatmaps are drawn.
    display_images : array-like, optional
        The pictures to draw in the image and overlay panels instead of the explained images,
        e.g. the raw uint8 photos before preprocessing; one per sample, in the ranges above. For
        2-D maps they may have another height and width than the maps, which are then resized
        to them (bilinear) in the overlays. Can be given without ``images_or_heatmaps``:
        ``kg.plot(exp, display_images=raw)``.
    class_names : sequence of str, optional
        Names of the classes, used in titles instead of ``class 3``.
    labels : array-like of shape (n_samples,), optional
        True classes, written over the image column.
    show : str or sequence of {"image", "heatmap", "overlay"}, optional
        Panels of 2-D maps. Default: image, heatmap and overlay for one method; image and an overlay
        per method for several; the heatmaps alone without images. Ignored for 1-D and 3-D maps.
    max_samples : int, default=8
        Draw at most this many samples (the first ones).
    max_frames : int, default=8
        For video (3-D maps): frames shown per sample, evenly spaced.
    alpha : float, default=0.4
        Opacity of the heatmap in overlays and time-series bands.
    colormap : str or matplotlib Colormap, default="jet"
        Colormap of heatmaps, overlays and the colorbar.
    colorbar : bool, optional
        Add one colorbar for the [0, 1] heatmap scale. Default: True when the figure is made here,
        False when drawing into ``ax``.
    ax : matplotlib Axes or array of Axes, optional
        Draw into these Axes instead of a new figure: a single Axes for one panel (e.g.
        ``show="overlay"`` of one sample and one method), or an array shaped ``(rows, columns)``.
    figsize : (float, float), optional
        Size of a new figure in inches; by default about 2 inches per panel.

    Returns
    -------
    matplotlib.figure.Figure
        The figure drawn into (``ax.figure`` when ``ax`` is given). Its ``axes`` hold the panels
        row by row, then the colorbar. Save it with ``fig.savefig("cam.png")``; close it with
        ``matplotlib.pyplot.close(fig)``.

    Raises
    ------
    TypeError
        Arguments that are neither explanations nor arrays, or ``ax`` that is not Matplotlib Axes.
    ValueError
        Sample counts or map shapes that do not agree, an unknown ``show`` panel, ``ax`` of the
        wrong shape (the message gives the shape needed), ``alpha`` outside [0, 1], an unknown
        colormap, or images needed by ``show`` but not given.

    See Also
    --------
    keras_gradcam.viz.overlay : the blend used for every overlay panel.
    keras_gradcam.Explanation.save : the maps and overlay PNGs on disk.

    Notes
    -----
    The heatmap column shows :attr:`Explanation.heatmaps` as they are (min-max normalised per
    sample, so colours compare *within* a map, not across maps). Titles give the explained class
    and its score (the pre-softmax logit by default). For Conv1D models each panel plots the
    signal's channels over time with the heatmap as a band of colour behind them; for Conv3D
    models each row is a strip of frames with the heatmap blended over each.

    Examples
    --------
    >>> import numpy as np
    >>> import keras_gradcam as kg
    >>> from keras_gradcam.core.explanation import Explanation
    >>> heat = np.random.default_rng(0).random((2, 16, 16)).astype("float32")
    >>> exp = Explanation(heatmaps=heat, layer_heatmaps=heat, targets=np.array([0, 1]),
    ...                   scores=np.array([2.0, 1.5], "float32"), layer="conv", method="gradcam++")
    >>> fig = kg.plot(exp, np.zeros((2, 16, 16, 3)), class_names=["cat", "dog"])
    >>> [a.get_title() for a in fig.axes[:3]]
    ['sample 0', 'Grad-CAM++ heatmap\\ncat (2.00)', 'Grad-CAM++ overlay\\ncat (2.00)']
    >>> import matplotlib.pyplot as plt; plt.close(fig)
    """
    images, series = _parse(explanations_or_images, images_or_heatmaps, max_samples, display_images)
    show = _check_options(show, alpha, colormap)
    if isinstance(max_frames, bool) or not isinstance(max_frames, (int, np.integer)) or max_frames < 1:
        raise ValueError(f"max_frames must be an int >= 1; got {max_frames!r}.")
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if labels.shape[0] < series[0].heatmaps.shape[0]:
            raise ValueError(f"labels has {labels.shape[0]} entries but {series[0].heatmaps.shape[0]} samples are drawn.")

    import matplotlib.pyplot as plt  # lazy: only when drawing

    rank = series[0].heatmaps.ndim - 1
    kwargs = dict(class_names=class_names, labels=labels, alpha=float(alpha), colormap=colormap)
    if rank == 2:
        fig, axes = _plot_images(images, series, show, ax, figsize, plt, **kwargs)
    elif rank == 1:
        fig, axes = _plot_series(images, series, ax, figsize, plt, **kwargs)
    elif rank == 3:
        fig, axes = _plot_frames(images, series, int(max_frames), ax, figsize, plt, **kwargs)
    else:
        raise ValueError(
            f"heatmaps have {rank} spatial axes (shape {series[0].heatmaps.shape}); plot() draws 1-D (time series), "
            "2-D (images) and 3-D (video) maps."
        )
    if colorbar if colorbar is not None else ax is None:
        _colorbar(fig, axes, colormap, plt)
    return fig


def _image_title(i: int, labels, class_names) -> str:
    if labels is not None:
        return "true: " + _class_text(labels[i], class_names)
    return f"sample {i}"


def _plot_images(images, series, show, ax, figsize, plt, *, class_names, labels, alpha, colormap):
    if show is None:
        if images is None:
            show = ("heatmap",)
        else:
            show = ("image", "heatmap", "overlay") if len(series) == 1 else ("image", "overlay")
    if images is None and ("image" in show or "overlay" in show):
        raise ValueError(
            f"show={show!r} needs the images: pass them after the explanations, kg.plot(exp, images), "
            "or use show='heatmap'."
        )
    rows = series[0].heatmaps.shape[0]
    kinds = [k for k in ("heatmap", "overlay") if k in show]
    columns = ([("image", None)] if "image" in show else []) + [(k, s) for s in series for k in kinds]
    fig, axes = _axes_grid(ax, rows, len(columns), figsize, plt)
    shown = None
    if images is not None:
        # the image as overlay() reads it (uint8, [0, 1], [0, 255] or rescaled), with no heatmap
        shown = overlay(images, np.zeros(images.shape[:3], np.float32), alpha=0.0)
    for i in range(rows):
        for j, (kind, s) in enumerate(columns):
            a = axes[i, j]
            if kind == "image":
                a.imshow(shown[i])
                a.set_title(_image_title(i, labels, class_names), fontsize=8)
            elif kind == "heatmap":
                a.imshow(s.heatmaps[i], cmap=colormap, vmin=0.0, vmax=1.0)
            else:
                a.imshow(overlay(images[i], s.heatmaps[i], alpha=alpha, colormap=colormap))
            if s is not None:
                lines = [f"{s.label} {kind}" if len(kinds) > 1 else s.label] if i == 0 else []
                text = _cell_title(s, i, class_names)
                if text:
                    lines.append(text)
                a.set_title("\n".join(lines), fontsize=8)
            a.set_xticks([])
            a.set_yticks([])
            for spine in a.spines.values():
                spine.set_visible(False)
    return fig, axes


def _plot_series(signals, series, ax, figsize, plt, *, class_names, labels, alpha, colormap):
    rows = series[0].heatmaps.shape[0]
    steps = series[0].heatmaps.shape[1]
    if signals is not None:
        if signals.ndim == 2:
            signals = signals[..., None]
        if signals.ndim != 3 or signals.shape[1] != steps:
            raise ValueError(
                f"time-series signals must have shape (n_samples, {steps}, channels) to match heatmaps of shape "
                f"{series[0].heatmaps.shape}; got {signals.shape}."
            )
    if figsize is None and ax is None:
        figsize = (4.2 * len(series) + 0.9, 1.8 * rows + 0.4)
    fig, axes = _axes_grid(ax, rows, len(series), figsize, plt)
    t = np.arange(steps)
    for i in range(rows):
        for j, s in enumerate(series):
            a = axes[i, j]
            if signals is not None:
                y = signals[i].astype(np.float64)
                lo, hi = float(y.min()), float(y.max())
                pad = 0.05 * (hi - lo) if hi > lo else 0.5
                lo, hi = lo - pad, hi + pad
                a.imshow(s.heatmaps[i][None, :], aspect="auto", cmap=colormap, vmin=0.0, vmax=1.0, alpha=alpha,
                         extent=(-0.5, steps - 0.5, lo, hi), origin="lower", interpolation="nearest")
                for c in range(y.shape[1]):
                    a.plot(t, y[:, c], lw=1.0, color="black" if y.shape[1] == 1 else None)
                a.set_ylim(lo, hi)
            else:
                a.imshow(s.heatmaps[i][None, :], aspect="auto", cmap=colormap, vmin=0.0, vmax=1.0, alpha=alpha,
                         extent=(-0.5, steps - 0.5, 0.0, 1.0), origin="lower", interpolation="nearest")
                a.plot(t, s.heatmaps[i], lw=1.0, color="black")
                a.set_ylim(0.0, 1.0)
            a.set_xlim(-0.5, steps - 0.5)
            parts = ([s.label] if i == 0 else []) + ([_image_title(i, labels, class_names)] if labels is not None else [])
            text = _cell_title(s, i, class_names)
            parts += ["explained: " + text] if text else []
            a.set_title("  |  ".join(parts), fontsize=8)
            a.tick_params(labelsize=7)
            if i == rows - 1:
                a.set_xlabel("time step", fontsize=8)
    return fig, axes


def _plot_frames(videos, series, max_frames, ax, figsize, plt, *, class_names, labels, alpha, colormap):
    n, depth = series[0].heatmaps.shape[:2]
    if videos is not None and (videos.ndim not in (4, 5) or videos.shape[1] != depth):
        raise ValueError(
            f"videos must have shape (n_samples, {depth}, height, width[, channels]) to match heatmaps of shape "
            f"{series[0].heatmaps.shape}; got {videos.shape}."
        )
    frames = np.unique(np.round(np.linspace(0, depth - 1, min(depth, max_frames))).astype(int))
    rows = n * len(series)
    if figsize is None and ax is None:
        figsize = (1.6 * len(frames) + 0.9, 1.8 * rows + 0.3)
    fig, axes = _axes_grid(ax, rows, len(frames), figsize, plt)
    for i in range(n):
        for j, s in enumerate(series):
            r = i * len(series) + j
            if videos is not None:
                blended = overlay(videos[i][frames], s.heatmaps[i][frames], alpha=alpha, colormap=colormap)
            for c, f in enumerate(frames):
                a = axes[r, c]
                if videos is not None:
                    a.imshow(blended[c])
                else:
                    a.imshow(s.heatmaps[i][f], cmap=colormap, vmin=0.0, vmax=1.0)
                title = f"frame {f}"
                if c == 0:
                    who = _image_title(i, labels, class_names)
                    title = f"{s.label}, {who}\n{_cell_title(s, i, class_names)}  frame {f}".replace("\n  ", "\n")
                a.set_title(title, fontsize=7)
                a.set_xticks([])
                a.set_yticks([])
    return fig, axes

