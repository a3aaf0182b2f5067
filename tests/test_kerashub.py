"""KerasHub models: ViT, DeiT, DINOv2, Swin, MiT/SegFormer, ResNet and EfficientNet from tiny configs.

Every model is built from a config with random weights (never a preset: nothing is downloaded),
on 32x32 images with two transformer layers of 16 channels, so the whole file runs in well under
a minute. The transformer blocks of these backbones live inside one subclassed layer (ViT's
``vit_encoder``), not in the functional graph; keras-gradcam lists them with paths such as
``vit_backbone/vit_encoder/transformer_block_2/ln_1`` and records them while tracing.
"""

from __future__ import annotations

import pytest

keras_hub = pytest.importorskip("keras_hub", reason="KerasHub is the optional extra keras-gradcam[hub]")

import warnings  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_gradcam as kg  # noqa: E402
from keras_gradcam.cli import main  # noqa: E402
from keras_gradcam.core.layers import list_layers, resolve_layer  # noqa: E402

M = keras_hub.models
SIZE = 32
IMAGES = np.random.default_rng(0).random((2, SIZE, SIZE, 3)).astype("float32")


def vit(pooling="token"):
    keras.utils.set_random_seed(1)
    backbone = M.ViTBackbone(
        image_shape=(SIZE, SIZE, 3), patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, name="vit_backbone"
    )
    return M.ViTImageClassifier(backbone=backbone, num_classes=3, pooling=pooling)


def deit():
    keras.utils.set_random_seed(2)
    backbone = M.DeiTBackbone(
        image_shape=(SIZE, SIZE, 3), patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32,
        name="deit_backbone",
    )
    return M.DeiTImageClassifier(backbone=backbone, num_classes=3)


def dinov2():
    """DINOv2 with 4 register tokens (1 + 4 prefix tokens) under a class-token head (KerasHub has no DINOv2 task)."""
    keras.utils.set_random_seed(3)
    backbone = M.DINOV2Backbone(
        patch_size=8, num_layers=2, hidden_dim=16, num_heads=2, intermediate_dim=32, num_register_tokens=4,
        image_shape=(SIZE, SIZE, 3), position_embedding_shape=(SIZE, SIZE, 3), name="dinov2_backbone",
    )
    images = keras.Input((SIZE, SIZE, 3))
    tokens = backbone({"images": images})
    return keras.Model(images, keras.layers.Dense(3, name="logits")(tokens[:, 0]))


def swin():
    keras.utils.set_random_seed(4)
    backbone = M.SwinTransformerBackbone(
        image_shape=(SIZE, SIZE, 3), embed_dim=16, depths=(2, 2), num_heads=(2, 2), window_size=4, patch_size=4,
        drop_path=0.0, name="swin_backbone",
    )
    return M.SwinTransformerImageClassifier(backbone=backbone, num_classes=3)


def mit():
    keras.utils.set_random_seed(5)
    backbone = M.MiTBackbone(
        layerwise_depths=[1, 1], num_layers=2, layerwise_num_heads=[1, 2], layerwise_sr_ratios=[2, 1],
        max_drop_path_rate=0.0, layerwise_patch_sizes=[7, 3], layerwise_strides=[4, 2], image_shape=(SIZE, SIZE, 3),
        hidden_dims=[8, 16], name="mit_backbone",
    )
    return M.MiTImageClassifier(backbone=backbone, num_classes=3)


def resnet():
    keras.utils.set_random_seed(6)
    backbone = M.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64], stackwise_num_blocks=[1],
        stackwise_num_strides=[1], block_type="basic_block", image_shape=(SIZE, SIZE, 3), name="resnet_backbone",
    )
    return M.ResNetImageClassifier(backbone=backbone, num_classes=3)


