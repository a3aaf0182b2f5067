"""explain_dataset and audit under tf.distribute: the results of a single-device run, bit for bit.

Two logical CPU devices must be configured before TensorFlow starts, so the ``MirroredStrategy``
check runs in a child process (``mirrored_child``); the multi-worker check starts two worker
processes on 127.0.0.1 with ``TF_CONFIG`` (``worker_child``). The sharding, joining and per-worker
resuming are also checked in process, with two workers played by two threads.

What is compared: every field of a Grad-CAM run, with ``assert_array_equal`` (bit-identical):
each sample's map depends on that sample alone. A Grad-CAM++ run split over two devices is
compared within float32 rounding (1e-6): its maps were seen to differ by one ulp in a few pixels. The maps are also checked against the
numpy Grad-CAM of ``test_runs.hand_gradcam``.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest
import tensorflow as tf
from test_runs import Counting, hand_gradcam, images, same_run, tiny_model

import keras_gradcam as kg
from keras_gradcam.runs.distribute import Placement, joined_manifest, placement, shard
from keras_gradcam.runs.store import MANIFEST

explain_dataset_module = sys.modules["keras_gradcam.runs.explain_dataset"]  # the name is the function's
distribute_module = sys.modules["keras_gradcam.runs.distribute"]
HERE = pathlib.Path(__file__).resolve().parent
N = 11  # not a multiple of the batch size (4) nor of the two devices: the padding is exercised


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-zero maps of the random images
        yield


def data():
    x = images(N, seed=3)
    return x, np.arange(N) % 2


def single(tmp_path, method="gradcam", batch_size=4):
    x, y = data()
    return kg.explain_dataset(tiny_model(), (x, y), method=method, out=tmp_path / f"single-{method}-{batch_size}",
                              batch_size=batch_size, chunk_size=4, verbose=0)


def _child_env() -> dict:
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join([str(HERE.parent), str(HERE)]))


def _run_child(code: str, env: dict, timeout: float):
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == 0, err.decode()[-3000:]
    return out.decode()


# -- in process: the placement, the shares, the joined manifest ---------------------------------
def test_shard_cuts_contiguous_ranges_that_cover_every_batch_once():
    for n in (0, 1, 2, 3, 7, 10):
        for workers in (1, 2, 3, 4):
            ranges = [shard(n, w, workers) for w in range(workers)]
            assert ranges[0][0] == 0 and ranges[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
            sizes = [b - a for a, b in ranges]
            assert max(sizes) - min(sizes) <= 1
    assert [shard(5, w, 2) for w in range(2)] == [(0, 2), (2, 5)]


def test_no_strategy_is_the_default_placement_and_a_wrong_kind_says_what_is_expected():
    assert placement(tiny_model()) == Placement(None, None, 0, 1)
    with pytest.raises(TypeError, match=r"strategy must be a tf.distribute.Strategy .* got builtins.str"):
        placement(tiny_model(), "mirrored")


def test_a_strategy_given_or_from_the_scope_or_the_model_gives_its_devices():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    device = "/job:localhost/replica:0/task:0/device:CPU:0"
    assert placement(tiny_model(), strategy) == Placement(strategy, (device,), 0, 1)
    with strategy.scope():
        model = tiny_model()
        assert placement(tiny_model()).strategy is strategy  # the scope's
    assert placement(model).strategy is strategy  # the model's, outside the scope


def test_a_one_device_strategy_gives_the_single_device_run(tmp_path):
    x, y = data()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = tiny_model()
    run = kg.explain_dataset(model, (x, y), method="gradcam", out=tmp_path / "one", batch_size=4, chunk_size=4, verbose=0)
    same_run(run, single(tmp_path))
    maps, scores, t, _ = hand_gradcam(x)
    np.testing.assert_allclose(run.scores[:], scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(run.targets[:], t)


def test_an_explainer_traced_in_a_strategy_scope_explains_outside_it_the_same():
    # a tf.function retraces in another context (in or out of a scope); the engine keeps the traced
    # concrete function, so no retrace runs without the capture's interception
    x = data()[0]
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    explainer = kg.get_method("gradcam")(tiny_model(), batch_size=4)
    with strategy.scope():
        inside = explainer(x)
    outside = explainer(x)
    np.testing.assert_array_equal(inside.heatmaps, outside.heatmaps)
    maps, _, _, _ = hand_gradcam(x)
    np.testing.assert_allclose(outside.layer_heatmaps, maps, rtol=1e-5, atol=1e-6)


def test_a_method_with_its_own_passes_warns_that_they_are_not_split(tmp_path):
    x, y = data()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with pytest.warns(RuntimeWarning, match=r"scorecam runs its own passes .* not split across the 1 devices"):
        run = kg.explain_dataset(tiny_model(), x[:4], method="scorecam", out=tmp_path / "s", strategy=strategy,
                                 verbose=0)
    alone = kg.explain(tiny_model(), x[:4], method="scorecam")
    np.testing.assert_allclose(run.heatmaps[:], alone.heatmaps, atol=1e-6)


def test_joined_manifest_lists_each_workers_chunks_in_order():
    fields = {"scores": {"dtype": "<f4", "shape": []}}
    shares = [
        {"fields": fields, "layer": "conv", "chunks": [{"start": 0, "n": 4, "batches": 1}, {"start": 4, "n": 2, "batches": 1}]},
        {"fields": None, "layer": None, "chunks": []},  # a worker with no batch
        {"fields": fields, "layer": "conv", "chunks": [{"start": 0, "n": 3, "batches": 1}]},
    ]
    joined = joined_manifest({"format": "x", "complete": False}, shares)
    assert [(c["start"], c["n"], c["folder"], c["index"]) for c in joined["chunks"]] == [
        (0, 4, os.path.join("workers", "000", "chunks"), 0), (4, 2, os.path.join("workers", "000", "chunks"), 1),
        (6, 3, os.path.join("workers", "002", "chunks"), 0)]
    assert (joined["n_samples"], joined["n_batches"], joined["complete"], joined["layer"]) == (9, 3, True, "conv")



def test_joined_manifest_widens_text_labels_and_names_an_image_size_that_differs():
    def share(width, size):
        return {"fields": {"labels": {"dtype": f"<U{width}", "shape": []}, "heatmaps": {"dtype": "<f4", "shape": size}},
                "layer": "conv", "chunks": [{"start": 0, "n": 2, "batches": 1}]}

    joined = joined_manifest({"format": "x"}, [share(3, [8, 8]), share(12, [8, 8]), share(5, [8, 8])])
    assert joined["fields"]["labels"]["dtype"] == "<U12"  # the longest label of any worker
    with pytest.raises(ValueError, match="worker 1's share gives images of 6x6, where the batches before had 8x8"):
        joined_manifest({"format": "x"}, [share(3, [8, 8]), share(3, [6, 6])])

def _two_workers(monkeypatch, tmp_path, make_data, out, **kwargs):
    """Run explain_dataset as worker 1 (a thread) and worker 0 (here), each placed by a patched placement()."""
    local = threading.local()
    results, errors = {}, []

    def work(w, source):
        local.w = w
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                results[w] = kg.explain_dataset(tiny_model(), source, method="gradcam", out=out, batch_size=4,
                                                chunk_size=4, verbose=0, **kwargs)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    sources = [make_data(), make_data()]
    with monkeypatch.context() as patch:
        patch.setattr(explain_dataset_module, "placement", lambda model, strategy=None: Placement(None, None, local.w, 2))
        patch.setattr(distribute_module, "WAIT_S", 60.0)
        other = threading.Thread(target=work, args=(1, sources[1]), daemon=True)
        other.start()
        work(0, sources[0])
        other.join(timeout=120)
    assert not other.is_alive() and not errors, errors
    return results, sources


def test_two_workers_share_the_batches_and_the_chief_joins_them(monkeypatch, tmp_path):
    x, y = data()
    out = tmp_path / "shared"
    results, sources = _two_workers(monkeypatch, tmp_path, lambda: Counting(x, y), out)
    assert sorted(sources[0].asked) == [0] and sorted(sources[1].asked) == [1, 2]  # 3 batches: 1 + 2
    for w in (0, 1):
        assert results[w].complete and len(results[w]) == N
        same_run(results[w], single(tmp_path))
    assert sorted(os.listdir(out / "workers")) == ["000", "001"]
    same_run(kg.load_run(out), single(tmp_path))


def test_each_worker_resumes_its_own_share(monkeypatch, tmp_path):
    x, y = data()
    out = tmp_path / "resumed"
    _two_workers(monkeypatch, tmp_path, lambda: Counting(x, y), out)
    # as if worker 1 was killed after its first chunk, and the chief before joining
    os.remove(out / MANIFEST)
    path = out / "workers" / "001" / MANIFEST
    manifest = json.loads(path.read_text())
    first = manifest["chunks"][0]
    manifest.update(complete=False, chunks=[first], n_samples=first["n"], n_batches=first["batches"])
    path.write_text(json.dumps(manifest))
    results, sources = _two_workers(monkeypatch, tmp_path, lambda: Counting(x, y), out)
    assert sources[0].asked == [] and sources[1].asked == [2]  # nothing explained twice
    same_run(results[0], single(tmp_path))
    same_run(kg.load_run(out), single(tmp_path))


def test_several_workers_need_data_of_known_length_and_refuse_overwrite(monkeypatch, tmp_path):
    monkeypatch.setattr(explain_dataset_module, "placement", lambda model, strategy=None: Placement(None, None, 0, 2))
    x, _ = data()
    with pytest.raises(ValueError, match=r"over 2 workers .* needs the data's length.*iterable"):
        kg.explain_dataset(tiny_model(), (b for b in [x[:4], x[4:]]), method="gradcam", out=tmp_path / "g", verbose=0)
    with pytest.raises(ValueError, match=r"overwrite=True is not supported over 2 workers.*Remove"):
        kg.explain_dataset(tiny_model(), x, method="gradcam", out=tmp_path / "o", overwrite=True, verbose=0)
    assert not (tmp_path / "o").exists()


# -- two logical CPU devices, MirroredStrategy (child processes) --------------------------------
def mirrored_child(out: str, part: str) -> None:
    """Explain under MirroredStrategy over two logical CPUs.

    ``part="plain"``: Grad-CAM by argument, by scope and by the model's strategy, and the devices
    the compiled function runs on; ``part="more"``: Grad-CAM++ with passes of 5, and the audit.
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    out = pathlib.Path(out)
    x, y = data()
    common = {"batch_size": 4, "chunk_size": 4, "verbose": 0}
    with strategy.scope():
        model = tiny_model()
    if part == "more":
        kg.explain_dataset(model, (x, y), method="gradcam++", out=out / "plusplus", **dict(common, batch_size=5))
        report = kg.audit(model, x, y, method="gradcam", batch_size=4, min_images=2, strategy=strategy)
        np.save(out / "audit_heatmaps.npy", report.mean_heatmaps)
        return
    kg.explain_dataset(tiny_model(), (x, y), method="gradcam", out=out / "argument", strategy=strategy, **common)
    with strategy.scope():
        kg.explain_dataset(model, tf.data.Dataset.from_tensor_slices((x, y)), method="gradcam", out=out / "scope", **common)
    kg.explain_dataset(model, (x, y), method="gradcam", out=out / "model", **common)
    explainer = kg.get_method("gradcam")(model, batch_size=4)
    explainer.devices = tuple(strategy.extended.worker_devices)
    explainer(x)
    devices = {op.device for fn in explainer._fns.values() for op in fn.graph.get_operations()}
    print(json.dumps({"devices": sorted(d for d in devices if d)}))


