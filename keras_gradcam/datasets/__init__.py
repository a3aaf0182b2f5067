"""Seeded synthetic shape images with pixel-exact ground truth.

This module generates small image-classification datasets of coloured
geometric shapes on textured, noisy backgrounds.  Every sample comes with
the ground truth needed to *evaluate* an explanation: the class mask, the
bounding box, per-object masks and, optionally, a *spurious cue* whose colour
gives the class away (a small watermark in a fixed corner, a frame, or a
tinted background) and whose pixels are also known.

Nothing is ever downloaded: all data is drawn from
:func:`numpy.random.default_rng` streams derived from a single integer
``seed``, so the same arguments always give bit-identical arrays.  Generation
is NumPy only (no TensorFlow op runs).

Generation model
----------------
* **Background** -- a per-image random base colour plus two octaves of smooth
  random texture (bilinearly up-sampled random grids).  Background values are
  mostly below ``0.55`` before the pixel noise is added.
* **Objects** -- each object is a shape of one of :data:`SUPPORTED_SHAPES`,
  fitted inside a *circumscribed circle* of radius ``size * image_size / 2``
  where ``size`` is drawn uniformly from ``size_range``; it is randomly
  rotated and filled with a random colour (random hue, saturation in
  ``[0.3, 1]``, value in ``[0.75, 1]``).  The colour is drawn independently
  of the class, so **only the shape identifies the class** (unless the
  spurious cue is switched on).  Objects never overlap or touch: their
  circumscribed circles are at least 2 px apart.
* **Spurious cue** (``cue="corner"``) -- see :func:`cue_region` and
  :func:`cue_colors`.  The cue is a solid square patch of side
  ``max(2, round(0.1 * image_size))`` pixels whose top-left pixel is at
  ``(m, m)`` with ``m = max(1, round(0.03 * image_size))``, i.e. in the
  top-left corner.  Its colour identifies a class: class ``k`` of ``K`` gets
  the fully saturated, full-value colour of hue ``k / K`` (class 0 is pure
  red).  The square ``[0, 2m + side)`` x ``[0, 2m + side)`` (see
  :func:`reserved_region`) is reserved in **every** image, with or without
  cue: objects never enter it, so the cue never overlaps an object and the
  object layout does not depend on ``spurious_rate``.
* **Other cues** -- ``cue="border"`` paints a solid frame of the class colour
  along the edges (:func:`border_region`, 6 % of the side wide);
  ``cue="background"`` mixes every background pixel with the class colour
  (weight :data:`BACKGROUND_TINT`); ``cue="position"`` paints a white patch
  whose place along the top edge names the class (:func:`position_region`).
  Objects are drawn on top of all three.  ``cue_classes`` limits the cue to
  some classes (a cue on class 1 only: class 0 is told by its absence).
* **Noise** -- i.i.d. Gaussian noise of standard deviation ``noise`` is added
  to every pixel and channel (cue and objects included), then the image is
  clipped to ``[0, 1]``.  For speed the noise values are resampled from a
  seeded table of 65,536 exact normal draws.

Modules
-------
``container`` the :class:`SyntheticShapes` type; ``make`` the generators;
``shapes`` the shape masks; ``layout`` where objects go; ``cues`` the spurious
cue; ``background`` textures and pixel noise; ``checks`` the argument checks.

Examples
--------
>>> from keras_gradcam import datasets
>>> ds = datasets.make_shapes(n=64, image_size=32, seed=1)
>>> ds.images.shape, ds.labels.dtype.name, ds.num_classes
((64, 32, 32, 3), 'int64', 3)
>>> train, val = ds.split(0.75, seed=0)
>>> len(train), len(val)
(48, 16)
"""

from __future__ import annotations

from .container import SyntheticShapes
from .cues import (
    BACKGROUND_TINT,
    CUE_CLASS_MODES,
    SUPPORTED_CUES,
    border_region,
    cue_colors,
    cue_region,
    position_region,
    reserved_region,
)
from .make import make_biased_pair, make_probe_set, make_shapes
from .shapes import SUPPORTED_SHAPES

__all__ = [
    "SUPPORTED_SHAPES",
    "SUPPORTED_CUES",
    "CUE_CLASS_MODES",
    "BACKGROUND_TINT",
    "SyntheticShapes",
    "make_shapes",
    "make_probe_set",
    "make_biased_pair",
    "cue_colors",
    "cue_region",
    "border_region",
    "position_region",
    "reserved_region",
]
