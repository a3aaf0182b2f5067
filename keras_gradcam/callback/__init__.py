"""``GradCAMCallback``: where the model looks on a fixed probe set, in TensorBoard, every epoch.

Add it to ``model.fit`` next to ``keras.callbacks.TensorBoard``: after each logged epoch it
explains the probes (Grad-CAM++ by default), blends each heatmap over its image with
:func:`keras_gradcam.viz.overlay` and writes one image card per probe (with an epoch slider),
optionally a grid of all probes, a per-epoch caption table and, with object masks, two scalars: the
share of the heatmap energy inside the objects (energy pointing game) and the pointing-game hit
rate. A model that learns a shortcut (a watermark, a background, a border) shows it there.

The callback never changes training: it calls the model with ``training=False`` in its own
compiled function (traced once and reused), draws no random numbers, and does not touch the
optimizer or any layer state.

Modules
-------
``callback``
    :class:`GradCAMCallback`: arguments, configuration and the training hooks.
``probes``
    The checks of the probe images, labels, masks and targets, also against the model.
``summaries``
    What is written to TensorBoard (cards, captions, scalars, notes); the only ``tf.summary`` user.
"""

from .callback import GradCAMCallback

__all__ = ["GradCAMCallback"]
