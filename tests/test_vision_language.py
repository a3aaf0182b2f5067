"""Image-text and vision-language models: CLIP, SigLIP and PaliGemma from tiny KerasHub configs.

Every model is built from a config with random weights (never a preset: nothing is
downloaded), on 32x32 images cut into 8x8 patches (a 4x4 grid) with 16 channels. Each map is
checked against a Grad-CAM computed here, independently of the library: one eager forward pass
under a ``tf.GradientTape`` that watches the same inner layer's output, the gradient of the
score, its mean over the patch tokens as channel weights, ``sum_c w_c A_c`` on the grid (the
signed map, compared with ``relu=False`` so that no comparison is between two all-zero maps).
"""

from __future__ import annotations

import pytest

keras_hub = pytest.importorskip("keras_hub", reason="KerasHub is the optional extra keras-gradcam[hub]")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_gradcam as kg  # noqa: E402
from keras_gradcam.core.layers import list_layers, resolve_layer  # noqa: E402

M = keras_hub.models
SIZE, VOCAB, TEXT = 32, 40, 6
RNG = np.random.default_rng(0)
IMAGES = RNG.random((3, SIZE, SIZE, 3)).astype("float32")
TOKENS = RNG.integers(1, VOCAB, (3, TEXT)).astype("int32")


def clip():
    keras.utils.set_random_seed(1)
    vision = M.CLIPVisionEncoder(patch_size=8, hidden_dim=16, num_layers=2, num_heads=2, intermediate_dim=32,
                                 image_shape=(SIZE, SIZE, 3), name="vision")
    text = M.CLIPTextEncoder(vocabulary_size=VOCAB, embedding_dim=16, hidden_dim=16, num_layers=1, num_heads=2,
                             intermediate_dim=32, max_sequence_length=TEXT, name="text")
    return M.CLIPBackbone(vision, text, projection_dim=8)


def siglip():
    keras.utils.set_random_seed(2)
    vision = M.SigLIPVisionEncoder(patch_size=8, hidden_dim=16, num_layers=2, num_heads=2, intermediate_dim=32,
                                   image_shape=(SIZE, SIZE, 3), name="vision")
    text = M.SigLIPTextEncoder(vocabulary_size=VOCAB, embedding_dim=16, hidden_dim=16, num_layers=1, num_heads=2,
                               intermediate_dim=32, max_sequence_length=TEXT, name="text")
    return M.SigLIPBackbone(vision, text)


def paligemma():
    keras.utils.set_random_seed(3)
    backbone = M.PaliGemmaBackbone(
        vocabulary_size=VOCAB, image_size=SIZE, num_layers=1, num_query_heads=2, num_key_value_heads=1, hidden_dim=16,
        intermediate_dim=32, head_dim=8, vit_patch_size=8, vit_num_heads=2, vit_hidden_dim=16, vit_num_layers=2,
        vit_intermediate_dim=32,
    )
    return M.PaliGemmaCausalLM(preprocessor=None, backbone=backbone)


def gemma3():
    """Gemma3 with its vision encoder: images (batch, images per prompt, 32, 32, 3), 4x4 patches pooled to 2x2 tokens."""
    keras.utils.set_random_seed(4)
    vision = M.Gemma3VisionEncoder(image_size=SIZE, patch_size=8, num_heads=2, hidden_dim=16, num_layers=2,
                                   intermediate_dim=32, output_dim=16, pool_size=2)
    backbone = M.Gemma3Backbone(vocabulary_size=VOCAB, image_size=SIZE, num_layers=1, num_query_heads=2,
                                num_key_value_heads=1, hidden_dim=16, intermediate_dim=32, head_dim=8, vision_encoder=vision)
    return M.Gemma3CausalLM(preprocessor=None, backbone=backbone)


BUILDERS = {"clip": clip, "siglip": siglip, "paligemma": paligemma, "gemma3": gemma3}


@pytest.fixture(scope="module")
def models():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = BUILDERS[name]()
        return cache[name]

    return get


def find_layer(model, path):
    """The layer object at ``path`` (for the independent reference, which must watch that layer)."""
    return resolve_layer(model, path).layer


