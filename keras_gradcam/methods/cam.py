"""CAM (Zhou et al., CVPR 2016): the class activation map read from a global-average-pooling head."""

from __future__ import annotations

import keras
from keras import ops

from ..core.binary import two_classes
from ..core.capture import output_link
from ..core.engine import BaseCAM
from ..core.layers import LayerInfo, LayerSpec, passes_through
from ..core.postprocess import Tensor, weighted_sum
from ..core.targets import batch_of

__all__ = ["CAM", "cam_map", "find_head"]

POOLS = (keras.layers.GlobalAveragePooling1D, keras.layers.GlobalAveragePooling2D, keras.layers.GlobalAveragePooling3D)
DENSE_ACTIVATIONS = ("linear", "softmax", "sigmoid")  # CAM reads the weights: a link after them is fine


def cam_map(acts: Tensor, kernel: Tensor, targets: Tensor) -> Tensor:
    r"""The class activation map :math:`M^c = \sum_k W_{kc} A^k`, one class per sample.

    Parameters
    ----------
    acts : Tensor of shape (B, *spatial, K)
        The activations of the layer that the global average pooling reads, channels last.
    kernel : Tensor of shape (K, C)
        The Dense head's kernel (the bias is not part of the map).
    targets : Tensor of shape (B,), int32
        The class explained for each sample.

    Returns
    -------
    Tensor of shape (B, *spatial)
        The signed map (no ReLU).

    Examples
    --------
    >>> import numpy as np
    >>> acts = np.array([[[[1.0, 2.0]], [[3.0, 0.0]]]], "float32")     # (1, 2, 1, 2): a 2x1 grid, 2 channels
    >>> kernel = np.array([[1.0, 0.0], [-1.0, 2.0]], "float32")         # (K=2, C=2)
    >>> ops.convert_to_numpy(cam_map(acts, kernel, np.array([0]))).tolist()  # 1*A^0 - 1*A^1
    [[[-1.0], [3.0]]]
    """
    weights = ops.take(ops.transpose(ops.cast(kernel, "float32")), targets, axis=0)  # (B, K): column c of W per sample
    return weighted_sum(ops.cast(acts, "float32"), weights)


def _describe(ops: list) -> str:
    return " -> ".join(f"{type(op).__name__} {op.name!r}" for op in ops) or "nothing"


def _after(model: keras.Model, layer: keras.Operation, output_index: int) -> tuple[list, bool | None]:
    """The operations between ``layer`` and output ``output_index``, in order, and whether the walk got there.

    Walks back from the output through single-input operations, into nested models and out of
    them again. Stops (``False``) at an operation with several inputs; ``None`` where the graph
    cannot be read (a subclassed model).
    """
    outputs = getattr(model, "outputs", None)
    if not outputs or output_index >= len(outputs):
        return [], None
    tensor, ops, outer = outputs[output_index], [], []
    while True:
        history = getattr(tensor, "_keras_history", None)
        if history is None:
            return ops[::-1], None if not ops else False
        op, node_index, tensor_index = history
        if op is layer:
            return ops[::-1], True
        if isinstance(op, keras.Model) and getattr(op, "outputs", None):
            outer.append((op, node_index))  # into the nested model, from its output
            tensor = op.outputs[tensor_index]
            continue
        if isinstance(op, keras.layers.InputLayer):
            if not outer:
                return ops[::-1], False
            op, node_index = outer.pop()  # out of the nested model, to what fed it
        else:
            ops.append(op)
        inputs = keras.tree.flatten(op._inbound_nodes[node_index].input_tensors)
        if len(inputs) != 1:
            return ops[::-1], False
        tensor = inputs[0]


def _match(ops: list) -> keras.layers.Dense | None:
    """The Dense of ``[pass-through]* GAP [pass-through | Flatten]* Dense [link | pass-through]*``, else None."""
    i, n = 0, len(ops)
    while i < n and passes_through(ops[i]):
        i += 1
    if i == n or not isinstance(ops[i], POOLS):
        return None
    i += 1
    while i < n and (passes_through(ops[i]) or isinstance(ops[i], keras.layers.Flatten)):
        i += 1
    if i == n or type(ops[i]) is not keras.layers.Dense:
        return None
    dense = ops[i]
    if getattr(dense.activation, "__name__", "") not in DENSE_ACTIVATIONS:
        return None
    if all(passes_through(op) or output_link(op) is not None for op in ops[i + 1 :]):
        return dense
    return None


