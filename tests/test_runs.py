"""kg.explain_dataset and kg.load_run: streamed, chunked, resumable runs on disk.

The model is tiny (a 1x1 convolution, global average pooling, a Dense head) with hand-set
weights, so Grad-CAM's layer map and score are worked out in numpy (``hand_gradcam``); every data
kind must give what ``kg.explain`` gives on the same arrays. Resuming is checked after a real
``kill -9`` of a child process and after a Ctrl-C (KeyboardInterrupt) in process.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_gradcam as kg
from keras_gradcam.runs.store import CHUNKS, MANIFEST, ChunkedArray

HERE = pathlib.Path(__file__).resolve().parent
KERNEL = np.array([[[[1.0, -0.5, 0.25], [0.5, 1.0, -1.0]]]], "float32")  # (1, 1, 2 in, 3 channels)
BIAS = np.array([0.1, 0.0, -0.2], "float32")
HEAD = np.array([[1.0, -1.0], [0.5, 2.0], [-0.5, 1.0]], "float32")  # (3 channels, 2 classes)
HEAD_BIAS = np.array([0.0, 0.3], "float32")


def tiny_model() -> keras.Model:
    inp = keras.Input((6, 6, 2))
    conv = keras.layers.Conv2D(3, 1, name="conv")
    dense = keras.layers.Dense(2, name="head")
    model = keras.Model(inp, dense(keras.layers.GlobalAveragePooling2D()(conv(inp))))
    conv.set_weights([KERNEL, BIAS])
    dense.set_weights([HEAD, HEAD_BIAS])
    return model


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, 6, 6, 2)).astype("float32")


def hand_gradcam(x: np.ndarray, target=None):
    """Grad-CAM by hand: A = x.W + b; logits = mean(A).H + c; map = ReLU(sum_k H[k, t] / 36 * A_k)."""
    acts = x @ KERNEL[0, 0] + BIAS  # (N, 6, 6, 3)
    logits = acts.mean(axis=(1, 2)) @ HEAD + HEAD_BIAS
    t = logits.argmax(1) if target is None else np.broadcast_to(target, (len(x),))
    weights = HEAD[:, t].T / 36.0  # dy/dA_k(ij) = H[k, t] / Z
    maps = np.maximum(np.einsum("nijk,nk->nij", acts, weights), 0)
    return maps, logits[np.arange(len(x)), t], t, logits.argmax(1)


class Counting(keras.utils.PyDataset):
    """Batches of 4 from fixed arrays, remembering which it was asked for; optionally slow."""

    def __init__(self, x, y, delay=0.0, **kwargs):
        super().__init__(**kwargs)
        self.x, self.y, self.delay, self.asked = x, y, delay, []

    def __len__(self):
        return -(-len(self.x) // 4)

    def __getitem__(self, i):
        self.asked.append(i)
        time.sleep(self.delay)
        return self.x[4 * i : 4 * i + 4], self.y[4 * i : 4 * i + 4]


def child(out: str) -> None:
    """What the killed child process runs: a slow PyDataset, one batch per chunk."""
    x = images(64)
    kg.explain_dataset(tiny_model(), Counting(x, np.arange(64) % 2, delay=0.15), method="gradcam",
                       out=out, batch_size=4, chunk_size=4, verbose=0)


def same_run(run, other) -> None:
    for field in ("heatmaps", "layer_heatmaps", "targets", "scores", "predictions", "labels", "finite"):
        a, b = getattr(run, field), getattr(other, field)
        assert (a is None) == (b is None), field
        if a is not None:
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=field)


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-zero maps of the random images
        yield


def test_maps_scores_and_targets_are_the_hand_computed_ones(tmp_path):
    x = images(10)
    run = kg.explain_dataset(tiny_model(), x, method="gradcam", out=tmp_path, batch_size=4, chunk_size=4, verbose=0)
    maps, scores, t, pred = hand_gradcam(x)
    np.testing.assert_allclose(run.layer_heatmaps[:], maps, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(run.scores[:], scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(run.targets[:], t)
    np.testing.assert_array_equal(run.predictions[:], pred)
    span = maps.max(axis=(1, 2), keepdims=True) - maps.min(axis=(1, 2), keepdims=True)
    expected = np.where(span > 1e-8, (maps - maps.min(axis=(1, 2), keepdims=True)) / np.where(span > 0, span, 1), 0)
    np.testing.assert_allclose(run.heatmaps[:], expected, atol=1e-5)  # 6x6 -> 6x6: the resize is the identity
    assert run.labels is None and run.finite[:].all() and run.complete and len(run) == 10
    assert [c["n"] for c in run.manifest["chunks"]] == [4, 4, 2]


def generator(x, y):
    for i in range(0, len(x), 4):
        yield x[i : i + 4], y[i : i + 4]


KINDS = {
    "arrays": lambda x, y: (x, y),
    "tf.data unbatched": lambda x, y: tf.data.Dataset.from_tensor_slices((x, y)),
    "tf.data batched": lambda x, y: tf.data.Dataset.from_tensor_slices((x, y)).batch(4),
    "tf.data fixed batches": lambda x, y: tf.data.Dataset.from_tensor_slices((x, y)).batch(5, drop_remainder=True),
    "PyDataset": lambda x, y: Counting(x, y),
    "generator": lambda x, y: generator(x, y),
    "list of batches": lambda x, y: list(generator(x, y)),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_data_kind_gives_what_explain_gives(kind, tmp_path):
    model, x, y = tiny_model(), images(10), np.arange(10) % 2
    run = kg.explain_dataset(model, KINDS[kind](x, y), method="gradcam++", targets="label", out=tmp_path,
                             batch_size=4, verbose=0)
    exp = kg.explain(model, x, method="gradcam++", targets=y, batch_size=4)
    for field in ("heatmaps", "layer_heatmaps", "targets", "scores", "predictions", "finite"):
        np.testing.assert_allclose(np.asarray(getattr(run, field)), getattr(exp, field), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(run.labels[:], y)
    assert run.layer == "conv" and run.method == "gradcam++"


def test_images_only_and_target_kinds(tmp_path):
    model, x = tiny_model(), images(6)
    run = kg.explain_dataset(model, tf.data.Dataset.from_tensor_slices(x), method="gradcam", targets=1,
                             out=tmp_path / "int", batch_size=4, verbose=0)
    maps, scores, _, _ = hand_gradcam(x, 1)
    np.testing.assert_allclose(run.layer_heatmaps[:], maps, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(run.targets[:], 1)
    assert run.labels is None
    run = kg.explain_dataset(model, x, method="gradcam", targets=kg.ClassTarget(1), out=tmp_path / "object",
                             batch_size=4, verbose=0)
    np.testing.assert_allclose(run.scores[:], scores, rtol=1e-5, atol=1e-6)
    assert run.targets is None  # a callable target has no class
    onehot = np.eye(2, dtype="float32")[[1, 0, 1, 1, 0, 0]]
    run = kg.explain_dataset(model, (x, onehot), method="gradcam", targets="label", out=tmp_path / "onehot", verbose=0)
    np.testing.assert_array_equal(run.targets[:], [1, 0, 1, 1, 0, 0])
    with pytest.raises(ValueError, match="targets='label' needs labels.*images only"):
        kg.explain_dataset(model, x, method="gradcam", targets="label", out=tmp_path / "none", verbose=0)


@pytest.mark.slow  # ~10 s: the child process imports TensorFlow
def test_kill_9_then_rerun_continues_after_the_last_complete_chunk(tmp_path):
    out = tmp_path / "killed"
    code = f"import sys; sys.path.insert(0, {str(HERE)!r}); import test_runs; test_runs.child({str(out)!r})"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(HERE.parent))
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if json.loads((out / MANIFEST).read_text())["n_samples"] >= 12:
                    break
            except (FileNotFoundError, json.JSONDecodeError):
                pass
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.05)
        else:
            pytest.fail("the child wrote no chunk in 90 s")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    before = kg.load_run(out)
    assert not before.complete and 12 <= len(before) < 64
    done = before.manifest["n_batches"]
    x, y = images(64), np.arange(64) % 2
    data = Counting(x, y)
    run = kg.explain_dataset(tiny_model(), data, method="gradcam", out=out, batch_size=4, chunk_size=4, verbose=0)
    assert data.asked == list(range(done, 16))  # the chunks written before the kill were not recomputed
    whole = kg.explain_dataset(tiny_model(), Counting(x, y), method="gradcam", out=tmp_path / "whole",
                               batch_size=4, chunk_size=4, verbose=0)
    assert run.complete and len(run) == 64
    same_run(run, whole)
    same_run(kg.load_run(out), whole)


class Interrupting:
    """Batches of 4, a KeyboardInterrupt (Ctrl-C) before batch ``stop``."""

    def __init__(self, x, stop=None):
        self.x, self.stop = x, stop

    def __iter__(self):
        for i in range(0, len(self.x), 4):
            if self.stop is not None and i // 4 == self.stop:
                raise KeyboardInterrupt
            yield self.x[i : i + 4]


@pytest.fixture
def explained(monkeypatch):
    """The number of batches explained (GradCAM.__call__ counted)."""
    calls = []
    original = kg.GradCAM.__call__

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(kg.GradCAM, "__call__", counting)
    return calls


def test_ctrl_c_keeps_the_batches_done_and_a_rerun_finishes(tmp_path, explained):
    x, model = images(40), tiny_model()
    args = dict(method="gradcam", out=tmp_path / "run", batch_size=4, chunk_size=8, verbose=0)
    with pytest.raises(KeyboardInterrupt):
        kg.explain_dataset(model, Interrupting(x, stop=5), **args)
    partial = kg.load_run(tmp_path / "run")
    assert len(partial) == 20 and not partial.complete  # 2 full chunks and the 5th batch, kept on Ctrl-C
    # a half-written chunk planted where the next one goes, and a half-written manifest, are never read
    chunks = tmp_path / "run" / CHUNKS
    for field in ("heatmaps", "scores"):
        (chunks / f"000003.{field}.npy").write_bytes(b"\x93NUMPY garbage")
    (tmp_path / "run" / (MANIFEST + ".partial")).write_text("{half")
    assert len(kg.load_run(tmp_path / "run")) == 20
    del explained[:]
    run = kg.explain_dataset(model, Interrupting(x), **args)
    assert len(explained) == 5  # batches 5 .. 9 only
    whole = kg.explain_dataset(model, Interrupting(x), **dict(args, out=tmp_path / "whole"))
    same_run(run, whole)
    np.testing.assert_allclose(run.layer_heatmaps[:], hand_gradcam(x)[0], rtol=1e-5, atol=1e-6)
    del explained[:]
    again = kg.explain_dataset(model, Interrupting(x, stop=0), **args)  # complete: the data is not read
    assert explained == [] and len(again) == 40


def test_other_arguments_are_refused_and_overwrite_replaces(tmp_path):
    model, x = tiny_model(), images(8)
    kg.explain_dataset(model, x, method="gradcam", out=tmp_path, batch_size=4, verbose=0)
    (tmp_path / "mine.txt").write_text("kept")
    with pytest.raises(ValueError, match=r"other arguments \(config.method: 'gradcam' there, 'gradcam\+\+' now.*overwrite=True"):
        kg.explain_dataset(model, x, method="gradcam++", out=tmp_path, batch_size=4, verbose=0)
    with pytest.raises(ValueError, match="targets: 'predicted' there, 'class 1' now"):
        kg.explain_dataset(model, x, method="gradcam", targets=1, out=tmp_path, batch_size=4, verbose=0)
    with pytest.raises(ValueError, match="data.n_samples: 8 there, 6 now"):
        kg.explain_dataset(model, x[:6], method="gradcam", out=tmp_path, batch_size=4, verbose=0)
    other = tiny_model()
    other.get_layer("head").set_weights([-HEAD, HEAD_BIAS])
    with pytest.raises(ValueError, match="weights_sha256"):
        kg.explain_dataset(other, x, method="gradcam", out=tmp_path, batch_size=4, verbose=0)
    run = kg.explain_dataset(other, x, method="gradcam", out=tmp_path, batch_size=4, verbose=0, overwrite=True)
    np.testing.assert_array_equal(run.targets[:], kg.explain(other, x, method="gradcam").targets)
    assert (tmp_path / "mine.txt").read_text() == "kept"  # overwrite removes the run's own files only


def test_bad_arguments_say_what_was_given(tmp_path):
    model, x = tiny_model(), images(4)
    with pytest.raises(TypeError, match="data must be a tf.data.Dataset.*got int"):
        kg.explain_dataset(model, 3, out=tmp_path, verbose=0)
    with pytest.raises(TypeError, match="out must be a folder path.*got NoneType"):
        kg.explain_dataset(model, x, out=None)
    with pytest.raises(TypeError, match="targets must be 'predicted', 'label', an int.*got list"):
        kg.explain_dataset(model, x, targets=[0, 1, 0, 1], out=tmp_path, verbose=0)
    with pytest.raises(ValueError, match="targets must be 'predicted', 'label'.*got 'labels'"):
        kg.explain_dataset(model, x, targets="labels", out=tmp_path, verbose=0)
    with pytest.raises(ValueError, match="data has 4 images but 3 labels"):
        kg.explain_dataset(model, (x, np.zeros(3)), out=tmp_path, verbose=0)
    with pytest.raises(ValueError, match="the dataset is infinite"):
        kg.explain_dataset(model, tf.data.Dataset.from_tensor_slices(x).repeat(), out=tmp_path, verbose=0)
    with pytest.raises(ValueError, match="the data is empty"):
        kg.explain_dataset(model, iter([]), out=tmp_path / "empty", verbose=0)
    with pytest.raises(FileNotFoundError, match="holds no explain_dataset run"):
        kg.load_run(tmp_path / "nothing")
    kg.Explanation(np.zeros((1, 6, 6), "float32"), np.zeros((1, 6, 6), "float32"), np.array([0]),
                   np.array([1.0], "float32"), "conv", "gradcam").save(tmp_path / "saved")
    with pytest.raises(ValueError, match="not the manifest of an explain_dataset run"):
        kg.load_run(tmp_path / "saved")


def test_model_unchanged_and_progress_on_stderr_only(tmp_path, capfd):
    model, x = tiny_model(), images(8)
    before = [w.copy() for w in model.get_weights()]
    kg.explain_dataset(model, x, method="gradcam", out=tmp_path / "a", batch_size=4, verbose=1)
    captured = capfd.readouterr()
    assert captured.out == "" and "8/8" in captured.err and "images/s" in captured.err
    kg.explain_dataset(model, x, method="gradcam", out=tmp_path / "b", batch_size=4, verbose=0)
    assert capfd.readouterr().err == ""
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_chunked_array_reads_like_the_joined_array(tmp_path):
    whole = np.arange(7 * 3, dtype="float32").reshape(7, 3)
    paths = []
    for i, part in enumerate((whole[:3], whole[3:5], whole[5:])):
        paths.append(str(tmp_path / f"{i}.npy"))
        np.save(paths[-1], part)
    arr = ChunkedArray(paths, [3, 2, 2], "<f4", (3,))
    assert arr.shape == (7, 3) and len(arr) == 7 and arr.ndim == 2
    for index in (0, -1, 4, slice(None), slice(2, 6), slice(1, 7, 2), slice(5, 2), [6, 0, 3], np.arange(7) % 2 == 0,
                  (slice(1, 5), 2), (np.array([4, 1]), slice(0, 2))):
        np.testing.assert_array_equal(arr[index], whole[index], err_msg=str(index))
    np.testing.assert_array_equal(np.asarray(arr), whole)
    np.testing.assert_array_equal(np.stack(list(arr)), whole)
    assert isinstance(arr.chunk(0), np.memmap)
    with pytest.raises(IndexError, match="index 7 is out of range for 7 samples"):
        arr[7]
    np.save(paths[1], whole[:1])  # a listed chunk changed behind the run's back
    with pytest.raises(ValueError, match="the manifest lists float32 of shape \\(2, 3\\).*overwrite=True"):
        ChunkedArray(paths, [3, 2, 2], "<f4", (3,))[3]


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads resident memory from /proc")
def test_memory_stays_flat_over_2000_images(tmp_path):
    """2,000 images of 64x64: 32 MB of heatmaps and 64 MB of images, none of it held."""
    inp = keras.Input((64, 64, 2))
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(
        keras.layers.Conv2D(2, 1, name="conv")(inp))))
    seen = {}

    def batches():
        rng = np.random.default_rng(0)
        for i in range(2000 // 50):
            if i in (8, 39):
                seen[i] = rss_mb()
            yield rng.uniform(-1, 1, (50, 64, 64, 2)).astype("float32")

    run = kg.explain_dataset(model, batches(), method="gradcam", out=tmp_path, batch_size=50, chunk_size=100, verbose=0)
    assert run.heatmaps.shape == (2000, 64, 64)
    assert seen[39] - seen[8] < 16, seen  # 1,550 images more: far less than their 25 MB of heatmaps


# -- labels of text, image sizes that change, runs of another format version -----------------------
def test_text_labels_are_stored_as_fixed_width_strings_widened_across_batches_and_chunks(tmp_path):
    """tf.data gives text labels as bytes objects: stored as numpy unicode, as wide as the longest label."""
    model, x = tiny_model(), images(10)
    names = ["cat", "dog", "horse", "cat", "ox", "cat", "hippopotamus", "dog", "eel", "cat"]
    data = tf.data.Dataset.from_tensor_slices((x, names)).batch(2)  # widths 3, 5, 3, 12, 3 over the batches
    run = kg.explain_dataset(model, data, method="gradcam", out=tmp_path / "a", batch_size=2, chunk_size=4, verbose=0)
    assert run.labels.dtype == np.dtype("<U12") and run.labels.shape == (10,)
    assert run.labels[:].tolist() == names and np.asarray(run.labels).tolist() == names
    assert run.labels[6] == "hippopotamus" and run.labels[[9, 2]].tolist() == ["cat", "horse"]
    assert kg.load_run(tmp_path / "a").labels[:].tolist() == names
    # the maps do not depend on the labels: those of the same images with int labels
    ref = kg.explain_dataset(model, (x, np.arange(10)), method="gradcam", out=tmp_path / "b", batch_size=2, verbose=0)
    np.testing.assert_array_equal(run.heatmaps[:], ref.heatmaps[:])
    # Python str labels from a generator, one chunk each, widening at the second chunk
    batches = [(x[:2], ["a", "b"]), (x[2:4], ["ccc", "dddd"])]
    run = kg.explain_dataset(model, iter(batches), method="gradcam", out=tmp_path / "c", chunk_size=2, verbose=0)
    assert run.labels[:].tolist() == ["a", "b", "ccc", "dddd"]
    with pytest.raises(ValueError, match="targets='label' needs class indices, but the labels are text"):
        kg.explain_dataset(model, data, targets="label", out=tmp_path / "e", verbose=0)
    with pytest.raises(TypeError, match="labels must be numbers or text.*got Python objects of type \\['dict'\\]"):
        kg.explain_dataset(model, iter([(x[:2], np.array([{}, {}], object))]), out=tmp_path / "d", verbose=0)


def test_an_image_size_that_changes_inside_a_chunk_is_named_and_the_batches_before_are_kept(tmp_path):
    inp = keras.Input((None, None, 2))
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(
        keras.layers.Conv2D(3, 1, name="conv")(inp))))
    rng = np.random.default_rng(0)
    batches = [rng.uniform(-1, 1, (2, 8, 8, 2)).astype("float32") for _ in range(3)]
    batches.insert(2, rng.uniform(-1, 1, (2, 6, 6, 2)).astype("float32"))
    # one chunk of 8 images would hold all four batches: the size changes inside it, at batch 2
    with pytest.raises(ValueError, match="batch 2 of the data gives images of 6x6, where the batches before had 8x8: "
                                         "every batch must have the same image size.*The 4 samples before it are saved"):
        kg.explain_dataset(model, iter(batches), method="gradcam", out=tmp_path, chunk_size=8, verbose=0)
    run = kg.load_run(tmp_path)
    assert len(run) == 4 and not run.complete and run.heatmaps.shape == (4, 8, 8)


def test_a_run_of_another_format_version_is_refused_naming_the_versions_read(tmp_path):
    model, x = tiny_model(), images(4)
    kg.explain_dataset(model, x, method="gradcam", out=tmp_path, batch_size=2, verbose=0)
    path = tmp_path / MANIFEST
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps(dict(manifest, version=2)))
    with pytest.raises(ValueError, match="holds a run of format version 2, written by keras-gradcam .*; this "
                                         "keras-gradcam reads runs of format version 1 only.*overwrite=True"):
        kg.load_run(tmp_path)
    with pytest.raises(ValueError, match="format version 2"):  # not resumed as if it were a version-1 run
        kg.explain_dataset(model, x, method="gradcam", out=tmp_path, batch_size=2, verbose=0)
    older = {k: v for k, v in manifest.items() if k not in ("version", "chunks")}
    path.write_text(json.dumps(dict(older, parts=[{"n": 4}])))
    with pytest.raises(ValueError, match="holds a run of an older layout, with no format version"):
        kg.load_run(tmp_path)
    # overwrite=True replaces it, as the message says
    run = kg.explain_dataset(model, x, method="gradcam", out=tmp_path, batch_size=2, overwrite=True, verbose=0)
    assert run.complete and len(run) == 4 and run.manifest["version"] == 1