def tape_gradcam(model, inputs, layer, score, grid):
    """Grad-CAM on ``layer``'s patch tokens (the last ``rows * cols``), by one eager GradientTape pass.

    ``layer.call`` is wrapped on the instance for this one pass (``object.__setattr__``, past
    Keras' attribute tracking; removed after) so that the tape watches its output.
    """
    seen = []
    original = layer.call

    def watched(*args, **kwargs):
        out = original(*args, **kwargs)
        tape.watch(out)
        seen.append(out)
        return out

    with tf.GradientTape() as tape:
        object.__setattr__(layer, "call", watched)
        try:
            outputs = model(inputs, training=False)
        finally:
            object.__delattr__(layer, "call")
        scores = score(outputs)
        total = tf.reduce_sum(scores)
    assert len(seen) == 1
    acts, grads = seen[0], tape.gradient(total, seen[0])
    cells = grid[0] * grid[1]
    acts, grads = np.asarray(acts)[:, -cells:], np.asarray(grads)[:, -cells:]
    weights = grads.mean(axis=1, keepdims=True)
    cam = (weights * acts).sum(-1)  # signed: compared with relu=False, so that no map is trivially all zero
    assert np.abs(cam).max() > 0
    return cam.reshape((-1,) + tuple(grid)), np.asarray(scores)


def lm_inputs(n=2):
    response = np.zeros((n, TEXT), "int32")
    response[:, 3:] = 1
    return {"images": IMAGES[:n], "token_ids": TOKENS[:n], "padding_mask": np.ones((n, TEXT), "int32"), "response_mask": response}