def efficientnet():
    keras.utils.set_random_seed(7)
    backbone = M.EfficientNetBackbone(
        width_coefficient=0.1, depth_coefficient=0.1, stackwise_kernel_sizes=[3, 3], stackwise_num_repeats=[1, 1],
        stackwise_input_filters=[8, 8], stackwise_output_filters=[8, 16], stackwise_expansion_ratios=[1, 2],
        stackwise_squeeze_and_excite_ratios=[0.25, 0.25], stackwise_strides=[1, 2], stackwise_block_types=["v1", "v1"],
        image_shape=(SIZE, SIZE, 3), include_stem_padding=True, name="efficientnet_backbone",
    )
    return M.EfficientNetImageClassifier(backbone=backbone, num_classes=3)


# family: (builder, the default layer, its grid and prefix tokens (None: a rank-4 map), a nested path to try)
FAMILIES = {
    # class-token heads: the input of the last attention (the last block's first norm)
    "vit": (vit, "vit_backbone/vit_encoder/transformer_block_2/ln_1", ((4, 4), 1), "vit_backbone/vit_encoder/transformer_block_1"),
    "deit": (deit, "deit_backbone/deit_encoder/transformer_block_2/ln_1", ((4, 4), 2), "deit_backbone/deit_encoder/transformer_block_1/ln_2"),
    "dinov2": (dinov2, "dinov2_backbone/dinov2_backbone_encoder/layers_1/norm1", ((4, 4), 5), "dinov2_backbone/dinov2_backbone_encoder/layers_0"),
    # Swin (its head averages the last stage's tokens): the input of the last stage, its last token mixing
    "swin": (swin, "swin_backbone/stage_0", ((4, 4), 0), "swin_backbone/norm"),
    "mit": (mit, "mit_backbone/output_level_1", None, "mit_backbone/hierarchical_encoder_1_0/mix_ffn_1"),
    # CNNs (functional backbones): the last feature map before the pooling
    "resnet": (resnet, "resnet_backbone/stack0_block0_out", None, "resnet_backbone/stack0_block0_1_conv"),
    "efficientnet": (efficientnet, "efficientnet_backbone/top_activation", None, "efficientnet_backbone/block2a_project_bn"),
}


# the KerasHub class each family needs (older KerasHub releases lack some: their tests are skipped)
NEEDS = {"vit": "ViTImageClassifier", "deit": "DeiTImageClassifier", "dinov2": "DINOV2Backbone",
         "swin": "SwinTransformerImageClassifier", "mit": "MiTImageClassifier", "resnet": "ResNetImageClassifier",
         "efficientnet": "EfficientNetImageClassifier"}


@pytest.fixture(scope="module")
def models():
    cache = {}

    def get(name):
        if not hasattr(M, NEEDS[name]):
            pytest.skip(f"keras_hub {keras_hub.__version__} has no {NEEDS[name]}")
        if name not in cache:
            cache[name] = FAMILIES[name][0]()
        return cache[name]

    return get


def all_layers(model):
    return [model, *model._flatten_layers(include_self=False, recursive=True)]


def snapshot(model):
    return {
        "weights": [np.array(w) for w in model.get_weights()],
        "config": keras.utils.serialize_keras_object(model),
        "dict_keys": [sorted(layer.__dict__) for layer in all_layers(model)],
        "output": np.asarray(model(IMAGES, training=False)),
    }


def assert_unchanged(model, before):
    after = snapshot(model)
    for a, b in zip(before["weights"], after["weights"]):
        np.testing.assert_array_equal(a, b)
    assert after["config"] == before["config"]
    for layer, a, b in zip(all_layers(model), before["dict_keys"], after["dict_keys"]):
        assert a == b, f"{layer.name}: attributes added {sorted(set(b) - set(a))}, removed {sorted(set(a) - set(b))}"
        assert "call" not in layer.__dict__, f"{layer.name} keeps a patched call"
    np.testing.assert_array_equal(after["output"], before["output"])


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_default_layer_maps_and_nested_path(family, models):
    model = models(family)
    _, default, tokens, nested = FAMILIES[family]
    before = snapshot(model)
    info = resolve_layer(model, None)
    assert info.path == default
    assert (None if not info.tokens else (info.grid, info.prefix_tokens)) == tokens
    # Grad-CAM at the default layer, Grad-CAM++ at a nested path (two traces: the file stays fast)
    for method, layer in (("gradcam", None), ("gradcam++", nested)):
        exp = kg.explain(model, IMAGES, method=method, layer=layer)
        assert exp.layer == (layer or default)
        assert exp.heatmaps.shape == (2, SIZE, SIZE)
        assert np.isfinite(exp.heatmaps).all() and np.isfinite(exp.layer_heatmaps).all()
        assert exp.layer_heatmaps.max() > 0, f"{method}: all-zero maps at {exp.layer}"
    with pytest.raises(ValueError, match="is not in model"):
        kg.explain(model, IMAGES, layer=default + "_nope")
    assert_unchanged(model, before)


