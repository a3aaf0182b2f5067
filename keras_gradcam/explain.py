"""``explain()``: one call from a model and images to an :class:`Explanation`."""

from __future__ import annotations

from collections import OrderedDict

import keras

from .core.explanation import Explanation
from .core.targets import Targets
from .methods.registry import get_method, merge_options

__all__ = ["explain", "get_method"]

# the last few explainers, so that repeated explain() calls reuse their compiled functions;
# bounded, because an explainer holds its model
_CACHE: OrderedDict = OrderedDict()
_CACHE_SIZE = 8


def _hashable(value):
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    hash(value)
    return value


def explain(
    model: keras.Model,
    images,
    method: str = "gradcam++",
    layer=None,
    targets: Targets = None,
    *,
    batch_size: int = 32,
    method_options: dict | None = None,
    **options,
) -> Explanation:
    """Explain ``images`` with one of the methods in :data:`keras_gradcam.METHODS`.

    Parameters
    ----------
    model : keras.Model
        Functional, Sequential or nested Keras 3 model; it is not modified.
    images : array-like of shape (n_samples, ...), or list/dict of arrays for multi-input models
        Preprocessed as the model expects.
    method : str, default="gradcam++"
        A name from :data:`keras_gradcam.METHODS`, e.g. ``"gradcam"``, ``"gradcam++"``,
        ``"smoothgradcam++"``, ``"xgradcam"``, ``"hirescam"``, ``"layercam"``, ``"integrated-gradcam"``.
    layer : str, keras.layers.Layer or None, default=None
        Layer name, ``"outer/inner"`` path, or layer object; None picks the last feature map
        with located evidence (see :func:`keras_gradcam.core.layers.resolve_layer`).
    targets : None, int, sequence of int or callable, default=None
        What to explain; see :meth:`keras_gradcam.core.engine.Explainer.__call__`.
    batch_size : int, default=32
        Largest number of images per forward pass.
    method_options : dict, optional
        The method's options as a dict: the same name as in :class:`~keras_gradcam.GradCAMCallback`
        and :func:`~keras_gradcam.evaluate`, merged with ``**options``.
    **options
        Method options (``counterfactual=True``, ``n_samples=``, ``steps=``, ``output=``, ...),
        including the shared ``aug_smooth=True``, ``eigen_smooth=True`` and ``relu=False`` of
        the gradient methods (docs/smoothing.md).

    Returns
    -------
    Explanation

    Notes
    -----
    The last eight explainers are cached by model and arguments, so calling ``explain`` again with
    the same model reuses the compiled function (no retracing). For a loop over many calls, an
    explainer object (e.g. ``kg.GradCAMPlusPlus(model)``) makes the reuse explicit.

    Examples
    --------
    >>> import keras_gradcam as kg                              # doctest: +SKIP
    >>> exp = kg.explain(model, images, method="gradcam++")     # doctest: +SKIP
    >>> exp.heatmaps.shape                                      # doctest: +SKIP
    (8, 64, 64)
    """
    cls = get_method(method)
    options = merge_options(method_options, options)
    try:
        key = (id(model), cls, _hashable(layer), _hashable(sorted(options.items())), batch_size)
    except TypeError:  # an array option: no caching
        key = None
    explainer = _CACHE.get(key) if key is not None else None
    if explainer is None or explainer.model is not model:
        explainer = cls(model, layer, batch_size=batch_size, **options)
        if key is not None:
            _CACHE[key] = explainer
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
    else:
        _CACHE.move_to_end(key)
    return explainer(images, targets)
