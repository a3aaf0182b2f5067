"""Which layer ``layer=None`` picks, graph operations as layers, shared layers and the head look-through.

Expected layers are found from the graph independently of ``resolve_layer`` (the tensor the
head's global pooling or flatten reads); expected numbers are computed in numpy from hand-set
weights.
"""

import keras
import numpy as np
import pytest

import keras_gradcam as kg
from keras_gradcam.core.layers import output_layer, resolve_layer, shared_call_count

L = keras.layers
_POOLING = (L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalAveragePooling3D,
            L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalMaxPooling3D)


def _head_input(model: keras.Model):
    """The operation whose output the head's global pooling (else its flatten) reads.

    Squeeze-and-excitation blocks pool too, but before the head: the head's pooling is the last
    global pooling of the graph; models without one (VGG) start their head with a Flatten.
    """
    ops = list(model.operations)
    pools = [op for op in ops if isinstance(op, _POOLING)] or [op for op in ops if isinstance(op, L.Flatten)]
    head = pools[-1]
    (node,) = head._inbound_nodes
    return node.input_tensors[0]._keras_history[0]


def _set(layer, *weights):
    layer.set_weights([np.asarray(w, np.float32) for w in weights])


# --- 1. a 1x1 map locates nothing ----------------------------------------------------------------
def test_default_skips_a_1x1_map_after_the_pooling():
    """GAP(keepdims) -> 1x1 conv (MobileNetV3's head): the pick is the feature map before the pooling."""
    inp = keras.Input((6, 6, 1))
    a = L.Conv2D(2, 3, padding="same", name="features")(inp)
    a = L.GlobalAveragePooling2D(keepdims=True, name="gap")(a)
    a = L.Conv2D(3, 1, name="logits")(a)
    model = keras.Model(inp, L.Flatten()(a))
    assert resolve_layer(model, None).path == "features"
    exp = kg.GradCAM(model)(np.ones((1, 6, 6, 1), np.float32), targets=0)
    assert exp.layer == "features" and exp.layer_heatmaps.shape == (1, 6, 6)


def test_unknown_spatial_size_counts_as_more_than_one_position():
    inp = keras.Input((None, None, 1))
    a = L.Conv2D(2, 3, padding="same", name="features")(inp)
    a = L.Conv2D(3, 1, name="logits")(L.GlobalAveragePooling2D(keepdims=True)(a))
    model = keras.Model(inp, L.Flatten()(a))
    info = resolve_layer(model, None)
    assert info.path == "features" and info.shape == (None, None, None, 2)


def test_only_1x1_maps_is_a_clear_error():
    inp = keras.Input((1, 1, 3))
    model = keras.Model(inp, L.Flatten()(L.Conv2D(2, 1, name="c")(inp)))
    with pytest.raises(ValueError, match="more than one position"):
        resolve_layer(model, None)
    assert resolve_layer(model, "c").path == "c"  # naming it stays allowed


# --- 2. operations of the graph (x + branch) ------------------------------------------------------
def _residual_model():
    """x (4x4x1) -> c (1x1 conv, 2 channels) -> r = c + x (an Add *operation*) -> GAP -> dense."""
    inp = keras.Input((4, 4, 1))
    c = L.Conv2D(2, 1, use_bias=False, name="c")(inp)
    r = c + inp
    out = L.Dense(2, use_bias=False, name="dense")(L.GlobalAveragePooling2D()(r))
    model = keras.Model(inp, out)
    _set(model.get_layer("c"), [[[[0.5, -2.0]]]])
    _set(model.get_layer("dense"), [[1.0, -1.0], [0.25, 2.0]])
    return model, r._keras_history[0]


def test_an_add_operation_is_listed_picked_and_named():
    model, add = _residual_model()
    assert not isinstance(add, L.Layer)
    paths = [i.path for i in kg.list_layers(model)]
    assert paths == ["c", add.name]
    assert resolve_layer(model, None).layer is add
    assert resolve_layer(model, add.name).layer is add
    assert resolve_layer(model, add).layer is add


