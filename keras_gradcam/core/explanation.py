"""The result of an explainer: maps, targets and scores of a batch, as numpy arrays."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from ..io import file_stems, read_explanation, save_explanation
from ..viz.overlay import overlay

__all__ = ["Explanation"]


@dataclass
class Explanation:
    """Heatmaps of a batch and what they explain.

    Attributes
    ----------
    heatmaps : ndarray of shape (n_samples, *input_spatial_dims), float32
        One map per sample at input resolution, min-max normalised to [0, 1].
    layer_heatmaps : ndarray of shape (n_samples, *layer_spatial_dims), float32
        The map after the method's ReLU, before resizing and normalisation (for several fused
        layers: the fused map at the finest layer's resolution). With ``relu=False`` the signed
        map; with ``aug_smooth=True`` the average of the augmented copies' maps, flips undone.
    targets : ndarray of shape (n_samples,), int, or None
        The explained class of each sample; None when a callable target was used.
    scores : ndarray of shape (n_samples,), float32
        The explained score of each sample (the pre-softmax logit by default).
    layer : str or tuple of str
        Path of the explained layer(s).
    method : str
        Name of the method, as in :data:`keras_gradcam.METHODS`.
    predictions : ndarray of shape (n_samples,), int, or None
        Top-1 class of each sample (None when the output is not ``(N, classes)``).
    attributions : ndarray shaped like the input, or None
        Input-resolution, per-channel attributions (guided methods only).
    extras : dict
        Method-specific arrays (e.g. channel weights), one leading sample axis each.
    finite : ndarray of shape (n_samples,), bool, or None
        False for a sample whose score or map is not finite (NaN or inf: non-finite weights, or a
        model whose outputs overflow); its heatmap is all zero and carries no information. None
        when not recorded (an Explanation built by hand or loaded from an older save).

    Examples
    --------
    >>> exp = kg.explain(model, images)          # doctest: +SKIP
    >>> len(exp), exp.heatmaps.shape             # doctest: +SKIP
    (8, (8, 64, 64))
    >>> exp[:2].targets                          # doctest: +SKIP
    """

    heatmaps: np.ndarray
    layer_heatmaps: np.ndarray
    targets: np.ndarray | None
    scores: np.ndarray
    layer: str | tuple
    method: str
    predictions: np.ndarray | None = None
    attributions: np.ndarray | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    finite: np.ndarray | None = None

    _PER_SAMPLE = ("heatmaps", "layer_heatmaps", "targets", "scores", "predictions", "attributions", "finite")

    def __len__(self) -> int:
        return int(self.heatmaps.shape[0])

    def __getitem__(self, index) -> Explanation:
        """A sub-batch; an int index keeps the sample axis (``exp[0]`` has length 1)."""
        if isinstance(index, (int, np.integer)):
            n = len(self)
            if not -n <= index < n:
                raise IndexError(f"index {index} out of range for an Explanation of {n} samples.")
            index = slice(index, index + 1 if index != -1 else None)
        take = {f: (getattr(self, f)[index] if getattr(self, f) is not None else None) for f in self._PER_SAMPLE}
        extras = {k: v[index] for k, v in self.extras.items()}
        return replace(self, extras=extras, **take)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        t = None if self.targets is None else self.targets.tolist()[:8]
        return (
            f"Explanation(method={self.method!r}, layer={self.layer!r}, n={len(self)}, "
            f"heatmaps={self.heatmaps.shape}, layer_heatmaps={self.layer_heatmaps.shape}, targets={t})"
        )

    @classmethod
    def concatenate(cls, parts: list[Explanation]) -> Explanation:
        """Join explanations of consecutive batches made by the same explainer."""
        first = parts[0]
        joined = {}
        for f in fields(cls):
            values = [getattr(p, f.name) for p in parts]
            if f.name in cls._PER_SAMPLE:
                joined[f.name] = None if values[0] is None else np.concatenate(values, axis=0)
            elif f.name == "extras":
                joined[f.name] = {k: np.concatenate([p.extras[k] for p in parts]) for k in first.extras}
            else:
                joined[f.name] = values[0]
        return cls(**joined)

    # -- on disk (save / to_dict / load; the files are written by keras_gradcam.io) ----------------

    def to_dict(self, arrays: bool = False, class_names=None) -> dict[str, Any]:
        """A JSON-serialisable summary: method, layer, and per sample the target, score, prediction.

        Parameters
        ----------
        arrays : bool, default=False
            Also include ``heatmaps`` and ``layer_heatmaps`` as nested lists (large: off by default).
        class_names : sequence of str, optional
            Adds ``target_names`` and ``prediction_names`` (class names instead of indices).

        Returns
        -------
        dict
            Keys ``method``, ``layer`` (str or list of str), ``n_samples``, ``targets`` (list of int,
            or None for a callable target), ``scores`` (list of float), ``predictions`` (list of int
            or None), ``heatmap_shape``, ``layer_heatmap_shape``; plus the options above.

        Examples
        --------
        >>> import numpy as np
        >>> from keras_gradcam import Explanation
        >>> exp = Explanation(np.zeros((1, 4, 4), "float32"), np.zeros((1, 2, 2), "float32"),
        ...                   np.array([2]), np.array([1.5], "float32"), "conv", "gradcam")
        >>> exp.to_dict()["targets"], exp.to_dict()["scores"]
        ([2], [1.5])
        """

        def ints(a):
            return None if a is None else [int(v) for v in np.asarray(a).reshape(-1)]

        out: dict[str, Any] = {
            "method": self.method,
            "layer": list(self.layer) if isinstance(self.layer, tuple) else self.layer,
            "n_samples": len(self),
            "targets": ints(self.targets),
            "scores": [float(v) for v in np.asarray(self.scores, np.float64).reshape(-1)],
            "predictions": ints(self.predictions),
            "heatmap_shape": [int(d) for d in self.heatmaps.shape],
            "layer_heatmap_shape": [int(d) for d in self.layer_heatmaps.shape],
        }
        if class_names is not None:
            names = [str(c) for c in class_names]

            def name(k):
                return names[k] if 0 <= k < len(names) else str(k)

            out["class_names"] = names
            out["target_names"] = None if out["targets"] is None else [name(k) for k in out["targets"]]
            out["prediction_names"] = None if out["predictions"] is None else [name(k) for k in out["predictions"]]
        if arrays:
            out["heatmaps"] = np.asarray(self.heatmaps, np.float64).tolist()
            out["layer_heatmaps"] = np.asarray(self.layer_heatmaps, np.float64).tolist()
        return out

    def save(
        self,
        folder,
        images=None,
        *,
        names=None,
        class_names=None,
        alpha: float = 0.4,
        colormap: str = "jet",
    ) -> dict[str, Any]:
        """Write the maps (``.npy``), PNG pictures and a JSON manifest to ``folder``.

        Parameters
        ----------
        folder : str or os.PathLike
            Created if missing; files of the same names are overwritten.
        images : array-like of shape (n_samples, height, width[, channels]), optional
            The explained images (any range :func:`keras_gradcam.viz.overlay` accepts). With them, an
            overlay PNG per sample is written as well.
        names : sequence of str, optional
            A file stem per sample (e.g. the image file names); default ``000``, ``001``, ...
        class_names : sequence of str, optional
            Recorded in the manifest next to the class indices.
        alpha : float, default=0.4
            Heatmap opacity of the overlays.
        colormap : str, default="jet"
            Matplotlib colormap of the heatmap and overlay PNGs.

        Returns
        -------
        dict
            The manifest written to ``folder/manifest.json``: :meth:`to_dict` plus ``format``,
            ``arrays`` (file, shape and dtype of each ``.npy``), ``samples`` (per sample: name,
            target, score, prediction and its PNG files), ``overlay`` (alpha, colormap) and
            ``versions`` (keras-gradcam, Keras, TensorFlow, NumPy, Python).

        Raises
        ------
        ValueError
            ``images`` or ``names`` whose length is not the number of samples, or duplicate names.

        Notes
        -----
        Files: ``heatmaps.npy``, ``layer_heatmaps.npy`` (and ``attributions.npy``, ``extra_<key>.npy``
        when present); for 2-D maps ``<name>_heatmap.png`` (the colormapped map at input
        resolution) and, with ``images``, ``<name>_overlay.png``. 1-D and 3-D maps are saved as
        ``.npy`` only. :meth:`load` reads the folder back.

        Examples
        --------
        >>> exp = kg.explain(model, images)                          # doctest: +SKIP
        >>> manifest = exp.save("outputs/cam", images=images)        # doctest: +SKIP
        >>> sorted(os.listdir("outputs/cam"))[:3]                    # doctest: +SKIP
        ['000_heatmap.png', '000_overlay.png', '001_heatmap.png']
        """
        stems = file_stems(names, len(self))
        if images is not None:
            images = np.asarray(images.numpy() if hasattr(images, "numpy") else images)
            if images.shape[0] != len(self):
                raise ValueError(
                    f"images has {images.shape[0]} samples but the explanation has {len(self)}; pass the explained "
                    "images."
                )
        pictures = {}
        if self.heatmaps.ndim == 3:  # 2-D maps: the coloured map, and the overlay on the images
            pictures["heatmap"] = overlay(np.zeros(self.heatmaps.shape, np.uint8), self.heatmaps, alpha=1.0,
                                          colormap=colormap)
            if images is not None:
                pictures["overlay"] = overlay(images, self.heatmaps, alpha=alpha, colormap=colormap)
        drawn_with = {"alpha": float(alpha), "colormap": colormap if isinstance(colormap, str) else getattr(colormap, "name", None)}
        return save_explanation(self, folder, pictures, names=stems, class_names=class_names, drawn_with=drawn_with)

    @classmethod
    def load(cls, folder) -> Explanation:
        """Read back a folder written by :meth:`save`.

        Parameters
        ----------
        folder : str or os.PathLike
            A folder holding ``manifest.json`` and the ``.npy`` files it lists.

        Returns
        -------
        Explanation
            Maps, targets, scores, predictions, layer and method as saved (``extras`` holds the
            saved ``extra_<key>`` arrays).

        Raises
        ------
        FileNotFoundError
            No ``manifest.json`` in ``folder``.
        ValueError
            A manifest that was not written by :meth:`save`.
        """
        return cls(**read_explanation(folder))