def test_vit_unchanged_after_an_error_past_the_trace(models):
    model = models("vit")
    before = snapshot(model)
    with pytest.raises(ValueError, match="7"):
        kg.explain(model, IMAGES, targets=7)  # class 7 of 3: found once the function is traced
    assert_unchanged(model, before)


def test_a_grid_that_contradicts_the_vits_own_grid_is_refused_naming_both(models):
    """17 tokens = 1 class token + 4x4 patches: grid=(3, 3) would read tokens 9-17 as a 3x3 map (issue 25)."""
    model = models("vit")
    layer = FAMILIES["vit"][1]
    for options in ({"grid": (3, 3)}, {"grid": (3, 3), "prefix_tokens": 8}, {"prefix_tokens": 8}, {"grid": (2, 8)}):
        with pytest.raises(ValueError) as info:
            kg.GradCAM(model, layer=layer, **options)
        text = str(info.value)
        assert "contradicts" in text and "grid=(4, 4)" in text and "prefix_tokens=1" in text, (options, text)
        assert f"grid={options.get('grid', (3, 3))}" in text, (options, text)
    # the graph's own grid, given or not, is accepted and gives the same maps
    same = kg.explain(model, IMAGES, method="gradcam", layer=layer, grid=(4, 4), prefix_tokens=1)
    np.testing.assert_allclose(same.layer_heatmaps, kg.explain(model, IMAGES, method="gradcam", layer=layer).layer_heatmaps)


def test_list_layers_shows_the_blocks_inside_the_encoder_with_their_grid(models):
    """The transformer blocks are tracked sub-layers of ``vit_encoder``, not graph nodes: listed with a path and shape."""
    infos = {i.path: i for i in list_layers(models("vit"))}
    for block in ("transformer_block_1", "transformer_block_2"):
        for inner in ("", "/ln_1", "/mha", "/ln_2", "/mlp"):
            info = infos[f"vit_backbone/vit_encoder/{block}{inner}"]
            assert info.shape == (None, 17, 16) and info.grid == (4, 4) and info.prefix_tokens == 1
    assert infos["vit_backbone/vit_encoder/ln"].standard_shape == (None, 4, 4, 16)
    assert infos["vit_backbone/vit_patching_and_embedding/patch_embedding"].shape == (None, 4, 4, 16)
    assert infos["vit_backbone/vit_encoder/transformer_block_1/mlp/dense_1"].shape == (None, 17, 32)
    assert not any("/mha/" in p for p in infos)  # the inside of Keras' own attention is not opened
    # the shared dropout inside each MLP runs twice: listed, but not the default nor accepted
    shared = infos["vit_backbone/vit_encoder/transformer_block_1/mlp/dropout"]
    assert shared.calls == 2
    with pytest.raises(ValueError, match="shared: it runs 2 times"):
        resolve_layer(models("vit"), shared.path)
    with pytest.raises(ValueError, match="ambiguous"):
        resolve_layer(models("vit"), "ln_1")


def test_swin_windowed_attention_is_not_listed_and_stage_grids_halve(models):
    """Swin's first stage attends within 4 windows of a 8x8 grid, folded into the batch axis: no map there."""
    infos = {i.path: i for i in list_layers(models("swin"), spatial_only=False)}
    assert infos["swin_backbone/stage_0/blocks_0/attn"].shape is None  # (batch * windows, ...)
    assert infos["swin_backbone/stage_0/blocks_0/mlp"].grid == (8, 8)
    assert infos["swin_backbone/stage_1/blocks_0/mlp"].grid == (4, 4)  # after the patch merging


