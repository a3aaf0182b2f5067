"""``keras_gradcam.beam.CAMModelHandler``: Beam's ``RunInference`` explains what ``explain_dataset`` does.

The pipeline runs on Beam's DirectRunner over 200 small images; its heatmaps, targets, scores and
predictions must be those of ``kg.explain_dataset`` on the same model and images (the handler
loads the model back from its ``.keras`` file, as a worker would). Skipped without the ``[beam]``
extra (``make test-beam`` installs it in its own virtual environment); the first test, that
``import keras_gradcam`` does not import Beam, runs everywhere.
"""

from __future__ import annotations

import ast
import pathlib
import pickle

import numpy as np
import pytest

import keras_gradcam as kg
from tests.models import conv_gap_model

ROOT = pathlib.Path(kg.__file__).parent
N, SIZE = 200, 12


def test_only_the_beam_module_imports_beam_and_nothing_imports_it():
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if isinstance(node, ast.ImportFrom) and node.level and node.module is None:
                names = [a.name for a in node.names]  # from . import beam
            for name in names:
                if path.name != "beam.py":
                    assert not name.startswith("apache_beam"), f"{path} imports {name}"
                assert name not in ("beam", "keras_gradcam.beam"), f"{path} imports the beam module"


@pytest.fixture(scope="module")
def beam():
    return pytest.importorskip("apache_beam")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A conv -> GAP -> Dense model with seeded weights, saved, and 200 images with labels."""
    rng = np.random.default_rng(0)
    model = conv_gap_model(rng.normal(size=(3, 3, 3, 4)), rng.normal(size=4) * 0.1, rng.normal(size=(4, 3)),
                           np.zeros(3), input_shape=(SIZE, SIZE, 3), conv_activation="relu")
    path = tmp_path_factory.mktemp("beam") / "model.keras"
    model.save(path)
    images = rng.random((N, SIZE, SIZE, 3)).astype("float32")
    labels = rng.integers(0, 3, N)
    return model, str(path), images, labels


def _pipeline(beam, handler, elements, folder) -> dict:
    """``elements`` keyed by index through ``RunInference(KeyedModelHandler(handler))``; results by index.

    The matcher runs on a pickled copy, so it writes what it found to ``folder`` for the test to read.
    """
    from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
    from apache_beam.testing.util import assert_that

    out_file = str(folder / "found.pkl")

    def keep(found):
        with open(out_file, "wb") as f:
            pickle.dump(dict(found), f)

    with beam.Pipeline(runner="DirectRunner") as p:
        out = (p | beam.Create(list(enumerate(elements)))
                 | RunInference(KeyedModelHandler(handler))
                 | beam.Map(lambda kv: (kv[0], kv[1].inference)))
        assert_that(out, keep)
    with open(out_file, "rb") as f:
        return pickle.load(f)


@pytest.mark.parametrize("targets", ["predicted", "label"])
def test_pipeline_on_the_direct_runner_equals_explain_dataset(beam, saved, tmp_path, targets):
    from keras_gradcam.beam import CAMModelHandler

    model, path, images, labels = saved
    data = images if targets == "predicted" else (images, labels)
    run = kg.explain_dataset(model, data, method="gradcam", layer="conv", targets=targets, out=tmp_path / "run",
                             batch_size=32, verbose=0)
    elements = list(images) if targets == "predicted" else list(zip(images, labels))
    found = _pipeline(beam, CAMModelHandler(path, "gradcam", "conv", targets=targets, batch_size=32), elements,
                      tmp_path)
    assert sorted(found) == list(range(N))
    heat = np.stack([found[i].heatmap for i in range(N)])
    assert heat.shape == (N, SIZE, SIZE) and heat.dtype == np.float32
    # Beam batches the elements its own way (other batch sizes): the same maps, up to float round-off
    np.testing.assert_allclose(heat, np.asarray(run.heatmaps), rtol=0, atol=1e-6)  # bit-identical on 2 CPU cores
    assert [found[i].target for i in range(N)] == list(np.asarray(run.targets))
    assert [found[i].prediction for i in range(N)] == list(np.asarray(run.predictions))
    np.testing.assert_allclose([found[i].score for i in range(N)], np.asarray(run.scores), rtol=1e-5, atol=1e-6)
    assert all(found[i].finite for i in range(N))
    if targets == "label":
        assert [found[i].target for i in range(N)] == list(labels)


def test_run_inference_explains_a_batch_as_explain_does(beam, saved):
    from apache_beam.ml.inference.base import PredictionResult

    from keras_gradcam.beam import CAMModelHandler, CAMResult

    model, path, images, _ = saved
    handler = CAMModelHandler(path, "gradcam", "conv", targets=1, batch_size=8)
    assert handler.batch_elements_kwargs() == {"max_batch_size": 8}
    assert CAMModelHandler(path, min_batch_size=4, batch_size=8).batch_elements_kwargs() == {
        "min_batch_size": 4, "max_batch_size": 8}
    explainer = handler.load_model()
    assert isinstance(explainer, kg.GradCAM) and explainer.model is not model
    batch = list(images[:5])
    results = handler.run_inference(batch, explainer)
    expected = kg.explain(model, images[:5], method="gradcam", layer="conv", targets=1)
    assert all(isinstance(r, PredictionResult) and isinstance(r.inference, CAMResult) for r in results)
    assert all(r.example is e for r, e in zip(results, batch)) and {r.model_id for r in results} == {path}
    np.testing.assert_array_equal(np.stack([r.inference.heatmap for r in results]), expected.heatmaps)
    assert [r.inference.target for r in results] == [1] * 5
    # inference_args may override the targets for the pipeline
    again = handler.run_inference(batch, explainer, {"targets": 2})
    assert [r.inference.target for r in again] == [2] * 5
    assert handler.get_num_bytes(batch) == 5 * SIZE * SIZE * 3 * 4


def test_handler_errors_name_the_argument(beam, saved):
    from keras_gradcam.beam import CAMModelHandler

    _, path, images, _ = saved
    with pytest.raises(ValueError, match="targets must be 'predicted', 'label'"):
        CAMModelHandler(path, targets="labels")
    with pytest.raises(TypeError, match="targets must be"):
        CAMModelHandler(path, targets=1.5)
    with pytest.raises(ValueError, match="min_batch_size \\(9\\) must be at most batch_size \\(8\\)"):
        CAMModelHandler(path, batch_size=8, min_batch_size=9)
    with pytest.raises(ValueError, match="Unknown method|unknown method|not a method"):
        CAMModelHandler(path, method="no-such-cam")
    handler = CAMModelHandler(path, "gradcam", "conv", targets="label")
    with pytest.raises(ValueError, match="inference_args takes only 'targets'"):
        handler.validate_inference_args({"batch_size": 3})
    with pytest.raises(ValueError, match=r"\(image, class_index\) pair"):
        handler.run_inference(list(images[:2]), handler.load_model())
