"""Dense-prediction targets: a class over a region of a segmentation map, a detector's box.

The segmentation model is two 1x1 convolutions with hand-set weights, so the logits, the scores and
the Grad-CAM maps are worked out in numpy from the formulas. The KerasHub parts (a DeepLabV3
segmenter and a RetinaNet detector built from config, random weights) skip without keras_hub.
"""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_gradcam as kg
from keras_gradcam.core.dense_targets import box_iou
from keras_gradcam.core.validate import ClassIndexError
from tests.oracles import close, relu

# features A = relu(x @ V) (4 channels), logits z = A @ W + b (3 classes), on a 4x4 grid
V = np.array([[1.0, -0.5, 0.3, 0.0], [0.2, 1.0, -0.4, 0.6]], np.float32)
W = np.array([[0.5, -1.0, 0.2], [1.0, 0.3, -0.6], [-0.7, 0.8, 0.4], [0.1, -0.2, 1.2]], np.float32)
B = np.array([0.1, -0.2, 0.05], np.float32)
X = np.random.default_rng(3).normal(size=(2, 4, 4, 2)).astype(np.float32)


def segmenter(softmax=False, channels_first_output=False):
    inp = keras.Input((4, 4, 2))
    feat = keras.layers.Conv2D(4, 1, activation="relu", name="feat")
    head = keras.layers.Conv2D(3, 1, activation="softmax" if softmax else None, name="head")
    out = head(feat(inp))
    if channels_first_output:
        out = keras.layers.Permute((3, 1, 2), name="to_channels_first")(out)
    model = keras.Model(inp, out)
    feat.set_weights([V[None, None], np.zeros(4, np.float32)])
    head.set_weights([W[None, None], B])
    return model


def numpy_logits(x):
    acts = relu(x @ V)
    return acts, acts @ W + B


def numpy_gradcam(acts, mask, c):
    """Grad-CAM of score = sum_p mask[p] z_c[p]: dS/dA_k[p] = mask[p] W[k, c], weights their spatial mean."""
    alpha = (mask.reshape(len(acts), -1).mean(axis=1)[:, None] * W[:, c][None])  # (B, K)
    return relu(np.einsum("bhwk,bk->bhw", acts, alpha))


def test_masked_score_and_gradcam_map_match_numpy():
    model = segmenter()
    mask = np.zeros((4, 4), bool)
    mask[1:3, 0:3] = True
    acts, z = numpy_logits(X)
    exp = kg.explain(model, X, method="gradcam", layer="feat", targets=kg.SegmentationTarget(1, mask=mask))
    close(exp.scores, (z[..., 1] * mask).sum(axis=(1, 2)), rtol=1e-5, atol=1e-5)
    close(exp.layer_heatmaps, numpy_gradcam(acts, np.broadcast_to(mask, (2, 4, 4)).astype(float), 1), atol=1e-5)


def test_predicted_region_is_the_argmax_of_the_class_and_differs_from_a_mask():
    model = segmenter()
    acts, z = numpy_logits(X)
    region = (z.argmax(-1) == 2).astype(np.float32)
    assert 0 < region.sum() < region.size  # the region is neither empty nor everything
    exp = kg.explain(model, X, method="gradcam", layer="feat", targets=kg.SegmentationTarget(2))
    close(exp.scores, (z[..., 2] * region).sum(axis=(1, 2)), atol=1e-5)
    # the region is taken from the forward pass, not differentiated: the gradient is the region times W
    close(exp.layer_heatmaps, numpy_gradcam(acts, region, 2), atol=1e-5)
    everywhere = kg.explain(model, X, method="gradcam", layer="feat", targets=kg.SegmentationTarget(2, mask=np.ones((4, 4))))
    close(everywhere.scores, z[..., 2].sum(axis=(1, 2)), atol=1e-5)
    assert np.abs(everywhere.scores - exp.scores).max() > 1e-3