def test_mit_stage_grids_come_from_its_strides(models):
    """MiT's token layers: 32 / 4 = 8x8 patches in stage 0, 32 / (4 * 2) = 4x4 in stage 1, no prefix tokens."""
    infos = {i.path: i for i in list_layers(models("mit"))}
    assert (infos["mit_backbone/patch_and_embed_0"].grid, infos["mit_backbone/patch_and_embed_0"].prefix_tokens) == ((8, 8), 0)
    # the MLP's first Dense inside stage 0's first block (its name is Keras' auto-numbered "dense_N")
    dense = [p for p in infos if p.startswith("mit_backbone/hierarchical_encoder_0_0/mix_ffn/dense")]
    assert dense and all(infos[p].grid == (8, 8) for p in dense)
    assert infos["mit_backbone/hierarchical_encoder_1_0"].grid == (4, 4)
    assert infos["mit_backbone/output_level_1"].shape == (None, 4, 4, 16) and not infos["mit_backbone/output_level_1"].tokens


def vit_gradcam_oracle(model, layer_fn, block_rest):
    """Grad-CAM on the last block's first norm, by hand: the encoder run layer by layer outside keras-gradcam."""
    backbone = model.backbone
    encoder = backbone.get_layer("vit_encoder")
    x = encoder.encoder_layers[0](encoder.dropout(backbone.get_layer("vit_patching_and_embedding")(IMAGES)))
    with tf.GradientTape() as tape:
        a = layer_fn(encoder.encoder_layers[1], x)
        tape.watch(a)
        out = encoder.layer_norm(block_rest(encoder.encoder_layers[1], a, x))
        logits = model.output_dense(out[:, 0])
        top = np.argmax(logits.numpy(), axis=1)
        score = tf.reduce_sum(tf.gather(logits, top, axis=1, batch_dims=1))
    g = tape.gradient(score, a).numpy()[:, 1:].reshape(2, 4, 4, 16)
    acts = a.numpy()[:, 1:].reshape(2, 4, 4, 16)
    return np.maximum((acts * g.mean(axis=(1, 2), keepdims=True)).sum(-1), 0), top


def test_vit_default_map_matches_a_hand_computed_gradcam(models):
    model = models("vit")

    def norm1(block, x):
        return block.layer_norm_1(x)

    def rest(block, a, x):  # ViTEncoderBlock.call after its first norm
        h = block.dropout(block.mha(a, a)) + x
        return h + block.mlp(block.layer_norm_2(h))

    expected, top = vit_gradcam_oracle(model, norm1, rest)
    assert expected.max() > 0
    exp = kg.explain(model, IMAGES, method="gradcam")
    np.testing.assert_array_equal(exp.targets, top)
    np.testing.assert_allclose(exp.layer_heatmaps, expected, rtol=1e-4, atol=1e-6)


def test_class_token_head_gives_patch_tokens_no_gradient_after_the_last_attention(models):
    """Why the default is the last attention's input: after it, every layer is per token."""
    with pytest.warns(RuntimeWarning):
        exp = kg.explain(models("vit"), IMAGES, method="gradcam", layer="vit_backbone/vit_encoder/transformer_block_2/ln_2")
    assert (exp.layer_heatmaps == 0).all()


def test_mean_pooled_vit_defaults_to_the_last_attention_input_and_its_final_norm_has_gradients():
    model = vit(pooling="gap")
    assert resolve_layer(model, None).path == "vit_backbone/vit_encoder/transformer_block_2/ln_1"
    exp = kg.explain(model, IMAGES, method="gradcam", layer="vit_backbone/vit_encoder/ln")
    assert (exp.layer_heatmaps.reshape(2, -1).max(axis=1) > 0).all()


