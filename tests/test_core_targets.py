"""Targets as data: class indices, target objects and callables go through one target type.

A callable is keyed by its code and the numbers it captures are passed as data, so a loop of
``lambda out, k=k: out[:, k]`` traces one function (issue 25); trace counts are counted as the
Python executions of the target (a compiled function runs the graph, not the Python), never timed.
"""

import warnings

import numpy as np
import pytest
from models import conv_gap_model
from oracles import close

import keras_gradcam as kg
from keras_gradcam.core.validate import ClassIndexError

X = np.random.default_rng(11).uniform(size=(3, 8, 8, 3)).astype(np.float32)
W_HEAD = np.array([[1.0, -0.5, 0.2], [0.3, 0.8, -1.0], [-0.4, 0.1, 0.9], [0.6, -0.2, 0.5]])


def build():
    kernel = np.random.default_rng(3).normal(size=(3, 3, 3, 4))
    return conv_gap_model(kernel, np.full(4, 0.1), W_HEAD, np.array([0.1, -0.1, 0.0]), input_shape=(8, 8, 3),
                          conv_activation="relu", activation=None, gap_name="gap")


SCALE = 1.0  # read by a helper the target calls


def scaled_first_class(out):
    return out[:, 0] * SCALE


def logits(model, x):
    return np.asarray(model(x), np.float64)


def test_sixty_lambdas_of_one_code_trace_once_and_each_explains_its_class():
    model = build()
    cam = kg.GradCAM(model, layer="conv")
    z = logits(model, X)
    runs = []  # one entry per execution of the target's Python: once per trace
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning about retracing
        for i in range(60):
            k = i % 3
            exp = cam(X, targets=lambda out, k=k: (runs.append(1), out[:, k])[1])
            close(exp.scores, z[:, k], atol=1e-5)
    assert len(runs) <= 2, f"60 lambdas of one code traced {len(runs)} functions"


def test_closure_cells_and_globals_are_read_on_every_call():
    """``lambda out: out[:, k]`` reads ``k`` from a closure cell (late binding): each call sees its value."""
    model = build()
    cam = kg.GradCAM(model, layer="conv")
    z = logits(model, X)
    for k in (2, 0, 1):
        close(cam(X, targets=lambda out: out[:, k]).scores, z[:, k], atol=1e-5)  # noqa: B023 - late binding on purpose
    for weight in (0.5, 2.0):
        close(cam(X, targets=lambda out: out[:, 0] * weight).scores, z[:, 0] * weight, atol=1e-5)  # noqa: B023
    assert cam._fns.traced == 2


def test_a_helper_function_reading_a_changed_global_is_never_stale():
    """Keyed by code, a target must still see what its helpers read: their captured numbers are part of the key."""
    global SCALE
    model = build()
    cam = kg.GradCAM(model, layer="conv")
    z = logits(model, X)
    try:
        for SCALE in (1.0, 3.0, -2.0):
            close(cam(X, targets=lambda out: scaled_first_class(out)).scores, z[:, 0] * SCALE, atol=1e-5)
    finally:
        SCALE = 1.0


def test_a_lambda_needing_python_values_is_traced_by_value_and_the_third_trace_says_what_to_pass():
    model = build()
    cam = kg.GradCAM(model, layer="conv")
    z = logits(model, X)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for k in (0, 1, 2):
            exp = cam(X, targets=lambda out, k=k: out[:, int(k)])  # int() of a tensor fails: traced by value
            close(exp.scores, z[:, k], atol=1e-5)
    said = [str(w.message) for w in caught if "third time" in str(w.message)]
    assert len(said) == 1 and "kg.ClassTarget(int(k))" in said[0], said
    assert caught[-1].filename == __file__  # at the user's line


def test_class_target_index_out_of_range_is_refused_before_tracing():
    cam = kg.GradCAM(build(), layer="conv")
    with pytest.raises(ClassIndexError, match=r"0 \.\. 2"):
        cam(X, targets=kg.ClassTarget(3))
    assert cam._fns.traced == 0


def test_every_kind_of_target_with_batch_size_one_matches_one_batch():
    model = build()
    z = logits(model, X)
    for targets, expected in [(None, z.max(axis=1)), (1, z[:, 1]), ([2, 0, 1], z[[0, 1, 2], [2, 0, 1]]),
                              (kg.ClassTarget(2), z[:, 2]), (kg.OutputTarget(), z.sum(axis=1)),
                              (lambda out: out[:, 0] - out[:, 1], z[:, 0] - z[:, 1])]:
        one = kg.GradCAM(model, layer="conv", batch_size=1)(X, targets=targets)
        whole = kg.GradCAM(model, layer="conv")(X, targets=targets)
        close(one.scores, expected, atol=1e-5)
        close(one.layer_heatmaps, whole.layer_heatmaps, atol=1e-5)


def test_warnings_point_at_the_users_line_through_every_entry_point():
    """An all-zero map warns at the caller's line, whether it called the explainer or kg.explain."""
    head = W_HEAD.copy()
    head[:, 2] = 0.0  # class 2 does not depend on the layer: every gradient is zero
    kernel = np.random.default_rng(3).normal(size=(3, 3, 3, 4))
    model = conv_gap_model(kernel, np.full(4, 0.1), head, np.zeros(3), input_shape=(8, 8, 3),
                           conv_activation="relu", activation=None, gap_name="gap")
    for run in (lambda: kg.GradCAM(model, layer="conv")(X, targets=2),
                lambda: kg.explain(model, X, method="gradcam", layer="conv", targets=2),
                lambda: kg.explain(model, X, method="gradcam++", layer="conv", targets=2, batch_size=1)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run()
        said = [w for w in caught if "exactly zero" in str(w.message)]
        assert said and all(w.filename == __file__ for w in said), [(w.filename, w.lineno) for w in said]