def test_per_image_masks_and_the_softmax_head_scores_logits():
    model = segmenter(softmax=True)
    _, z = numpy_logits(X)
    masks = np.zeros((2, 4, 4), np.float32)
    masks[0, :2] = 1.0
    masks[1, :, 3] = 0.5  # float weights
    exp = kg.explain(model, X, method="gradcam", layer="feat", targets=kg.SegmentationTarget(0, mask=masks))
    close(exp.scores, (z[..., 0] * masks).sum(axis=(1, 2)), atol=1e-5)  # logits, not probabilities


@pytest.mark.parametrize("method, options", [("integrated-gradcam", {"steps": 3}), ("scorecam", {"verbose": 0})])
def test_per_image_masks_follow_their_image_through_multi_pass_methods(method, options):
    """Methods that expand each image (path points, masked copies) pass k x n rows: the masks go with them."""
    model = segmenter()
    _, z = numpy_logits(X)
    masks = np.zeros((2, 4, 4), np.float32)
    masks[0, :2], masks[1, :, 3] = 1.0, 1.0
    both = kg.explain(model, X, method=method, layer="feat", targets=kg.SegmentationTarget(0, mask=masks), **options)
    close(both.scores, (z[..., 0] * masks).sum(axis=(1, 2)), atol=1e-5)
    alone = kg.explain(model, X[1:], method=method, layer="feat", targets=kg.SegmentationTarget(0, mask=masks[1]), **options)
    close(both.layer_heatmaps[1], alone.layer_heatmaps[0], atol=1e-5)


@pytest.mark.parametrize("method, options", [("gradcam", {}), ("integrated-gradcam", {"steps": 3}),
                                             ("scorecam", {"verbose": 0})])
def test_per_image_masks_are_cut_per_batch_like_the_images(method, options):
    """Per-image masks with batch_size=2 on 5 images: the maps of one batch of 5, and Grad-CAM's by hand."""
    model = segmenter()
    x = np.random.default_rng(7).normal(size=(5, 4, 4, 2)).astype(np.float32)
    acts, z = numpy_logits(x)
    masks = (np.random.default_rng(8).random((5, 4, 4)) < 0.5).astype(np.float32)
    masks[:, 0, 0] = 1.0  # every mask holds a pixel
    target = kg.SegmentationTarget(2, mask=masks)
    whole = kg.explain(model, x, method=method, layer="feat", targets=target, batch_size=5, **options)
    cut = kg.explain(model, x, method=method, layer="feat", targets=target, batch_size=2, **options)
    close(cut.scores, (z[..., 2] * masks).sum(axis=(1, 2)), atol=1e-5)
    close(cut.layer_heatmaps, whole.layer_heatmaps, atol=1e-5)
    close(cut.heatmaps, whole.heatmaps, atol=1e-5)
    if method == "gradcam":
        close(cut.layer_heatmaps, numpy_gradcam(acts, masks, 2), atol=1e-5)