def test_image_classifier_with_preprocessor_is_explained_on_raw_images():
    """The preprocessor (crop to the aspect ratio, resize to 32x32, scale) runs outside the gradient; maps at the raw size."""
    model = vit()
    converter = keras_hub.layers.ViTImageConverter(image_size=(SIZE, SIZE), scale=1 / 255.0)
    model.preprocessor = M.ViTImageClassifierPreprocessor(image_converter=converter)
    raw = np.random.default_rng(1).uniform(0, 255, (2, 48, 40, 3)).astype("float32")
    before = snapshot(model)
    pre_config = keras.utils.serialize_keras_object(model.preprocessor)
    exp = kg.explain(model, raw, method="gradcam")
    assert exp.heatmaps.shape == (2, 48, 40) and np.isfinite(exp.heatmaps).all()
    assert exp.heatmaps.min() >= 0 and np.isclose(exp.heatmaps.max(axis=(1, 2)), 1).all()
    # the same graph without the preprocessor, on images preprocessed by hand: the same layer maps
    by_hand = keras.ops.convert_to_numpy(keras.ops.image.resize(raw, (SIZE, SIZE), crop_to_aspect_ratio=True)) / 255.0
    bare = keras.Model(model.inputs, model.outputs)
    same = kg.explain(bare, by_hand.astype("float32"), method="gradcam")
    assert same.layer == exp.layer
    np.testing.assert_allclose(exp.layer_heatmaps, same.layer_heatmaps, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(exp.targets, same.targets)
    cam = kg.GradCAM(model)
    assert cam(raw[0]).heatmaps.shape == (1, 48, 40)  # a single raw image
    with pytest.raises(ValueError, match="raw images"):
        cam(raw[None])  # a batch of batches
    assert keras.utils.serialize_keras_object(model.preprocessor) == pre_config
    assert_unchanged(model, before)


def test_two_threads_with_raw_images_of_other_sizes_each_get_maps_at_their_own_size():
    """The raw size is per call: one explainer shared by two threads never returns maps at the other thread's size."""
    import threading

    model = vit()
    converter = keras_hub.layers.ViTImageConverter(image_size=(SIZE, SIZE), scale=1 / 255.0)
    model.preprocessor = M.ViTImageClassifierPreprocessor(image_converter=converter)
    cam = kg.GradCAM(model)
    rng = np.random.default_rng(3)
    sizes = [(48, 40), (40, 56)]
    raws = [rng.uniform(0, 255, (2, *size, 3)).astype("float32") for size in sizes]
    expected = [cam(raw).heatmaps for raw in raws]  # one at a time
    errors, shapes = [], {0: [], 1: []}

    def work(i):
        try:
            for _ in range(4):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    got = cam(raws[i]).heatmaps
                shapes[i].append(got.shape)
                np.testing.assert_allclose(got, expected[i], atol=1e-5)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert shapes == {0: [(2, 48, 40)] * 4, 1: [(2, 40, 56)] * 4}


def test_cli_layers_lists_the_encoder_blocks_with_their_grid(models, tmp_path, capsys):
    """A saved KerasHub model: the CLI imports KerasHub to load it and shows each token layer's grid."""
    path = tmp_path / "vit.keras"
    models("vit").save(path)
    assert main(["layers", str(path)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert [c.strip() for c in lines[1].strip("|").split("|")] == ["path", "type", "output shape", "spatial", "token grid"]
    rows = {cells[0].lstrip("* "): cells for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines[3:])}
    assert rows["vit_backbone/vit_encoder/transformer_block_2/mha"][1:] == ["MultiHeadAttention", "(None, 17, 16)", "yes", "4x4 +1"]
    assert rows["vit_backbone/vit_patching_and_embedding/patch_embedding"][-1] == "-"
    assert rows["vit_backbone/vit_encoder/transformer_block_2/ln_1"][0].startswith("* ")  # the default


def test_hand_arranged_vit_map_peaks_on_the_bright_patch():
    """A mean-pooled ViT set by hand so that only one patch carries evidence; the map is worked out below.

    Class token and position embeddings 0; the patch embedding's channel 0 sums the patch's
    pixels and channel 1 is minus that sum; every attention and MLP weight 0, so each block gives
    back its input. After the final LayerNorm a bright patch (sum s) is (sqrt 8, -sqrt 8, 0, ...)
    (16 channels, two of them +-s) and every other token 0. Class 1's logit is channel 0 minus
    channel 1, averaged over the 17 tokens, so its gradient is (1, -1, 0, ...) / 17 at every token:
    Grad-CAM at the final norm is (2 sqrt 8) / 17 on the bright patch and 0 elsewhere.
    """
    model = vit(pooling="gap")
    backbone = model.backbone
    embedding = backbone.get_layer("vit_patching_and_embedding")
    embedding.class_token.assign(np.zeros(embedding.class_token.shape, "float32"))
    embedding.position_embedding.embeddings.assign(np.zeros(embedding.position_embedding.embeddings.shape, "float32"))
    kernel = np.zeros(embedding.patch_embedding.kernel.shape, "float32")
    kernel[..., 0], kernel[..., 1] = 1.0, -1.0
    embedding.patch_embedding.kernel.assign(kernel)
    embedding.patch_embedding.bias.assign(np.zeros(embedding.patch_embedding.bias.shape, "float32"))
    for block in backbone.get_layer("vit_encoder").encoder_layers:
        for w in block.mha.weights + block.mlp.weights:
            w.assign(np.zeros(w.shape, "float32"))
    head = np.zeros(model.output_dense.kernel.shape, "float32")
    head[0, 1], head[1, 1] = 1.0, -1.0
    model.output_dense.kernel.assign(head)
    model.output_dense.bias.assign(np.zeros(model.output_dense.bias.shape, "float32"))
    image = np.zeros((1, SIZE, SIZE, 3), "float32")
    image[0, 16:24, 8:16] = 1.0  # the patch at grid row 2, column 1
    exp = kg.explain(model, image, method="gradcam", targets=1, layer="vit_backbone/vit_encoder/ln")
    expected = np.zeros((1, 4, 4), "float32")
    expected[0, 2, 1] = 2 * np.sqrt(8.0) / 17
    np.testing.assert_allclose(exp.layer_heatmaps, expected, rtol=1e-4, atol=1e-6)
    row, col = np.unravel_index(np.argmax(exp.heatmaps[0]), (SIZE, SIZE))
    assert 16 <= row < 24 and 8 <= col < 16


def test_callback_draws_raw_probes_of_a_task_with_preprocessor(tmp_path):
    """The callback takes raw probes of any size for a task with a preprocessor, like kg.explain, and overlays on them."""
    model = vit()
    converter = keras_hub.layers.ViTImageConverter(image_size=(SIZE, SIZE), scale=1 / 255.0)
    model.preprocessor = M.ViTImageClassifierPreprocessor(image_converter=converter)
    raw = np.random.default_rng(2).uniform(0, 255, (2, 48, 40, 3)).astype("float32")
    cb = kg.GradCAMCallback(raw / 255.0, tmp_path, method="gradcam")
    cb.set_model(model)
    cb.set_params({"epochs": 1, "verbose": 0})
    cb.on_train_begin()
    cb.on_epoch_end(0)  # explains the probes and draws the maps over them: sizes must agree
    cb.on_train_end()
    assert cb.history["epoch"] == [0]
    assert cb.explainer(raw).heatmaps.shape == (2, 48, 40)


def test_bare_dinov2_backbone_takes_one_array_for_its_keyed_input():
    """DINOV2Backbone's input is {"images": ...}: one array is passed under that key (no Keras structure warning)."""
    keras.utils.set_random_seed(3)
    backbone = M.DINOV2Backbone(
        patch_size=8, num_layers=1, hidden_dim=16, num_heads=2, intermediate_dim=32, image_shape=(SIZE, SIZE, 3),
        position_embedding_shape=(SIZE, SIZE, 3),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        exp = kg.explain(backbone, IMAGES, method="gradcam", targets=lambda out: out[:, 0, 0])
    assert exp.heatmaps.shape == (2, SIZE, SIZE) and np.isfinite(exp.heatmaps).all()
    assert exp.layer.endswith("layers_0/norm1")  # no head to read: the last attention's input
