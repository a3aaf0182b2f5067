"""What the callback writes to TensorBoard: the image cards, the captions, the bias scalars, the notes.

The pictures (:func:`tile`, :func:`add_strips`) and the texts (descriptions, captions, notes) are
plain functions of numpy arrays and strings; :class:`EpochWriter` owns the event file and is the
only place that calls ``tf.summary``. The costly part of an epoch, encoding the overlays, is one
compiled function traced once per writer; the few scalars and notes are written eagerly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from tensorboard.plugins.image import metadata as image_metadata

from ..metrics.localisation import pointing_tolerance

__all__ = [
    "CORRECT",
    "WRONG",
    "UNKNOWN",
    "tile",
    "add_strips",
    "markdown_cell",
    "class_name",
    "target_name",
    "image_summary",
    "probe_descriptions",
    "scalar_descriptions",
    "captions",
    "non_finite_note",
    "empty_maps_note",
    "epoch_note",
    "EpochWriter",
]

CORRECT = np.array([46, 160, 67], np.uint8)  # strip under a probe: prediction right
WRONG = np.array([214, 39, 40], np.uint8)  # ... wrong
UNKNOWN = np.array([128, 128, 128], np.uint8)  # ... no prediction: the model's output is not finite
GAP_VALUE = 255  # white lines between the tiles of the grid
SCALARS = ("energy_inside_object", "pointing_game")  # the bias scalars, tags "bias/<name>"
DIVERGED_SCORE = 1e4  # explained scores this large are read as a diverged run (healthy logits stay far below)


# -- pictures -----------------------------------------------------------------------------------
def tile(images: np.ndarray, gap: int = 2) -> np.ndarray:
    """Tile ``(n, h, w, 3)`` uint8 images in a near-square grid, ``gap`` white pixels apart."""
    n, h, w, c = images.shape
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    canvas = np.full((rows, h + gap, cols, w + gap, c), GAP_VALUE, np.uint8)
    padded = np.full((rows * cols, h, w, c), GAP_VALUE, np.uint8)
    padded[:n] = images
    canvas[:, :h, :, :w] = padded.reshape(rows, cols, h, w, c).transpose(0, 2, 1, 3, 4)
    return canvas.reshape(rows * (h + gap), cols * (w + gap), c)[: rows * (h + gap) - gap, : cols * (w + gap) - gap]


def add_strips(images: np.ndarray, correct: np.ndarray, finite: np.ndarray) -> np.ndarray:
    """A strip under each image: :data:`CORRECT`, :data:`WRONG`, or :data:`UNKNOWN` where not ``finite``."""
    n, h, w, _ = images.shape
    rows = max(2, h // 16)
    strip = np.where(correct[:, None, None, None], CORRECT, WRONG).astype(np.uint8)
    strip = np.where(finite[:, None, None, None], strip, UNKNOWN).astype(np.uint8)
    return np.concatenate([images, np.broadcast_to(strip, (n, rows, w, 3))], axis=1)


# -- texts --------------------------------------------------------------------------------------
def markdown_cell(text) -> str:
    """Escape the characters that would break a markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def class_name(k, class_names: Sequence[str] | None) -> str:
    """The name of class ``k`` (its index without ``class_names``; ``"?"`` for none)."""
    if k is None or k < 0:
        return "?"
    k = int(k)
    if class_names is not None and k < len(class_names):
        return class_names[k]
    return str(k)


def target_name(target) -> str:
    """How a target object or callable is shown: its repr for a core target, else its name."""
    if type(target).__module__.startswith("keras_gradcam."):
        return repr(target)
    return getattr(target, "__qualname__", type(target).__name__)


def probe_descriptions(
    *, n: int, method: str, layer, colormap: str, alpha: float, tag_prefix: str, targets,
    target_classes, labels, class_names,
) -> list[str]:
    """The markdown description of each probe card (the same at every step).

    ``targets`` is the user's ``targets=``; ``target_classes`` the classes it resolved to (None for
    top-1), or the callable itself.
    """
    if callable(target_classes):
        what = f"the target `{markdown_cell(target_name(target_classes))}`"
    else:
        what = {"predicted": "the predicted class", "label": "the true class"}.get(
            targets if isinstance(targets, str) else "", "the chosen class"
        )
    strip = (
        " The strip under the image is green when the prediction is right, red when it is wrong."
        if labels is not None
        else ""
    )
    by_label = isinstance(targets, str) and targets == "label"
    fixed = target_classes is not None and not callable(target_classes) and not by_label
    out = []
    for i in range(n):
        true = f", true class **{markdown_cell(class_name(labels[i], class_names))}**" if labels is not None else ""
        what_i = f"class **{markdown_cell(class_name(target_classes[i], class_names))}**" if fixed else what
        out.append(
            f"**Probe {i:02d}**{true}. {method} heatmap of {what_i} at layer `{layer}`, drawn with the "
            f"`{colormap}` colormap (alpha {alpha:g}; red = strongest evidence). One image per "
            f"logged epoch: move the step slider to watch where the model looks.{strip} Per-epoch "
            f"predictions and scores: text card `{tag_prefix}/captions`."
        )
    return out