def test_per_image_boxes_are_cut_per_batch_like_the_images():
    """Three images, a reference box and class each, one image per pass: each matches its own box."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((4, 4, 1))
    feat = keras.layers.Conv2D(2, 1, activation="relu", name="feat")(inp)
    dense = keras.layers.Dense(4, bias_initializer=keras.initializers.Constant([5.0, -5.0, -5.0, 5.0]))
    logits = keras.layers.Reshape((2, 2))(dense(keras.layers.GlobalAveragePooling2D()(feat)))  # box 0: class 0
    boxes = keras.layers.Lambda(lambda v: v[:, :, :1] * 0 + np.array([[0, 0, 4, 4], [4, 4, 8, 8]], np.float32))(logits)
    model = keras.Model(inp, (boxes, logits))
    x = np.random.default_rng(5).random((3, 4, 4, 1)).astype(np.float32)
    target = kg.BoxTarget([[0, 0, 4, 4], [4, 4, 8, 8], [0, 0, 4, 4]], category=[0, 1, 0])
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*no detection")  # every image has its match
        cut = kg.explain(model, x, method="gradcam", layer="feat", targets=target, batch_size=1)
        whole = kg.explain(model, x, method="gradcam", layer="feat", targets=target, batch_size=3)
    z = np.asarray(model(x)[1])
    close(cut.scores, [z[0, 0, 0], z[1, 1, 1], z[2, 0, 0]], atol=1e-5)
    close(cut.layer_heatmaps, whole.layer_heatmaps, atol=1e-5)


def test_channels_first_output_gives_the_same_score():
    _, z = numpy_logits(X)
    mask = np.eye(4, dtype=bool)
    model = segmenter(channels_first_output=True)
    exp = kg.explain(model, X, method="gradcam", layer="feat",
                     targets=kg.SegmentationTarget(1, mask=mask, data_format="channels_first"))
    close(exp.scores, (z[..., 1] * mask).sum(axis=(1, 2)), atol=1e-5)


def test_segmentation_target_errors_name_the_fix():
    model = segmenter()
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=r"resolution"):
        kg.explain(model, X, method="gradcam", layer="feat", targets=kg.SegmentationTarget(1, mask=np.ones((8, 8))))
    with pytest.raises(ClassIndexError, match=r"0 \.\. 2"):
        kg.explain(model, X, method="gradcam", layer="feat", targets=kg.SegmentationTarget(3))
    with pytest.raises(ValueError, match=r"3 per-image entries .* 2 images"):
        kg.explain(model, X, method="gradcam", layer="feat", targets=kg.SegmentationTarget(1, mask=np.ones((3, 4, 4))))
    with pytest.raises(ValueError, match=r"\(height, width\)"):
        kg.SegmentationTarget(1, mask=np.ones(4))
    with pytest.raises(TypeError, match="category"):
        kg.SegmentationTarget("cat")
    classifier = keras.Sequential([keras.Input((4, 4, 2)), keras.layers.Flatten(), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="segmentation output"):
        kg.SegmentationTarget(1)(classifier(X))
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # unchanged after the errors


def test_equal_targets_hash_equal_and_share_one_trace():
    a, b = kg.SegmentationTarget(1, mask=np.eye(4)), kg.SegmentationTarget(1, mask=np.eye(4))
    assert a == b and hash(a) == hash(b) and a != kg.SegmentationTarget(1, mask=np.ones((4, 4)))
    cam = kg.GradCAM(segmenter(), layer="feat")
    cam(X, targets=a)
    cam(X, targets=b)
    assert len(cam._fns) == 1
    assert kg.BoxTarget([0, 0, 2, 2], 1) == kg.BoxTarget((0, 0, 2, 2), 1) != kg.BoxTarget([0, 0, 2, 3], 1)


# -- boxes on hand-made detections ---------------------------------------------------------------
def test_box_iou_by_hand():
    boxes = tf.constant([[[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0], [5.0, 5.0, 6.0, 6.0]]])
    close(box_iou(boxes, tf.constant([[0.0, 0.0, 2.0, 2.0]])), [[1.0, 1.0 / 7.0, 0.0]])


def test_box_target_picks_the_best_overlap_of_the_class_and_warns_without_match():
    boxes = np.array([[[0, 0, 4, 4], [0, 0, 4, 3], [10, 10, 14, 14]]] * 2, np.float32)
    logits = np.array([[[0.1, 2.0], [3.0, 1.0], [0.0, 5.0]],   # box 0: class 1, IoU 1; box 1: class 0
                       [[2.0, 0.1], [0.5, 1.5], [0.0, 5.0]]], np.float32)  # sample 1: box 1 is class 1, IoU 0.75
    outputs = (tf.constant(boxes), tf.constant(logits))
    target = kg.BoxTarget([0, 0, 4, 4], category=1, iou_threshold=0.5)
    close(target(outputs), [2.0, 1.5])
    close(kg.BoxTarget([0, 0, 4, 4], category=1, add_iou=True)(outputs), [3.0, 2.25])
    close(kg.BoxTarget([[0, 0, 4, 4], [10, 10, 14, 15]], category=[0, 1])(outputs), [3.0, 5.0])  # per image
    with pytest.warns(RuntimeWarning, match="1 of 2 samples have no detection"):
        close(kg.BoxTarget([0, 0, 4, 4], category=1, iou_threshold=0.8)(outputs), [2.0, 0.0])
    with pytest.warns(RuntimeWarning, match="1 of 2 samples have no detection"):
        close(kg.BoxTarget([0, 0, 4, 4], category=1, min_score=1.8)(outputs), [2.0, 0.0])
    with pytest.raises(ValueError, match="corners"):
        kg.BoxTarget([4, 4, 0, 0], 1)
    with pytest.raises(ValueError, match=r"\(boxes \(N, A, 4\), class_scores"):
        target(tf.constant(logits))


# -- KerasHub --------------------------------------------------------------------------------------
def tiny_resnet(keras_hub, size=32):
    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 16, 16],
        stackwise_num_blocks=[1, 1, 1], stackwise_num_strides=[1, 2, 2], block_type="basic_block",
        use_pre_activation=False, image_shape=(size, size, 3),
    )


def weights_of(model):
    return [w.copy() for w in model.get_weights()]


def test_keras_hub_deeplabv3_from_config_explained_end_to_end():
    keras_hub = pytest.importorskip("keras_hub")
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.DeepLabV3Backbone(
        image_encoder=tiny_resnet(keras_hub), spatial_pyramid_pooling_key="P4", upsampling_size=4,
        dilation_rates=[1, 2], low_level_feature_key="P2", projection_filters=8, image_shape=(32, 32, 3),
    )
    model = keras_hub.models.DeepLabV3ImageSegmenter(backbone=backbone, num_classes=3, activation="softmax")
    images = np.random.default_rng(0).random((2, 32, 32, 3)).astype(np.float32)
    before = weights_of(model)
    mask = np.zeros((32, 32), bool)
    mask[8:24, 8:24] = True
    exp = kg.explain(model, images, method="gradcam", layer="segmentation_head_relu",
                     targets=kg.SegmentationTarget(2, mask=mask))
    assert exp.heatmaps.shape == (2, 32, 32) and np.isfinite(exp.heatmaps).all() and exp.heatmaps.max() > 0
    # the logits by hand: the backbone's features times the 1x1 output convolution (no bias), before its softmax
    features = keras.ops.convert_to_numpy(model.backbone(images, training=False))
    logits = features @ model.output_conv.get_weights()[0][0, 0]
    close(exp.scores, (logits[..., 2] * mask).sum(axis=(1, 2)), rtol=1e-4, atol=1e-3)
    probs = model.predict(images, verbose=0)
    as_given = kg.explain(model, images, method="gradcam", layer="segmentation_head_relu",
                          targets=kg.SegmentationTarget(2, mask=mask), score="output")
    close(as_given.scores, (probs[..., 2] * mask).sum(axis=(1, 2)), rtol=1e-4, atol=1e-4)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def numpy_decode(anchors_yxyx, deltas):
    """KerasHub's center_xywh delta decoding, by hand: (cx, cy, w, h) of each anchor moved and scaled."""
    y1, x1, y2, x2 = anchors_yxyx.T
    w, h = x2 - x1, y2 - y1
    cx, cy = x1 + w / 2, y1 + h / 2
    dx, dy, dw, dh = np.moveaxis(deltas, -1, 0)
    ncx, ncy, nw, nh = dx * w + cx, dy * h + cy, np.exp(dw) * w, np.exp(dh) * h
    return np.stack([ncy - nh / 2, ncx - nw / 2, ncy + nh / 2, ncx + nw / 2], axis=-1)