# -- image-text logits ----------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_image_text_logit_maps_equal_an_independent_tape_gradcam(family, models):
    model = models(family)
    x = {"images": IMAGES[:2], "token_ids": TOKENS[:2]}
    info = resolve_layer(model, None)
    assert info.tokens and info.grid == (4, 4)
    for j in (0, 1):
        target = kg.ClassTarget(j, output="vision_logits")
        exp = kg.explain(model, x, method="gradcam", relu=False, targets=target)
        expected, scores = tape_gradcam(model, x, info.layer, lambda out, j=j: out["vision_logits"][:, j], info.grid)
        np.testing.assert_allclose(exp.scores, scores, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(exp.layer_heatmaps, expected, rtol=1e-4, atol=1e-6)
        assert exp.heatmaps.shape == (2, SIZE, SIZE)


@pytest.mark.parametrize("batch_size", [1, 2, 4])
def test_clip_scores_n_images_against_k_shared_texts_at_any_batch_size(batch_size, models):
    """3 images x 2 texts: vision_logits is (3, 2); the texts go whole with every batch (shared_inputs=)."""
    model = models("clip")
    x = {"images": IMAGES[:3], "token_ids": TOKENS[:2]}
    info = resolve_layer(model, None)
    for j in (0, 1):
        exp = kg.explain(model, x, method="gradcam", relu=False, targets=kg.ClassTarget(j, output="vision_logits"),
                         shared_inputs=["token_ids"], batch_size=batch_size)
        expected, scores = tape_gradcam(model, x, info.layer, lambda out, j=j: out["vision_logits"][:, j], info.grid)
        assert scores.shape == (3,)
        np.testing.assert_allclose(exp.scores, scores, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(exp.layer_heatmaps, expected, rtol=1e-4, atol=1e-6)
        assert exp.heatmaps.shape == (3, SIZE, SIZE)


@pytest.mark.parametrize("method", ["scorecam", "ablationcam", "layercam"])
def test_shared_texts_reach_every_pass_of_multi_pass_methods(method, models):
    """Score-CAM and Ablation-CAM run many passes per batch (masked images, ablated channels): the texts go with each."""
    model = models("clip")
    x = {"images": IMAGES[:3], "token_ids": TOKENS[:2]}
    target = kg.ClassTarget(1, output="vision_logits")
    small = kg.explain(model, x, method=method, targets=target, shared_inputs="token_ids", batch_size=2)
    whole = kg.explain(model, x, method=method, targets=target, shared_inputs="token_ids", batch_size=3)
    np.testing.assert_allclose(small.layer_heatmaps, whole.layer_heatmaps, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(whole.scores, np.asarray(model(x)["vision_logits"])[:, 1], rtol=1e-5)


def test_an_input_with_other_rows_than_the_images_must_be_named_shared(models):
    model = models("clip")
    with pytest.raises(ValueError) as info:
        kg.explain(model, {"images": IMAGES[:3], "token_ids": TOKENS[:2]}, method="gradcam",
                   targets=kg.ClassTarget(0, output="vision_logits"))
    text = str(info.value)
    assert "'images'" in text and "3 rows" in text and "'token_ids' (2 rows)" in text and "shared_inputs=['token_ids']" in text
    with pytest.raises(ValueError, match=r"'texts', which is not one of the model's inputs \['images', 'token_ids'\]"):
        kg.explain(model, {"images": IMAGES[:3], "token_ids": TOKENS[:2]}, shared_inputs="texts")
    with pytest.raises(ValueError, match="names the images' input 'images'"):
        kg.explain(model, {"images": IMAGES[:3], "token_ids": TOKENS[:3]}, shared_inputs=["images"])


def test_image_input_says_which_input_holds_the_images():
    """Two rank-4 inputs of different row counts: which is the images cannot be told without image_input=."""
    a, b = keras.Input((8, 8, 1), name="a"), keras.Input((8, 8, 1), name="b")
    conv = keras.layers.Conv2D(2, 3, padding="same", name="conv")(a)
    pooled = keras.layers.GlobalAveragePooling2D()(conv) + keras.layers.GlobalAveragePooling2D()(b)
    model = keras.Model({"a": a, "b": b}, keras.layers.Dense(2)(pooled))
    x = {"a": RNG.random((3, 8, 8, 1)).astype("float32"), "b": RNG.random((1, 8, 8, 1)).astype("float32")}
    with pytest.raises(ValueError, match="image_input=") as info:
        kg.explain(model, x, method="gradcam", layer="conv")
    assert "'a': 3" in str(info.value) and "'b': 1" in str(info.value)
    exp = kg.explain(model, {"a": x["a"], "b": np.repeat(x["b"], 3, axis=0)}, method="gradcam", layer="conv", image_input="a")
    assert exp.heatmaps.shape == (3, 8, 8)


def test_siglip_grid_is_the_one_that_runs(models):
    """KerasHub's SigLIPVisionEmbedding reports 17 tokens (compute_output_shape) and makes 16: the 16 are trusted."""
    model = models("siglip")
    infos = {i.path: i for i in list_layers(model)}
    for path in ("vision/vision_embedding", "vision/vision_encoder_block_1/layer_norm1", "vision/vision_post_layer_norm"):
        assert infos[path].shape[1] == 16 and infos[path].grid == (4, 4) and infos[path].prefix_tokens == 0, path
    x = {"images": IMAGES[:2], "token_ids": TOKENS[:2]}
    exp = kg.explain(model, x, method="ablationcam", targets=kg.ClassTarget(0, output="vision_logits"))
    assert exp.layer_heatmaps.shape == (2, 4, 4) and np.isfinite(exp.layer_heatmaps).all()


# -- token targets ---------------------------------------------------------------------------------
@pytest.mark.parametrize("score", ["logit", "log_prob"])
def test_token_target_maps_equal_an_independent_tape_gradcam(score, models):
    model = models("paligemma")
    x = lm_inputs()
    info = resolve_layer(model, None)
    assert info.tokens and info.grid == (4, 4) and info.prefix_tokens == 0
    token, position = [5, 9], [2, -1]

    def reference(out):
        out = tf.nn.log_softmax(out) if score == "log_prob" else out
        return tf.stack([out[0, 2, 5], out[1, TEXT - 1, 9]])

    exp = kg.explain(model, x, method="gradcam", relu=False, targets=kg.TokenTarget(token, position, score=score))
    expected, scores = tape_gradcam(model, x, info.layer, reference, info.grid)
    np.testing.assert_allclose(exp.scores, scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(exp.layer_heatmaps, expected, rtol=1e-4, atol=1e-6)


def test_sequence_target_sums_the_answers_log_probabilities(models):
    model = models("paligemma")
    x = lm_inputs()
    info = resolve_layer(model, None)
    target = kg.SequenceTarget.from_response(x["token_ids"], x["response_mask"])

    def reference(out):  # tokens 3..5 (the response) scored at positions 2..4
        logp = tf.nn.log_softmax(out)
        ids = x["token_ids"]
        return tf.stack([sum(logp[b, p - 1, ids[b, p]] for p in range(3, TEXT)) for b in range(2)])

    exp = kg.explain(model, x, method="gradcam", relu=False, targets=target)
    expected, scores = tape_gradcam(model, x, info.layer, reference, info.grid)
    np.testing.assert_allclose(exp.scores, scores, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(exp.layer_heatmaps, expected, rtol=1e-4, atol=1e-6)


def test_per_image_token_targets_are_cut_per_batch(models):
    """One token and position per image: any batch_size gives the maps of one pass over all images."""
    model = models("paligemma")
    x = lm_inputs(3)
    target = kg.TokenTarget([5, 9, 11], [2, -1, 0])
    whole = kg.explain(model, x, method="gradcam", relu=False, targets=target, batch_size=3)
    ones = kg.explain(model, x, method="gradcam", relu=False, targets=target, batch_size=1)
    np.testing.assert_allclose(ones.layer_heatmaps, whole.layer_heatmaps, rtol=1e-5, atol=1e-6)
    out = np.asarray(model(x, training=False))
    np.testing.assert_allclose(whole.scores, [out[0, 2, 5], out[1, TEXT - 1, 9], out[2, 0, 11]], rtol=1e-5)


def test_equal_token_targets_share_one_compiled_function(models):
    model = models("paligemma")
    cam = kg.GradCAM(model)
    x = lm_inputs()
    cam(x, targets=kg.TokenTarget(5, 2))
    cam(x, targets=kg.TokenTarget(5, 2))
    assert len(cam._fns) == 1
    assert kg.TokenTarget(5, 2) == kg.TokenTarget(5, 2) and hash(kg.TokenTarget([5, 6], 2)) == hash(kg.TokenTarget((5, 6), 2))
    assert kg.TokenTarget(5, 2).key == kg.TokenTarget(7, -1).key != kg.TokenTarget(5, 2, score="log_prob").key


@pytest.mark.parametrize(
    "target, words",
    [
        (kg.TokenTarget(VOCAB, 0), [f"{VOCAB} token ids", f"0 .. {VOCAB - 1}", f"received token ids [{VOCAB}]"]),
        (kg.TokenTarget(3, TEXT), [f"{TEXT} positions", f"-{TEXT} .. {TEXT - 1}", f"received positions [{TEXT}]"]),
        (kg.TokenTarget([3, 3], [0, -TEXT - 1]), [f"{TEXT} positions", f"[{-TEXT - 1}]"]),
        (kg.SequenceTarget([1, VOCAB + 2], [0, 1]), [f"{VOCAB} token ids", f"{VOCAB + 2}"]),
    ],
)
def test_bad_token_targets_name_what_was_received_and_expected(target, words, models):
    with pytest.raises(ValueError) as info:
        kg.explain(models("paligemma"), lm_inputs(), method="gradcam", relu=False, targets=target)
    for w in words:
        assert w in str(info.value), (w, str(info.value))


def test_token_target_arguments_are_checked():
    with pytest.raises(TypeError, match="token must be an int"):
        kg.TokenTarget("cat", 0)
    with pytest.raises(ValueError, match="score must be one of"):
        kg.TokenTarget(1, 0, score="prob")
    with pytest.raises(ValueError, match="2 tokens but 3 positions"):
        kg.TokenTarget([1, 2], [0, 1, 2])
    with pytest.raises(ValueError, match="has 3 rows but there are 2 images"):
        kg.TokenTarget([1, 2, 3], 0).rows(2)
    with pytest.raises(ValueError, match="one position per token"):
        kg.SequenceTarget([1, 2], [0])
    with pytest.raises(ValueError, match="zero vector"):
        kg.SimilarityTarget([0.0, 0.0])


# -- embeddings -----------------------------------------------------------------------------------
def test_similarity_target_is_the_cosine_similarity_to_the_reference(models):
    """A model whose output is CLIP's image embedding: the map of its cosine similarity to a text's embedding."""
    backbone = models("clip")
    images = keras.Input((SIZE, SIZE, 3))
    embedder = keras.Model(images, backbone.get_vision_embeddings(images))
    text = np.asarray(backbone.get_text_embeddings(TOKENS[:1]))[0]
    info = resolve_layer(embedder, None)
    exp = kg.explain(embedder, IMAGES[:2], method="gradcam", relu=False, targets=kg.SimilarityTarget(text))

    def cosine(out):
        return tf.reduce_sum(out * text, -1) / (tf.norm(out, axis=-1) * np.linalg.norm(text))

    expected, scores = tape_gradcam(embedder, IMAGES[:2], info.layer, cosine, info.grid)
    np.testing.assert_allclose(exp.scores, scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(exp.layer_heatmaps, expected, rtol=1e-4, atol=1e-6)


# -- Gemma3: a 5-D image input ---------------------------------------------------------------------
GEMMA3_LAYER = "gemma3_backbone/gemma3_vision_encoder/image_encoder/encoder_block_1/layer_norm_1"


def gemma3_inputs(n=2, images_per_prompt=1):
    """A prompt of 8 tokens whose positions 1-4 hold the image's 4 pooled tokens."""
    vision_mask = np.zeros((n, 8), "int32")
    vision_mask[:, 1:5] = 1
    return {"images": RNG.random((n, images_per_prompt, SIZE, SIZE, 3)).astype("float32"),
            "token_ids": RNG.integers(1, VOCAB, (n, 8)).astype("int32"), "padding_mask": np.ones((n, 8), "int32"),
            "vision_indices": np.tile(np.arange(1, 5, dtype="int32"), (n, 1)), "vision_mask": vision_mask}


def test_gemma3_lists_the_grid_of_its_5d_image_input(models):
    infos = {i.path: i for i in list_layers(models("gemma3"))}
    for path in (GEMMA3_LAYER, "gemma3_backbone/gemma3_vision_encoder/image_encoder"):
        assert infos[path].shape == (None, 16, 16) and infos[path].grid == (4, 4) and infos[path].prefix_tokens == 0, path


def test_gemma3_token_target_maps_equal_an_independent_tape_gradcam(models):
    model = models("gemma3")
    x = gemma3_inputs()
    info = resolve_layer(model, GEMMA3_LAYER)
    exp = kg.explain(model, x, method="gradcam", relu=False, layer=GEMMA3_LAYER, targets=kg.TokenTarget([5, 7], [-1, 6]))
    expected, scores = tape_gradcam(model, x, info.layer, lambda out: tf.stack([out[0, 7, 5], out[1, 6, 7]]), info.grid)
    np.testing.assert_allclose(exp.scores, scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(exp.layer_heatmaps, expected, rtol=1e-4, atol=1e-6)
    assert exp.heatmaps.shape == (2, SIZE, SIZE)  # at the size of each image of the prompt


def test_gemma3_several_images_per_prompt_are_refused_with_the_fix(models):
    with pytest.raises(ValueError, match="holds 2 images per prompt.*one image per prompt"):
        kg.explain(models("gemma3"), gemma3_inputs(images_per_prompt=2), method="gradcam", layer=GEMMA3_LAYER,
                   targets=kg.TokenTarget(5, -1))


# -- per-word maps ---------------------------------------------------------------------------------
def test_explain_words_gives_each_words_map_in_one_batched_pass(models):
    """Word k (the token at position p of the caption) is scored at p - 1: each row equals its own TokenTarget map."""
    model = models("paligemma")
    x = lm_inputs(1)
    cam_calls = kg.explain_words(model, x, [3, 4, 5], method="gradcam", relu=False)
    assert cam_calls.layer_heatmaps.shape == (3, 4, 4) and cam_calls.heatmaps.shape == (3, SIZE, SIZE)
    info = resolve_layer(model, None)
    ids = x["token_ids"][0]
    for k, p in enumerate([3, 4, 5]):
        expected, scores = tape_gradcam(model, x, info.layer, lambda out, p=p: out[:, p - 1, ids[p]], info.grid)
        np.testing.assert_allclose(cam_calls.scores[k], scores[0], rtol=1e-5)
        np.testing.assert_allclose(cam_calls.layer_heatmaps[k], expected[0], rtol=1e-4, atol=1e-6)
    fig = kg.plot_words(IMAGES[0], cam_calls, ["a", "red", "circle"])
    assert len([ax for ax in fig.axes if ax.images]) == 4
    import matplotlib.pyplot as plt

    plt.close(fig)
    with pytest.raises(ValueError, match="positions must be word positions 1 .. 5"):
        kg.explain_words(model, x, [0, 2])
    with pytest.raises(ValueError, match="leading axis of 1"):
        kg.explain_words(model, lm_inputs(2), [2])


def test_explain_dataset_gives_the_shared_texts_with_every_batch(models, tmp_path):
    """A dataset of images (dicts of the per-image input) scored against 2 shared texts: the run equals kg.explain."""
    model = models("clip")
    target = kg.ClassTarget(1, output="vision_logits")
    data = [{"images": IMAGES[:2]}, {"images": IMAGES[2:3]}]
    run = kg.explain_dataset(model, data, method="gradcam", targets=target, out=tmp_path / "run",
                             shared_inputs={"token_ids": TOKENS[:2]}, verbose=0, relu=False)
    expected = kg.explain(model, {"images": IMAGES[:3], "token_ids": TOKENS[:2]}, method="gradcam", targets=target,
                          shared_inputs=["token_ids"], relu=False)
    assert np.abs(expected.layer_heatmaps).max() > 0
    np.testing.assert_allclose(run.layer_heatmaps[:], expected.layer_heatmaps, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(run.scores[:], expected.scores, rtol=1e-5)