def _mirrored(tmp_path, part: str) -> str:
    return _run_child(f"import test_distributed as t; t.mirrored_child({str(tmp_path)!r}, {part!r})", _child_env(), 240)


def test_mirrored_strategy_over_two_cpus_gives_the_single_device_run_bit_for_bit(tmp_path):
    devices = json.loads(_mirrored(tmp_path, "plain").strip().splitlines()[-1])["devices"]
    assert any(d.endswith("CPU:0") for d in devices) and any(d.endswith("CPU:1") for d in devices), devices
    reference = single(tmp_path)
    for name in ("argument", "scope", "model"):
        run = kg.load_run(tmp_path / name)
        assert run.complete and len(run) == N
        same_run(run, reference)
    maps, scores, t, _ = hand_gradcam(data()[0])
    assert maps.reshape(N, -1).max(1).min() > 0  # no map is all zero: the comparison sees real maps
    np.testing.assert_allclose(reference.layer_heatmaps[:], maps, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(reference.scores[:], scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(reference.targets[:], t)


def test_mirrored_gradcam_plus_plus_and_audit_match_the_single_device_ones(tmp_path):
    _mirrored(tmp_path, "more")
    # Grad-CAM++ split 3 + 3 over the devices: equal to float32 rounding, not bit for bit (seen: 1 ulp)
    plusplus, alone = kg.load_run(tmp_path / "plusplus"), single(tmp_path, "gradcam++", batch_size=5)
    for field in ("heatmaps", "layer_heatmaps", "scores"):
        np.testing.assert_allclose(getattr(plusplus, field)[:], getattr(alone, field)[:], rtol=1e-6, atol=1e-6)
    for field in ("targets", "predictions", "labels", "finite"):
        np.testing.assert_array_equal(getattr(plusplus, field)[:], getattr(alone, field)[:])
    x, y = data()
    report = kg.audit(tiny_model(), x, y, method="gradcam", batch_size=4, min_images=2)
    np.testing.assert_array_equal(np.load(tmp_path / "audit_heatmaps.npy"), report.mean_heatmaps)


# -- two worker processes on 127.0.0.1, MultiWorkerMirroredStrategy -----------------------------
def worker_child(out: str) -> None:
    """One worker of a two-worker cluster (TF_CONFIG set by the test): the model made in the strategy's scope."""
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        model = tiny_model()
    x, y = data()
    run = kg.explain_dataset(model, (x, y), method="gradcam", out=out, batch_size=4, chunk_size=4, verbose=0)
    print(json.dumps({"n": len(run), "complete": run.complete}))


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.mark.slow  # two processes import TensorFlow and start a cluster: 11 s idle, 38 s on 2 busy cores
def test_two_worker_processes_with_tf_config_give_the_single_device_run(tmp_path):
    out = tmp_path / "cluster"
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    code = f"import test_distributed as t; t.worker_child({str(out)!r})"
    procs = []
    try:
        for i in range(2):
            env = dict(_child_env(), TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}))
            procs.append(subprocess.Popen([sys.executable, "-c", code], env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        outputs = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
    for p, (o, e) in zip(procs, outputs):
        assert p.returncode == 0, e.decode()[-3000:]
        assert json.loads(o.decode().strip().splitlines()[-1]) == {"n": N, "complete": True}
    run = kg.load_run(out)
    assert run.manifest["workers"] == 2 and sorted(os.listdir(out / "workers")) == ["000", "001"]
    same_run(run, single(tmp_path))