def test_explaining_an_add_operation_matches_the_hand_computation():
    model, add = _residual_model()
    x = np.random.default_rng(3).normal(size=(2, 4, 4, 1)).astype(np.float32)
    exp = kg.GradCAM(model)(x, targets=[0, 1])
    assert exp.layer == add.name
    w, v = np.array([0.5, -2.0]), np.array([[1.0, -1.0], [0.25, 2.0]])
    r = x * w + x  # (2, 4, 4, 2): c + x, broadcast over channels
    for b, cls in enumerate([0, 1]):
        alpha = v[:, cls] / 16.0  # d score / d r_k is v[k, cls] / (H W) at every position
        expected = np.maximum((r[b] * alpha).sum(-1), 0.0)
        np.testing.assert_allclose(exp.layer_heatmaps[b], expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(exp.scores[b], (r[b].mean((0, 1)) * v[:, cls]).sum(), rtol=1e-5)
    model(x)  # the model still runs as before: the operation's call was restored
    assert "call" not in vars(add)


def test_an_operation_after_channels_first_layers_is_channels_first():
    inp = keras.Input((2, 4, 4))
    c = L.Conv2D(2, 1, data_format="channels_first", name="c")(inp)
    r = c + inp
    model = keras.Model(inp, L.Dense(2)(L.GlobalAveragePooling2D(data_format="channels_first")(r)))
    info = resolve_layer(model, None)
    assert info.layer is r._keras_history[0] and info.channels_first and info.spatial_shape == (4, 4)


# --- 3. keras.applications: the pick is what the head pools ---------------------------------------
FAST_APPS = [("MobileNetV3Small", 64), ("ConvNeXtTiny", 64), ("ResNet50", 64), ("EfficientNetB0", 64)]


@pytest.mark.parametrize("name,size", FAST_APPS, ids=[n for n, _ in FAST_APPS])
def test_applications_default_is_the_head_input(name, size):
    model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3), classes=10)
    info = resolve_layer(model, None)
    assert info.layer is _head_input(model), (info.path, _head_input(model).name)
    assert info.located_axes == 2


# every keras.applications constructor, at an input size (>= its minimum) where its last map is > 1x1
_SIZES = {"InceptionV3": 139, "InceptionResNetV2": 139}
ALL_APPS = [(n, _SIZES.get(n, 96)) for n in dir(keras.applications) if n[:1].isupper()]


@pytest.mark.slow
@pytest.mark.parametrize("name,size", ALL_APPS, ids=[n for n, _ in ALL_APPS])
def test_all_applications_default_is_the_head_input(name, size):
    keras.backend.clear_session()
    model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3), classes=10)
    info = resolve_layer(model, None)
    assert info.layer is _head_input(model), (info.path, _head_input(model).name)
    assert info.located_axes == 2


# --- 4. the rule: most located axes, then last ----------------------------------------------------
def test_time_distributed_video_model_gets_a_space_time_map():
    inp = keras.Input((3, 8, 8, 1))
    a = L.TimeDistributed(L.Conv2D(2, 3, padding="same", activation="relu"), name="frame_conv")(inp)
    a = L.TimeDistributed(L.GlobalAveragePooling2D(), name="frame_pool")(a)  # (batch, 3, 2)
    model = keras.Model(inp, L.Dense(2)(L.GlobalAveragePooling1D()(a)))
    assert resolve_layer(model, None).path == "frame_conv"
    x = np.random.default_rng(4).random((2, 3, 8, 8, 1)).astype(np.float32)
    exp = kg.GradCAM(model)(x)
    assert exp.layer == "frame_conv"
    assert exp.layer_heatmaps.shape == (2, 3, 8, 8) and exp.heatmaps.shape == (2, 3, 8, 8)


@pytest.mark.parametrize("conv,pool,shape", [
    (L.Conv1D, L.GlobalAveragePooling1D, (10, 2)),
    (L.Conv2D, L.GlobalAveragePooling2D, (6, 6, 2)),
    (L.Conv3D, L.GlobalAveragePooling3D, (4, 4, 4, 2)),
], ids=["conv1d", "conv2d", "conv3d"])
def test_plain_cnns_pick_the_last_map_before_pooling(conv, pool, shape):
    inp = keras.Input(shape)
    a = conv(2, 3, padding="same", name="first")(inp)
    a = conv(3, 3, padding="same", name="last")(a)
    model = keras.Model(inp, L.Dense(2)(pool()(L.Activation("relu", name="act")(a))))
    assert resolve_layer(model, None).path == "act"


# --- 5. an unbuilt Sequential ---------------------------------------------------------------------
def test_list_layers_on_an_unbuilt_sequential_says_how_to_build_it():
    model = keras.Sequential([L.Conv2D(2, 3), L.GlobalAveragePooling2D(), L.Dense(2)])
    with pytest.raises(ValueError, match=r"model\.build\(\(None, height, width, channels\)\)"):
        kg.list_layers(model)
    model.build((None, 6, 6, 1))
    assert [i.layer for i in kg.list_layers(model)] == [model.layers[0]]