def find_head(model: keras.Model, info: LayerInfo, output_index: int) -> keras.layers.Dense:
    """The Dense layer of the global-average-pooling head that follows ``info``'s layer.

    Parameters
    ----------
    model : keras.Model
        A Functional or Sequential model (nested models are looked into).
    info : LayerInfo
        The explained layer.
    output_index : int
        The explained output.

    Returns
    -------
    keras.layers.Dense
        The head whose kernel weighs the pooled channels of the layer.

    Raises
    ------
    ValueError
        The layer is not followed by exactly global average pooling and a Dense layer (layers that
        pass their input through at inference, such as Dropout, a Flatten after the pooling, and a
        softmax or sigmoid after the Dense are allowed); the message names the layers found after
        it and, where there is one, the layer CAM could explain instead.
    """
    ops, reached = _after(model, info.layer, output_index)
    if reached is None:
        raise ValueError(
            f"CAM reads the head after layer {info.path!r} from the model's graph, but model {model.name!r} "
            "has no readable graph (a subclassed model?). Use method='gradcam', which equals CAM on a "
            "global-average-pooling head and needs no graph."
        )
    dense = _match(ops) if reached else None
    if dense is not None:
        return dense
    if reached:
        found = f"after it the model has {_describe(ops)}"
    else:
        found = f"walking back from the output, the path stops at an operation with several inputs: {_describe(ops)}"
    hint = ""
    pools = [i for i, op in enumerate(ops) if isinstance(op, POOLS)]
    if reached and pools and pools[0] > 0 and not passes_through(ops[pools[0] - 1]):
        hint = f" CAM can explain the pooling's input instead: layer={ops[pools[0] - 1].name!r}."
    raise ValueError(
        f"CAM needs layer {info.path!r} to be followed by global average pooling and a Dense layer "
        "(Dropout-like layers, a Flatten after the pooling and a softmax/sigmoid after the Dense are fine); "
        f"{found}.{hint} For any other head use method='gradcam' (which equals CAM on that architecture)."
    )


class CAM(BaseCAM):
    r"""CAM: the layer's channels weighted by the Dense head's weights for the class.

    Intuition: on a network that ends in global average pooling and one Dense layer, the class
    score is the spatial mean of one map, :math:`\sum_k W_{kc} A^k`, plus the bias; that map
    shows where the score comes from. No gradient is computed: the weights are read from the
    head, at run time (a later change of the weights, e.g. by training, is seen).

    Parameters
    ----------
    model, layer, output, score, batch_size
        See :class:`~keras_gradcam.core.engine.BaseCAM`. The layer must be followed by global
        average pooling and a Dense layer (see Raises). ``score`` does not change the map (the
        weights are the same for logits and probabilities); ``counterfactual`` is not supported
        (no gradients).
    relu : bool, default=True
        Keep the positive part of the map before upsampling, as the other gradient- and
        score-based CAMs here do (Eigen-CAM and Eigen-Grad-CAM keep the signed map). The paper
        shows the signed map, and so does torch-cam's ``CAM`` (checked on torchcam 0.5.0: it
        applies no ReLU, although its docstring writes one; only its gradient- and score-based
        CAMs do): ``relu=False`` gives that map. Heatmaps are min-max normalised either way.

    Raises
    ------
    ValueError
        The layer is not followed by global average pooling (1-D, 2-D or 3-D) and a Dense layer
        whose activation is linear, softmax or sigmoid (Dropout-like layers on the way, a Flatten
        after the pooling and a softmax/sigmoid after the Dense are fine): the message names the
        layers found after it. A callable target (CAM reads one class's column of the kernel: pass
        class indices); ``counterfactual=True``; a multi-output model without ``output=``.

    Notes
    -----
    With :math:`S^c = \sum_k W_{kc}\, \frac{1}{Z}\sum_{ij} A^k_{ij} + b_c` (``Z`` positions):

    .. math:: M^c_{ij} = \sum_k W_{kc} A^k_{ij}, \qquad L^c = \mathrm{ReLU}(M^c)

    so that :math:`\frac{1}{Z}\sum_{ij} M^c_{ij} = S^c - b_c`. On this architecture
    :math:`\partial S^c / \partial A^k_{ij} = W_{kc}/Z`, hence Grad-CAM's pre-ReLU map is
    :math:`M^c / Z` and, after normalisation, CAM and Grad-CAM are the same map (Grad-CAM paper,
    section 3). A one-unit sigmoid head is explained as two classes (class 1 with :math:`W`,
    class 0 with :math:`-W`), as elsewhere in the library. One forward pass, no backward pass.

    References
    ----------
    B. Zhou, A. Khosla, A. Lapedriza, A. Oliva and A. Torralba, "Learning Deep Features for
    Discriminative Localization", CVPR 2016, Eq. 2.

    Examples
    --------
    >>> cam = kg.CAM(model, layer="conv2d_1")         # doctest: +SKIP
    >>> exp = cam(images, targets=[3, 7])             # doctest: +SKIP
    """

    name = "cam"
    display_name = "CAM"
    gradients = False
    off_branch = "CAM weighs its channels by the weights of that output's Dense head, which never reads them"

    def __init__(self, model, layer: LayerSpec = None, **kwargs):
        self._dense: keras.layers.Dense | None = None
        super().__init__(model, layer, **kwargs)

    def _setup(self, sample=None) -> None:
        super()._setup(sample)
        index = self._capture.output_index
        if index is None:
            names = list(getattr(self.model, "output_names", None) or [])
            raise ValueError(
                f"the model has several outputs {names}; CAM reads the head of one of them: say which "
                "with output=<index or name>."
            )
        self._dense = find_head(self.model, self.layers[0], index)

    def layer_map(self, x, targets, chunk: int):
        if not batch_of(targets).names_classes:
            raise ValueError(
                "CAM reads one class's column of the Dense head's kernel, so targets must be class indices "
                f"(None, an int or one int per sample); got the callable {batch_of(targets).target.describe()}. For a ClassTarget pass "
                "its index; for any other score use method='gradcam'."
            )
        cap = self._capture(x, targets, gradients=False)
        kernel = ops.cast(ops.convert_to_tensor(self._dense.kernel), "float32")  # read when run, not when traced
        if self._capture.link == "sigmoid":  # a binary unit: classes 0 and 1
            kernel = two_classes(kernel)
        return cam_map(cap.activations[0], kernel, cap.targets), cap
