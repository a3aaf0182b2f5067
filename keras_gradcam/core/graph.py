"""Questions about a functional Keras graph, answered from its symbolic tensors (nothing is run)."""

from __future__ import annotations

import keras

__all__ = ["depends_on", "reaches_output"]


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