def test_list_layers_on_a_sequential_given_its_input_shape():
    model = keras.Sequential([keras.Input((6, 6, 1)), L.Conv2D(2, 3, name="c"), L.GlobalAveragePooling2D()])
    assert [i.path for i in kg.list_layers(model)] == ["c"]


# --- 6. the head look-through ---------------------------------------------------------------------
@pytest.mark.parametrize("after", [lambda: L.Activation("linear"), lambda: L.Identity(), lambda: L.Dropout(0.5)],
                         ids=["linear", "identity", "dropout"])
@pytest.mark.parametrize("sequential", [False, True], ids=["functional", "sequential"])
def test_softmax_followed_by_a_pass_through_layer_explains_logits(after, sequential):
    inp = keras.Input((4, 4, 1))
    layers = [L.Conv2D(2, 1, use_bias=False, name="c"), L.GlobalAveragePooling2D(), L.Dense(3, name="dense"),
              L.Activation("softmax"), after()]
    if sequential:
        model = keras.Sequential([inp] + layers)
    else:
        x = inp
        for layer in layers:
            x = layer(x)
        model = keras.Model(inp, x)
    wc, wd, bd = np.array([[[[1.0, -0.5]]]]), np.array([[1.0, 0.0, -1.0], [2.0, 1.0, 0.5]]), np.array([0.1, 0.2, 0.3])
    _set(model.get_layer("c"), wc)
    _set(model.get_layer("dense"), wd, bd)
    x = np.random.default_rng(5).normal(size=(3, 4, 4, 1)).astype(np.float32)
    logits = (x.mean((1, 2)) * wc[0, 0, 0]) @ wd + bd  # GAP of a 1x1 conv = 1x1 conv of the mean
    exp = kg.GradCAM(model, layer="c")(x, targets=[0, 1, 2])
    np.testing.assert_allclose(exp.scores, logits[np.arange(3), [0, 1, 2]], rtol=1e-5, atol=1e-6)
    probs = model(x).numpy()  # the model is untouched: still probabilities
    np.testing.assert_allclose(probs, np.exp(logits) / np.exp(logits).sum(-1, keepdims=True), rtol=1e-5)


def test_a_lambda_after_the_softmax_is_not_looked_through():
    inp = keras.Input((3,))
    probs = L.Activation("softmax")(L.Dense(3, name="dense")(inp))
    model = keras.Model(inp, L.Lambda(lambda t: t, name="lam")(probs))
    assert output_layer(model).name == "lam"


# --- 7. shared layers ------------------------------------------------------------------------------
def _shared_model():
    inp = keras.Input((6, 6, 1))
    shared = L.Conv2D(1, 3, padding="same", name="shared")
    a = shared(inp)
    b = shared(L.ReLU(name="between")(a))
    c = L.Conv2D(2, 3, padding="same", name="after")(b)
    return keras.Model(inp, L.Dense(2)(L.GlobalAveragePooling2D()(c)))


def test_a_shared_layer_is_refused_when_resolved_with_the_layers_after_its_calls():
    model = _shared_model()
    with pytest.raises(ValueError, match="shared") as info:
        kg.GradCAM(model, layer="shared")  # at construction, not inside a traced function
    message = str(info.value)
    assert "2 times" in message and "'between'" in message and "'after'" in message
    assert "in user code" not in message
    exp = kg.GradCAM(model, layer="between")(np.ones((1, 6, 6, 1), np.float32))
    assert exp.layer_heatmaps.shape == (1, 6, 6)


def test_shared_call_count_and_the_default_skip_shared_layers():
    model = _shared_model()
    counts = {i.path: shared_call_count(i) for i in kg.list_layers(model)}
    assert counts == {"shared": 2, "between": 1, "after": 1}
    assert resolve_layer(model, None).path == "after"


def test_layers_of_a_sub_model_called_twice_are_shared():
    b_in = keras.Input((6, 6, 1))
    backbone = keras.Model(b_in, L.Conv2D(2, 3, padding="same", name="conv")(b_in), name="backbone")
    inp = keras.Input((6, 6, 1))
    merged = L.Concatenate(name="merged")([backbone(inp), backbone(L.ReLU()(inp))])
    model = keras.Model(inp, L.Dense(2)(L.GlobalAveragePooling2D()(merged)))
    assert shared_call_count(resolve_layer(model, "merged")) == 1
    with pytest.raises(ValueError, match="shared"):
        resolve_layer(model, "backbone/conv")
    assert resolve_layer(model, None).path == "merged"


