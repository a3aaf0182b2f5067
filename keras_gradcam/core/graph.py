"""Questions about a functional Keras graph, answered from its symbolic tensors (nothing is run)."""

from __future__ import annotations

import keras

from .validate import warn_user

__all__ = ["depends_on", "reaches_output", "check_reaches", "OFF_BRANCH"]


def depends_on(tensor, operation) -> bool | None:
    """Whether the symbolic ``tensor`` is computed from an output of ``operation``.

    Walks the graph backwards through each tensor's ``_keras_history``. Returns None where the
    graph cannot be read (a subclassed model, a tensor without history).
    """
    seen, stack = set(), [tensor]
    readable = False
    while stack:
        t = stack.pop()
        history = getattr(t, "_keras_history", None)
        if history is None:
            continue
        readable = True
        op, node_index, _ = history
        if op is operation:
            return True
        nodes = getattr(op, "_inbound_nodes", None) or []
        if node_index >= len(nodes):
            continue
        for parent in keras.tree.flatten(nodes[node_index].input_tensors):
            if id(parent) not in seen:
                seen.add(id(parent))
                stack.append(parent)
    return False if readable else None


def reaches_output(model: keras.Model, path: list, output_index: int) -> bool | None:
    """Whether output ``output_index`` of ``model`` depends on the last layer of ``path``.

    ``path`` lists the layers from the outer model down: ``[backbone, inner]`` for
    ``"backbone/inner"``. At each level the enclosing model's outputs must depend on the next
    layer. None where it cannot be told (subclassed models, unbuilt graphs).
    """
    try:
        outputs = list(model.outputs)
    except (AttributeError, ValueError, TypeError):
        return None
    if output_index >= len(outputs):
        return None
    targets = [outputs[output_index]]
    for layer in path:
        answers = [depends_on(t, layer) for t in targets]
        if any(a is True for a in answers):
            if isinstance(layer, keras.Model) and layer is not path[-1]:
                try:
                    targets = list(layer.outputs)
                except (AttributeError, ValueError, TypeError):
                    return None
            continue
        return None if any(a is None for a in answers) else False
    return True


OFF_BRANCH = "no gradient flows from that output to it, so every gradient-based map would be zero"


def check_reaches(model: keras.Model, info, output_index: int, why: str | None = OFF_BRANCH, note=None) -> None:
    """Refuse a layer the explained output does not depend on, saying ``why`` (the method's ``off_branch``);
    where ``why`` is None (a method that does not need it), warn ``note`` (its ``off_branch_note``) if given.

    ``info``: the layer's :class:`~keras_gradcam.core.layers.LayerInfo` (its ``path``, ``layer`` and ``sources``).
    """
    chain, current = [], model
    try:
        for name in info.path.split("/")[:-1]:
            if not isinstance(current, keras.Model):
                break  # inside a subclassed layer: not graph nodes
            current = current.get_layer(name)
            chain.append(current)
    except (ValueError, AttributeError):
        return
    # a layer inside a subclassed layer feeds the output if that layer (the graph node) does
    links = chain if info.sources is not None else chain + [info.layer]
    if (why is not None or note is not None) and reaches_output(model, links, output_index) is False:
        names = list(getattr(model, "output_names", None) or [])
        out = names[output_index] if output_index < len(names) else output_index
        where = f"layer {info.path!r} does not feed the explained output {out!r} of model {model.name!r} (it lies on another branch)"
        if why is None:
            warn_user(f"{where}: {note}", UserWarning)
            return
        raise ValueError(
            f"{where}: {why}. Pick a layer on the path to that output, or explain another output with "
            "output=<index or name>."
        )