def numpy_iou(boxes, ref):
    lo, hi = np.maximum(boxes[..., :2], ref[:2]), np.minimum(boxes[..., 2:], ref[2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    area = np.prod(boxes[..., 2:] - boxes[..., :2], axis=-1)
    return inter / (area + np.prod(ref[2:] - ref[:2]) - inter)


def test_keras_hub_retinanet_box_target_matches_the_hand_decoded_anchor():
    keras_hub = pytest.importorskip("keras_hub")
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.RetinaNetBackbone(image_encoder=tiny_resnet(keras_hub), min_level=3, max_level=4,
                                                  use_p5=False, image_shape=(32, 32, 3))
    model = keras_hub.models.RetinaNetObjectDetector(backbone=backbone, num_classes=3, pre_logits_num_conv_layers=1)
    # small random box deltas (the random head's prior-probability bias would throw every box off the image)
    rng = np.random.default_rng(1)
    for v in model.box_head.weights[-2:]:  # the last convolution's kernel and bias
        v.assign(rng.normal(scale=0.02, size=v.shape).astype(np.float32))
    images = np.random.default_rng(0).random((2, 32, 32, 3)).astype(np.float32)
    raw = model(images, training=False)
    deltas, logits = raw["bbox_regression"].numpy(), raw["cls_logits"].numpy()
    levels = model.anchor_generator(np.zeros((1, 32, 32, 3), np.float32))
    anchors = np.concatenate([keras.ops.convert_to_numpy(a) for a in levels.values()])
    decoded = numpy_decode(anchors, deltas)
    category, ref = 1, np.array([4.0, 6.0, 20.0, 18.0], np.float32)
    expected, hits = [], []
    for b in range(2):
        iou = np.where(logits[b].argmax(-1) == category, numpy_iou(decoded[b], ref), -1.0)
        a = iou.argmax()
        assert iou[a] >= 0.15
        expected.append(logits[b, a, category])
        hits.append(a)
    detections = kg.RetinaNetDetections(model)
    close(detections(raw)[0], decoded, rtol=1e-4, atol=1e-3)
    target = kg.BoxTarget(ref, category, detections=detections, iou_threshold=0.15)
    score, _, index, matched = target.match(raw)
    assert index.numpy().tolist() == hits and matched.numpy().all()
    before = weights_of(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a match: no warning
        exp = kg.explain(model, images, method="gradcam", layer="stack1_block0_out",
                         targets=target)
    close(exp.scores, expected, rtol=1e-4, atol=1e-4)
    assert exp.heatmaps.shape == (2, 32, 32) and np.isfinite(exp.heatmaps).all()
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    with pytest.raises(ValueError, match="corner format"):
        kg.RetinaNetDetections(model, box_format="xywh")


def test_the_docs_grid_detector_decodes_the_boxes_it_was_trained_on():
    """The detection figure's adapter inverts its training encoding: each object's cell decodes to its mask's box."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parent.parent / "docs" / "_hooks" / "kg_dense.py"
    spec = importlib.util.spec_from_file_location("kg_dense_hook", path)
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    data = kg.datasets.make_shapes(n=6, image_size=64, n_objects=(1, 2), same_class=False, size_range=(0.25, 0.4), seed=2)
    cls, code = hook.detector_targets(data, 64)
    boxes, logits = hook.grid_boxes(64)({"boxes": tf.constant(code), "logits": tf.zeros((6, 64, 4))})
    for i in range(len(data)):
        for j in np.flatnonzero(data.object_labels[i] >= 0):
            ys, xs = np.nonzero(data.object_masks[i, j])
            cell = np.flatnonzero(np.all(np.isclose(boxes[i].numpy(), [ys.min(), xs.min(), ys.max() + 1, xs.max() + 1], atol=1e-4), axis=1))
            assert len(cell) == 1 and cls[i, cell[0]] == data.object_labels[i, j]
    assert (cls == data.num_classes).sum() == 6 * 64 - data.object_counts.sum()  # the other cells are background