def test_cli_layers_marks_the_same_default(tmp_path, capsys):
    from keras_gradcam.cli import main

    inp = keras.Input((6, 6, 1))
    a = L.Conv2D(2, 3, padding="same", name="features")(inp)
    a = L.Conv2D(3, 1, name="logits")(L.GlobalAveragePooling2D(keepdims=True, name="gap")(a))
    keras.Model(inp, L.Flatten()(a)).save(tmp_path / "m.keras")
    assert main(["layers", str(tmp_path / "m.keras")]) == 0
    rows = [line.strip("|").split("|")[0].strip() for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    marked = [row[2:] for row in rows if row.startswith("* ")]
    assert marked == ["features"]


def test_randomization_check_skips_graph_operations():
    """Operations have no weights: the sanity check re-draws the layers only."""
    model, add = _residual_model()
    x = np.random.default_rng(6).normal(size=(2, 4, 4, 1)).astype(np.float32)
    result = kg.metrics.randomization_check(model, x, targets=[0, 1])
    assert result.layer == add.name and result.steps == ("none", "dense", "c")


def test_an_integer_operation_is_not_picked_and_naming_it_is_explained():
    inp = keras.Input((6, 6, 1))
    a = L.Conv2D(2, 3, padding="same", name="features")(inp)
    mask = keras.ops.cast(a > 0, "int32")  # an integer (batch, 6, 6, 2) output: no gradient reaches it
    model = keras.Model(inp, [L.Dense(2)(L.GlobalAveragePooling2D()(a)), mask])
    assert resolve_layer(model, None).path == "features"
    op = mask._keras_history[0]
    with pytest.raises(ValueError, match="int32"):
        resolve_layer(model, op.name)


def test_a_layer_also_called_in_another_model_is_not_shared_in_this_one():
    conv = L.Conv2D(2, 3, padding="same", name="conv")
    inp = keras.Input((6, 6, 1))
    model = keras.Model(inp, L.Dense(2)(L.GlobalAveragePooling2D()(conv(inp))))
    other = keras.Input((8, 8, 1))
    keras.Model(other, conv(other))  # a second inbound node, in another graph
    assert len(conv._inbound_nodes) == 2
    assert shared_call_count(resolve_layer(model, "conv")) == 1


def test_layers_of_a_sequential_sub_model_called_twice_are_shared():
    backbone = keras.Sequential([keras.Input((6, 6, 1)), L.Conv2D(2, 3, padding="same", name="conv")], name="seq")
    inp = keras.Input((6, 6, 1))
    merged = L.Concatenate(name="merged")([backbone(inp), backbone(L.ReLU()(inp))])
    model = keras.Model(inp, L.Dense(2)(L.GlobalAveragePooling2D()(merged)))
    assert shared_call_count(resolve_layer(backbone, "conv")) == 1  # once in its own graph
    with pytest.raises(ValueError, match="2 times"):
        resolve_layer(model, "seq/conv")


def test_an_operation_object_as_layer_is_configured_by_name():
    model, add = _residual_model()
    cam = kg.GradCAM(model, layer=add)
    assert cam.layer == add.name and cam.get_config()["layer"] == add.name


def test_naming_the_models_input_says_it_is_the_input_and_lists_candidates():
    """The input layer is in the model but computes nothing: the error says so (not "is not in model")."""
    inp = keras.Input((8, 8, 3), name="image")
    x = L.Conv2D(2, 3, padding="same", name="conv")(inp)
    small = keras.Model(inp, L.Dense(2)(L.GlobalAveragePooling2D()(x)), name="small")
    for spec in ("image", small.inputs[0]._keras_history[0]):
        with pytest.raises(ValueError) as info:
            resolve_layer(small, spec)
        text = str(info.value)
        assert "is the input of model 'small'" in text and "no activations" in text, text
        assert "is not in model" not in text and "'conv'" in text, text
    seq = keras.Sequential([keras.Input((8, 8, 3), name="pixels"), L.Conv2D(2, 3, name="c")], name="seq")
    with pytest.raises(ValueError, match=r"'pixels' is the input of model 'seq'.*'c'"):
        resolve_layer(seq, "pixels")
    outer_in = keras.Input((8, 8, 3), name="outer_in")
    outer = keras.Model(outer_in, small(outer_in), name="outer")
    with pytest.raises(ValueError, match=r"'small/image' is the input of the model 'small' nested in model 'outer'.*'small/conv'"):
        resolve_layer(outer, "small/image")
    with pytest.raises(ValueError, match="'outer_in' is the input of model 'outer'"):
        kg.GradCAM(outer, layer="outer_in")
    with pytest.raises(ValueError, match="'nope' is not in model 'outer'"):  # a name that is nowhere: as before
        resolve_layer(outer, "nope")
