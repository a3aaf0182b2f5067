"""What kind of input a model takes: methods that perturb the input refuse integer token ids.

Smooth Grad-CAM++ adds noise to the input, Integrated Grad-CAM interpolates it from a baseline,
Score-CAM multiplies it by masks and guided backpropagation differentiates the score with respect
to it. None of this means anything for token ids feeding an ``Embedding``: a noisy or
interpolated id is another word (or out of the vocabulary), and the gradient stops at the
lookup. :func:`refuse_token_inputs` detects such models once, in one place, for all of them.

A method that does something to the input says what in its class attribute ``input_action``
(e.g. ``"adds Gaussian noise to the input"``); the others read a layer and leave the input as it
is, so they work on token models: :func:`layer_methods` lists them from the method classes.
"""

from __future__ import annotations

import keras

from ..core.engine import BaseCAM

__all__ = ["layer_methods", "refuse_token_inputs", "token_inputs"]


def layer_methods() -> list[type]:
    """The library's methods that read a layer and never change the input: they work on token models.

    Read from the method classes: every subclass of :class:`~keras_gradcam.core.engine.BaseCAM`
    defined in ``keras_gradcam.methods`` with its own ``name`` and no ``input_action`` (what a
    method does to the input, set by the methods that refuse token ids). Sorted by name.
    """
    found, todo = set(), [BaseCAM]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in found:
                found.add(sub)
                todo.append(sub)
    return sorted(
        (cls for cls in found
         if cls.__module__.startswith(__name__.rpartition(".")[0] + ".") and "name" in vars(cls)
         and getattr(cls, "input_action", None) is None),
        key=lambda cls: cls.name,
    )


def _is_integer(dtype) -> bool:
    name = keras.backend.standardize_dtype(dtype)
    return name == "bool" or name.startswith(("int", "uint"))


def _embeddings_reading(model, tensors: list) -> list[str]:
    """Names of the Embedding layers that read one of ``tensors`` directly (nested models followed)."""
    ids = {id(t) for t in tensors}
    found = []
    for layer in getattr(model, "layers", None) or []:
        for node in getattr(layer, "_inbound_nodes", None) or []:
            if not any(id(t) in ids for t in keras.tree.flatten(getattr(node, "input_tensors", None) or [])):
                continue
            if isinstance(layer, keras.layers.Embedding):
                found.append(layer.name)
            elif isinstance(layer, keras.Model) and getattr(layer, "inputs", None):
                found += [f"{layer.name}/{n}" for n in _embeddings_reading(layer, list(layer.inputs))]
            break
    return found


def token_inputs(model: keras.Model) -> dict[int, str]:
    """The inputs of ``model`` that take integer token ids, by position, with the reason.

    Parameters
    ----------
    model : keras.Model
        A built model.

    Returns
    -------
    dict of int to str
        Position in ``model.inputs`` -> ``"input 'ids' is int32"`` for an input declared with an
        integer or boolean dtype (``keras.Input(dtype="int32")``), and/or ``"an input feeds the
        Embedding layer 'emb'"`` for an input read directly by an ``Embedding`` layer (also inside
        a nested model). Empty for a model whose inputs are all continuous.
    """
    found = {}
    for i, t in enumerate(getattr(model, "inputs", None) or []):
        dtype = keras.backend.standardize_dtype(t.dtype)
        reasons = [f"input {getattr(t, 'name', i)!r} is {dtype}"] if _is_integer(dtype) else []
        reasons += [f"an input feeds the Embedding layer {name!r}" for name in _embeddings_reading(model, [t])]
        if reasons:
            found[i] = " and ".join(reasons)
    return found


def refuse_token_inputs(model: keras.Model, method: str, action: str, *, only_if_all: bool = False) -> None:
    """Raise a ``ValueError`` when ``model`` takes token ids (see :func:`token_inputs`).

    Parameters
    ----------
    model : keras.Model
        A built model.
    method : str
        The explainer's name, for the message.
    action : str
        What the method does to the input ("adds noise to the input"), for the message.
    only_if_all : bool, default=False
        Raise only when every input takes token ids (for a method that perturbs only the
        continuous inputs, such as Score-CAM masking the image of an image + tokens model).

    Raises
    ------
    ValueError
        Naming the reason, why the method cannot work, and the methods that do.
    """
    found = token_inputs(model)
    n_inputs = len(getattr(model, "inputs", None) or [])
    reasons = list(found.values()) if found and (not only_if_all or len(found) == n_inputs) else []
    if reasons:
        names = [getattr(cls, "display_name", cls.name) for cls in layer_methods()]
        raise ValueError(
            f"{method} {action}, which is meaningless for integer token ids: in model {model.name!r} "
            f"{' and '.join(reasons)}. A perturbed or interpolated id is another token (or none), and "
            "gradients stop at the embedding lookup. Use a method that reads a layer and leaves the input "
            f"as it is ({', '.join(names[:-1])} and {names[-1]}), or explain a sub-model that starts after the Embedding and takes "
            "the embedded sequence as its (float) input."
        )