def scalar_descriptions(method: str, masks: np.ndarray, tolerance: float | None) -> dict[str, str]:
    """The descriptions of the bias scalars for the probes' ``masks`` and the pointing game's ``tolerance``
    (None: :func:`~keras_gradcam.metrics.pointing_tolerance` of the masks' size)."""
    area = float(masks.mean())
    tolerance = pointing_tolerance(masks.shape[1:]) if tolerance is None else tolerance
    return {
        "energy_inside_object": (
            f"Share of the {method} heatmap energy inside the probes' object masks (energy-based pointing "
            f"game), mean over the probes. A map spread evenly over the image scores {area:.0%} (the objects' "
            "area); a model that looks at the objects scores far above it; a falling curve means the "
            "evidence moves off the objects, e.g. to a watermark or the background."
        ),
        "pointing_game": (
            f"Share of probes whose {method} heatmap maximum lies on the object (pointing game, tolerance "
            f"{tolerance:.3g} px)."
        ),
    }


def captions(epoch: int, exp, *, method: str, labels, class_names, energy, hits, scalars, finite, note) -> str:
    """The markdown caption table of one epoch: per probe true, predicted and explained class, score, bias."""
    head = f"**Epoch {epoch + 1}** (step {epoch}), {method} at layer `{exp.layer}`"
    if scalars is not None:
        head += f": {scalars[0]:.0%} of the evidence inside the objects, pointing game {scalars[1]:.0%}"
    cols = ["probe", "true", "predicted", "explained", "score"]
    if energy is not None:
        cols += ["inside object", "pointing hit"]
    lines = [head + "."] + ([note] if note else []) + ["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    preds = exp.predictions
    for i in range(len(exp.scores)):
        true = class_name(labels[i], class_names) if labels is not None else "-"
        pred = class_name(preds[i], class_names) if preds is not None and finite[i] else "-"
        if labels is not None and preds is not None and finite[i]:
            pred += " ✓" if preds[i] == labels[i] else " ✗"
        explained = class_name(exp.targets[i], class_names) if exp.targets is not None else "-"
        row = [f"{i:02d}", *map(markdown_cell, (true, pred, explained)), f"{float(exp.scores[i]):.3g}"]
        if energy is not None:
            row += ["-" if not np.isfinite(energy[i]) else f"{energy[i]:.0%}",
                    "-" if not np.isfinite(hits[i]) else ("yes" if hits[i] else "no")]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def non_finite_note(epoch: int, bad: int, n: int) -> str:
    """The note of an epoch at which the outputs of ``bad`` of ``n`` probes are not finite."""
    return (
        f"The model's outputs are not finite (NaN or inf) for **{bad} of {n} probes** at epoch {epoch + 1} "
        f"(TensorBoard step {epoch}): training has probably diverged (NaN or exploding loss; try a lower "
        "learning rate or gradient clipping). Their heatmaps are blank, and this epoch has no bias scalars."
    )


def empty_maps_note(epoch: int, n: int, method: str, magnitude: float) -> str:
    """The note of an epoch at which all ``n`` probes' heatmaps are empty (all zero); ``magnitude``:
    the largest absolute explained score."""
    why = (
        "scores this large mean that training has probably diverged (a learning rate too high): lower the "
        "learning rate or clip the gradients" if magnitude >= DIVERGED_SCORE else
        "the explained layer shows no positive evidence for these scores (dead ReLUs, or a layer the score "
        "does not depend on): check the training, the layer or the method"
    )
    return (
        f"**Every {method} heatmap is empty** (all zero) for the {n} probes at epoch {epoch + 1} (TensorBoard step "
        f"{epoch}): there is no evidence anywhere, inside or outside the objects, so this epoch has no bias scalars. "
        f"The explained scores reach {magnitude:.3g} in magnitude; {why}."
    )


def epoch_note(epoch: int, exp, finite: np.ndarray, method: str) -> str | None:
    """The note of an epoch whose probes cannot be scored (:func:`non_finite_note`, :func:`empty_maps_note`), or None."""
    n = len(finite)
    if not finite.all():
        return non_finite_note(epoch, int((~finite).sum()), n)
    if not np.any(exp.heatmaps > 0):
        return empty_maps_note(epoch, n, method, float(np.max(np.abs(exp.scores))))
    return None


# -- records ------------------------------------------------------------------------------------
def image_summary(name: str, image, description: str, image_format: str):
    """Write one ``(height, width, 3)`` uint8 image to the default writer, PNG or JPEG encoded.

    PNG goes through ``tf.summary.image``. JPEG is the one reason for building the record here:
    ``tf.summary.image`` always encodes PNG, while JPEG (quality 90) is several times faster to
    encode and smaller on disk. The record is the one ``tf.summary.image`` writes, with the JPEG
    bytes in place of the PNG ones: a string tensor ``[width, height, encoded image]`` with the
    image plugin's metadata; TensorBoard decodes either format.
    """
    if image_format == "png":
        return tf.summary.image(name, image[None], max_outputs=1, description=description)
    height, width = image.shape[:2]  # static: the compiled caller's input signature is fixed
    encoded = tf.io.encode_jpeg(image, quality=90)
    tensor = tf.concat([tf.constant([str(width), str(height)]), encoded[None]], axis=0)
    meta = image_metadata.create_summary_metadata(display_name=None, description=description)
    return tf.summary.write(name, tensor, metadata=meta)


class EpochWriter:
    """The event file of the run folder and the compiled function that writes an epoch's cards.

    Parameters
    ----------
    run_dir : str
        The run folder (created by the caller).
    tag_prefix : str
        The tag section of the cards, e.g. ``"gradcam++"``.
    descriptions : list of str
        One description per probe card (:func:`probe_descriptions`).
    image_shape, grid_shape : tuple
        The ``(height, width, 3)`` shapes of one card and of the grid (fixed for the writer's life).
    grid : bool
        Whether to write the grid card.
    image_format : {"jpeg", "png"}
    method : str
        The method's display name, for the grid's and the captions' descriptions.
    layer : str or tuple
        The explained layer, for the grid's description.
    scalar_descriptions : dict of str to str, optional
        Descriptions of the bias scalars (:func:`scalar_descriptions`); None without masks.

    Attributes
    ----------
    write_fn : tf.types.experimental.GenericFunction
        ``(overlays, grid, step, captions) -> 0``, traced once.
    """

    def __init__(self, run_dir: str, *, tag_prefix: str, descriptions: list[str], image_shape: tuple,
                 grid_shape: tuple, grid: bool, image_format: str, method: str, layer,
                 scalar_descriptions: dict[str, str] | None = None):
        self.tag_prefix = tag_prefix
        self.scalar_descriptions = scalar_descriptions or {}
        self.writer = tf.summary.create_file_writer(run_dir)
        n = len(descriptions)
        writer = self.writer
        grid_description = f"All {n} probes, {method} at layer `{layer}`, row by row from probe 00."
        caption_description = f"Per epoch: true, predicted and explained class and the score of each probe ({method})."

        @tf.function(
            input_signature=[
                tf.TensorSpec((n,) + tuple(image_shape), tf.uint8),
                tf.TensorSpec(grid_shape, tf.uint8),
                tf.TensorSpec((), tf.int64),
                tf.TensorSpec((), tf.string),
            ]
        )
        def write(overlays, grid_image, step, caption_text):
            with writer.as_default(step=step):
                for i in range(n):
                    image_summary(f"{tag_prefix}/probe_{i:02d}", overlays[i], descriptions[i], image_format)
                if grid:
                    image_summary(f"{tag_prefix}/grid", grid_image, grid_description, image_format)
                tf.summary.text(f"{tag_prefix}/captions", caption_text, description=caption_description)
            return tf.constant(0)

        self.write_fn = write

    def write(self, epoch: int, images: np.ndarray, grid: np.ndarray, caption_text: str,
              scalars: tuple | None = None, note: str | None = None) -> None:
        """Write epoch ``epoch`` (the step): the cards and captions, the bias scalars and a note if given."""
        step = tf.constant(epoch, tf.int64)
        self.write_fn(tf.constant(images), tf.constant(grid), step, tf.constant(caption_text))
        with self.writer.as_default(step=step):
            if scalars is not None:
                for name, value in zip(SCALARS, scalars):
                    tf.summary.scalar(f"bias/{name}", value, description=self.scalar_descriptions[name])
            if note is not None:
                tf.summary.text(
                    f"{self.tag_prefix}/warnings", note,
                    description="Epochs whose probes could not be scored: outputs not finite, or every heatmap empty.",
                )
        self.writer.flush()

    def close(self) -> None:
        """Close the event file."""
        self.writer.close()
