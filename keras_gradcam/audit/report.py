"""The audit's result: a text table, ``summary.json`` and a self-contained ``index.html``.

The HTML page needs no network: every picture is a PNG embedded as base64 (images through
:func:`keras_gradcam.io.encode_png`, the accuracy chart drawn by Matplotlib). Both files are
written to a temporary name and renamed (``os.replace``), so a reader never sees half a file.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..evaluate import format_table
from ..io import encode_png
from ..viz.overlay import overlay

__all__ = ["ClassAudit", "AuditReport", "write_atomic"]

SHOWN = 96  # pixels across each picture in the page (small images are enlarged, pixelated)


@dataclass
class ClassAudit:
    """One class's line of the audit.

    Attributes
    ----------
    index, name : int, str
        The class.
    images : int
        Images of the class (by label, or by prediction without labels).
    accuracy : float
        Share classified as the class (1.0 without labels: the prediction is the group).
    consistency : float
        ``kappa``: the share of the class's top-region pixels inside its frequent region.
    peak_frequency : float
        ``max_p F(p)``: the largest share of images whose top region holds one pixel.
    flagged : bool
        Whether the class's evidence sits at one place (see :func:`keras_gradcam.audit`).
    region : str
        The flagged region in words ("the top-left 6 %"); empty when not flagged.
    area : float
        The flagged region's share of the image.
    accuracy_after : float or None
        Accuracy with the flagged region painted over (None when not flagged).
    energy, pointing : float or None
        With masks: mean share of the map's energy on the object, pointing-game hit rate.
    wrong_reason : int or None
        With masks: images right for the wrong reason (confident, the map's maximum off the object).
    """

    index: int
    name: str
    images: int
    accuracy: float
    consistency: float
    peak_frequency: float
    flagged: bool
    region: str = ""
    area: float = 0.0
    accuracy_after: float | None = None
    energy: float | None = None
    pointing: float | None = None
    wrong_reason: int | None = None

    def sentence(self, labelled: bool = True) -> str:
        """``"class 1 (square): accuracy 100 % -> 4 % when the top-left 6 % of the image is covered"``."""
        what = "accuracy" if labelled else "predictions kept"
        if not self.flagged:
            return f"class {self.index} ({self.name}): evidence moves from image to image; not flagged"
        after = "not measured" if self.accuracy_after is None else f"{100 * self.accuracy_after:.0f} %"
        return (f"class {self.index} ({self.name}): {what} {100 * self.accuracy:.0f} % -> {after} when "
                f"{self.region} of the image is covered")


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through ``path + ".partial"`` and :func:`os.replace`."""
    partial = path + ".partial"
    with open(partial, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)


def _clean(value):
    """JSON-safe: NaN as None, numpy scalars as Python numbers."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _png(image: np.ndarray) -> str:
    """An ``<img>`` of a uint8 image, embedded."""
    data = base64.b64encode(encode_png(image)).decode("ascii")
    return (f'<img src="data:image/png;base64,{data}" width="{SHOWN}" height="{SHOWN}" '
            'style="image-rendering: pixelated">')


def _uint8(image: np.ndarray) -> np.ndarray:
    """An image for display: through :func:`overlay` with no heatmap (its range rules)."""
    return overlay(image, np.zeros(image.shape[:2], np.float32), alpha=0.0)


def _tint(image: np.ndarray, region: np.ndarray) -> np.ndarray:
    """The image with ``region`` tinted red."""
    out = _uint8(image).astype(np.float32)
    out[region] = 0.45 * out[region] + 0.55 * np.array([255.0, 0.0, 0.0])
    return out.astype(np.uint8)


@dataclass
class AuditReport:
    """What :func:`keras_gradcam.audit` found; ``print(report)`` and ``report.save(folder)``.

    Attributes
    ----------
    method : str
    layer : str or tuple of str
    classes : list of ClassAudit
        One per class of the model.
    labelled : bool
        Whether labels were given (else classes are the model's predictions).
    fill : str
        What painted the flagged regions over ("mean" or "blur").
    thresholds : dict
        ``top``, ``min_frequency``, ``min_consistency``, ``min_images``, ``confident``, ``tolerance``.
    mean_heatmaps, frequencies : ndarray of shape (classes, height, width), float32
        Mean map and frequency ``F`` per class.
    regions : ndarray of shape (classes, height, width), bool
        The flagged region of each flagged class (all False for the others).
    mean_images : ndarray of shape (classes, height, width, channels)
    examples : dict
        Per class, lists ``"first"`` (the first images), and with masks ``"wrong"`` (right for the
        wrong reason, least energy on the object first), ``"most"`` and ``"least"`` (most and
        least of the energy on the object), each a dict of ``image``, ``heatmap``, ``index``.
    per_image : dict of ndarray of shape (n,)
        ``label``, ``prediction``, ``confidence``, ``energy``, ``pointing``, ``wrong_reason``.
    """

    method: str
    layer: Any
    classes: list[ClassAudit]
    labelled: bool
    fill: str
    thresholds: dict[str, float]
    mean_heatmaps: np.ndarray
    frequencies: np.ndarray
    regions: np.ndarray
    mean_images: np.ndarray
    examples: dict = field(default_factory=dict)
    per_image: dict = field(default_factory=dict)

    @property
    def flagged(self) -> list[str]:
        """Names of the flagged classes."""
        return [c.name for c in self.classes if c.flagged]

    @property
    def has_masks(self) -> bool:
        return any(c.energy is not None for c in self.classes)

    def rows(self) -> list[dict[str, Any]]:
        """The table's rows, one dict per class."""
        rows = []
        for c in self.classes:
            row = {"class": f"{c.index} {c.name}" if c.name != str(c.index) else c.name, "images": c.images,
                   "accuracy": c.accuracy, "consistency": c.consistency, "flagged": "YES" if c.flagged else "no",
                   "region": c.region or "-", "accuracy covered": c.accuracy_after}
            if self.has_masks:
                row.update({"energy in object": c.energy, "pointing game": c.pointing, "right, wrong reason": c.wrong_reason})
            rows.append(row)
        return rows

    def __str__(self) -> str:
        head = (f"Dataset audit: {self.method} at layer {self.layer!r}, {sum(c.images for c in self.classes)} images, "
                f"{len(self.flagged)} of {len(self.classes)} classes flagged")
        lines = [head, format_table(self.rows(), digits=2), ""]
        lines += [c.sentence(self.labelled) for c in self.classes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """What ``summary.json`` holds: method, layer, thresholds, one dict per class, the sentences."""
        return _clean({
            "format": "keras-gradcam audit", "method": self.method,
            "layer": list(self.layer) if isinstance(self.layer, tuple) else self.layer,
            "labelled": self.labelled, "fill": self.fill, "thresholds": self.thresholds,
            "flagged": self.flagged, "classes": [asdict(c) for c in self.classes],
            "sentences": [c.sentence(self.labelled) for c in self.classes],
            "images": int(sum(c.images for c in self.classes)),
        })

    # -- files -------------------------------------------------------------------------------------
    def save(self, folder: str) -> str:
        """Write ``folder/summary.json`` and ``folder/index.html`` (created if missing); returns the page's path."""
        os.makedirs(folder, exist_ok=True)
        write_atomic(os.path.join(folder, "summary.json"), json.dumps(self.to_dict(), indent=2).encode("utf-8"))
        page = os.path.join(folder, "index.html")
        write_atomic(page, self.to_html().encode("utf-8"))
        return page

    def _chart(self) -> str:
        """The before/after accuracy per class, a Matplotlib bar chart, as an embedded PNG."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure

        fig = Figure(figsize=(max(3.0, 0.9 * len(self.classes) + 1), 2.4), dpi=100)
        ax = fig.subplots()
        xs = np.arange(len(self.classes))
        ax.bar(xs - 0.2, [c.accuracy for c in self.classes], 0.4, label="as they are", color="#4c72b0")
        after = [np.nan if c.accuracy_after is None else c.accuracy_after for c in self.classes]
        ax.bar(xs + 0.2, after, 0.4, label="flagged region covered", color="#dd5533")
        ax.set_xticks(xs, [c.name for c in self.classes], fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("accuracy" if self.labelled else "kept", fontsize=8)
        ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        data = base64.b64encode(buffer.getvalue()).decode("ascii")
        return f'<img src="data:image/png;base64,{data}" alt="accuracy before and after">'

    def _strip(self, items: dict) -> str:
        return "".join(f'<figure>{_png(overlay(img, h))}<figcaption>#{int(i)}</figcaption></figure>'
                       for img, h, i in zip(items["image"], items["heatmap"], items["index"]))

    def to_html(self) -> str:
        """The report as one self-contained HTML page (no script, no link outside it)."""
        esc = html.escape
        t = self.thresholds
        parts = [
            "<!DOCTYPE html><html><head><meta charset='utf-8'><title>keras-gradcam dataset audit</title><style>",
            "body{font-family:sans-serif;margin:1.5em;max-width:70em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:.2em .5em;text-align:right}th{background:#eee}"
            "figure{display:inline-block;margin:.2em;text-align:center;font-size:.75em}"
            ".flag{color:#b00;font-weight:bold}section{border-top:1px solid #ccc;margin-top:1em}",
            "</style></head><body>",
            f"<h1>Dataset audit</h1><p>{esc(self.method)} at layer <code>{esc(str(self.layer))}</code>; "
            f"{sum(c.images for c in self.classes)} images; flagged: "
            f"<span class='flag'>{esc(', '.join(self.flagged) or 'none')}</span>.</p>",
            f"<p>A class is flagged when the same pixels are in the top {100 * t['top']:.0f} % of the maps of at least "
            f"{100 * t['min_frequency']:.0f} % of its images and that region holds at least "
            f"{100 * t['min_consistency']:.0f} % of those top pixels (consistency). The flagged region is then painted "
            f"over ({esc(self.fill)}) in every image of the class and the accuracy measured again.</p>",
            "<ul>" + "".join(f"<li>{esc(c.sentence(self.labelled))}</li>" for c in self.classes) + "</ul>",
            self._table(), self._chart(),
        ]
        order = sorted(self.classes, key=lambda c: (not c.flagged, -(c.wrong_reason or 0), c.index))
        for c in order:
            k = c.index
            parts.append(f"<section><h2>class {k}: {esc(c.name)}"
                         + (" <span class='flag'>flagged</span>" if c.flagged else "") + "</h2>")
            parts.append(f"<figure>{_png(overlay(self.mean_images[k], self.mean_heatmaps[k]))}"
                         "<figcaption>mean map over the mean image</figcaption></figure>")
            freq = self.frequencies[k] / max(float(self.frequencies[k].max()), 1e-12)
            parts.append(f"<figure>{_png(overlay(self.mean_images[k], freq, alpha=0.6, colormap='magma'))}"
                         f"<figcaption>top-region frequency (max {100 * c.peak_frequency:.0f} %)</figcaption></figure>")
            if c.flagged:
                parts.append(f"<figure>{_png(_tint(self.mean_images[k], self.regions[k]))}"
                             f"<figcaption>flagged: {esc(c.region)}</figcaption></figure>")
            lists = self.examples.get(k, {})
            for key, title in (("wrong", "right for the wrong reason"), ("most", "most object-centred"),
                               ("least", "least object-centred"), ("first", "examples")):
                if key in lists and (key != "first" or not self.has_masks):
                    parts.append(f"<h3>{title}</h3>{self._strip(lists[key])}")
            parts.append("</section>")
        parts.append("</body></html>")
        return "\n".join(parts)

    def _table(self) -> str:
        rows = self.rows()
        head = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0])

        def cell(v):
            if v is None or (isinstance(v, float) and math.isnan(v)):
                return "-"
            return f"{v:.2f}" if isinstance(v, float) else html.escape(str(v))

        body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r.values()) + "</tr>" for r in rows)
        return f"<table><tr>{head}</tr>{body}</table>"
