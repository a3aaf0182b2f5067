"""Which layer ``layer=None`` explains in a vision transformer, on the example's small ViT (untrained, tiny).

The rule, measured in benchmarks/vit_layers.py and explained in docs/transformers.md ("Which
layer"): after the last attention, every op acts on each token alone (LayerNorm, MLP, residual
add), so a head that reads the class token gives the patch tokens an exactly zero gradient at
every layer from the last attention's output on. The last layer whose patch tokens still get a
gradient is the last attention's input, the last block's ``norm1``. With a head that averages the
patch tokens, later layers have gradients too, but did not localise better: the rule is the same.
"""

from __future__ import annotations

import importlib.util
import pathlib
import warnings

import keras
import numpy as np
import pytest

import keras_gradcam as kg
from keras_gradcam.core.layers import resolve_layer

_EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "vision_transformer.py"
_spec = importlib.util.spec_from_file_location("example_vision_transformer_layers", _EXAMPLE)
vit = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(vit)


def tiny(head: str) -> keras.Model:
    """16x16 images, 4x4 patches (a 4x4 grid), a class token, two blocks of width 8."""
    keras.utils.set_random_seed(3)
    return vit.build_vit(image_size=16, patch=4, dim=8, depth=2, heads=2, head=head)


def pictures(n: int = 2) -> np.ndarray:
    return np.random.default_rng(0).random((n, 16, 16, 3)).astype("float32")


@pytest.mark.parametrize("head", ["cls", "mean"])
def test_layer_none_explains_the_last_attentions_input(head):
    # a mean-pooled head too: there the later layers have gradients, but localised no better (the benchmark)
    info = resolve_layer(tiny(head), None)
    assert info.path == "block2_norm1"
    assert info.grid == (4, 4) and info.prefix_tokens == 1  # 17 tokens: a class token and 4x4 patches


@pytest.mark.parametrize("layer", ["block2_add1", "block2_out", "final_norm"])
def test_after_the_last_attention_a_class_token_head_gives_the_patches_no_gradient(layer):
    # every op from the last attention's output to the head acts per token, and the head reads token 0
    with pytest.warns(RuntimeWarning, match="gradient at the layer is exactly zero"):
        kg.GradCAM(model := tiny("cls"), layer=layer)(pictures(), targets=0)
    with warnings.catch_warnings(record=True) as caught:  # the default's patch tokens do get a gradient
        warnings.simplefilter("always")
        default = kg.GradCAM(model)(pictures(), targets=0)
    assert default.layer == "block2_norm1"
    assert not [w for w in caught if "exactly zero" in str(w.message)]


def test_the_example_models_layers_have_the_documented_names_and_grids():
    model = tiny("mean")
    infos = {i.path: i for i in kg.list_layers(model) if i.tokens}
    assert {"pos_embed", "block1_norm1", "block2_norm1", "block2_out", "final_norm"} <= set(infos)
    assert infos["final_norm"].grid == (4, 4) and infos["final_norm"].prefix_tokens == 1
    swin = vit.build_swin(image_size=16, patch=2, dim=8, depths=(1, 1), heads=(2, 2), window=4)
    exp = kg.explain(swin, pictures(), method="gradcam")
    assert exp.layer == "final_norm" and exp.layer_heatmaps.shape == (2, 4, 4)  # stages are maps: the CNN rule


def test_keras_hub_swin_stages_are_token_layers_on_their_grids():
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_hub.models.SwinTransformerBackbone(
        image_shape=(32, 32, 3), embed_dim=16, depths=(1, 1), num_heads=(2, 2), window_size=4, patch_size=2)
    head = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling1D()(backbone.output))
    model = keras.Model(backbone.input, head)
    grids = {i.path: (i.grid, i.prefix_tokens) for i in kg.list_layers(model) if i.tokens and "/" not in i.path}  # the top-level layers
    assert grids == {"patch_embedding": ((16, 16), 0), "pos_drop": ((16, 16), 0), "stage_0": ((8, 8), 0),
                     "stage_1": ((8, 8), 0), "norm": ((8, 8), 0)}
    images = np.random.default_rng(0).random((2, 32, 32, 3)).astype("float32")
    exp = kg.explain(model, images, method="gradcam", layer="norm")
    assert exp.layer_heatmaps.shape == (2, 8, 8) and exp.heatmaps.shape == (2, 32, 32)
