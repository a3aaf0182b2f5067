"""``explain_dataset()``: a whole dataset explained batch by batch into a resumable run on disk."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import time
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import keras
import numpy as np

from ..core.inputs import model_inputs
from ..core.progress import Progbar
from ..core.validate import boolean, integer, one_of, positive_int
from ..io import library_versions
from ..methods.registry import get_method, merge_options
from .distribute import (
    Placement,
    complete_share,
    joined_manifest,
    placement,
    shard,
    split_passes,
    wait_for,
    worker_folder,
)
from .run import Run
from .store import RunStore, describe_difference, fields_of, merge_fields, read_manifest, storable_labels
from .stream import batch_length, open_source

__all__ = ["explain_dataset", "weights_digest"]

HEATMAP_BYTES_PER_CHUNK = 32 * 2**20  # default chunk: whole batches holding about this many bytes of heatmaps

# the last few explainers, so that a second run over the same model (another dataset, a resumed
# run) reuses their compiled functions instead of tracing again; bounded, as an explainer holds its model
_EXPLAINERS: OrderedDict = OrderedDict()
_EXPLAINERS_KEPT = 4


def _explainer(cls, model, layer, batch_size: int, options: dict):
    """One explainer per (model, method, layer, options, batch size), the last few kept."""
    plain = (str, int, float, bool, type(None))
    simple = isinstance(layer, plain) and all(isinstance(v, plain) for v in options.values())
    key = (id(model), cls, layer, tuple(sorted(options.items())), batch_size) if simple else None
    found = _EXPLAINERS.get(key) if key is not None else None
    if found is not None and found.model is model:
        _EXPLAINERS.move_to_end(key)
        return found
    explainer = cls(model, layer, batch_size=batch_size, **options)
    if key is not None:
        _EXPLAINERS[key] = explainer
        while len(_EXPLAINERS) > _EXPLAINERS_KEPT:
            _EXPLAINERS.popitem(last=False)
    return explainer


def weights_digest(model: keras.Model) -> str:
    """SHA-256 of the model's weights (values, shapes and dtypes, in order): the same model, or not.

    Weight names are left out: Keras numbers unnamed layers per process (``dense_3``), so the
    same model rebuilt in another process would otherwise look different.
    """
    digest = hashlib.sha256()
    for w in model.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(w.value))
        digest.update(f"{value.dtype.str}:{value.shape};".encode())  # not the names: Keras numbers them per process
        digest.update(value.tobytes())
    return digest.hexdigest()


def _targets_spec(targets) -> tuple[Any, str]:
    """``targets=`` checked: what the explainer takes per batch (or ``"label"``), and its fingerprint."""
    if targets is None or (isinstance(targets, str) and targets == "predicted"):
        return None, "predicted"
    if isinstance(targets, str):
        one_of("targets", targets, ("predicted", "label"),
               expected="'predicted', 'label', an int class index, or a target object / callable")
        return "label", "label"
    if callable(targets):
        name = repr(targets) if not hasattr(targets, "__qualname__") else f"{targets.__module__}.{targets.__qualname__}"
        return targets, f"callable {re.sub(' at 0x[0-9a-f]+', '', name)}"
    if isinstance(targets, (bool, np.bool_)) or not isinstance(targets, (int, np.integer)):
        raise TypeError(
            f"targets must be 'predicted', 'label', an int class index, or a target object / callable as in "
            f"kg.explain; got {type(targets).__name__}. For one class per sample, give the classes as the data's "
            "labels and pass targets='label'."
        )
    value = integer("targets", targets)
    if value < 0:
        raise ValueError(f"targets must be a class index >= 0; got {value}.")
    return value, f"class {value}"


def _label_targets(labels, batch: int) -> np.ndarray:
    """The class index of each sample from its label: ints ``(B,)`` or ``(B, 1)``, or one-hot ``(B, C)``."""
    if labels is None:
        raise ValueError(
            "targets='label' needs labels, but the data gives images only; give (images, labels) batches, or use "
            "targets='predicted'."
        )
    a = np.asarray(labels)
    if a.dtype.kind in "SUO":
        raise ValueError(
            f"targets='label' needs class indices, but the labels are text (e.g. {a.ravel()[:3].tolist()}); map the "
            "names to the model's class indices in the data (e.g. a tf.lookup.StaticHashTable in dataset.map), or "
            "use targets='predicted'."
        )
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    elif a.ndim == 2:
        a = a.argmax(axis=1)  # one-hot or per-class scores
    if a.ndim != 1 or len(a) != batch or a.dtype.kind not in "iuf" or (a.dtype.kind == "f" and not np.all(a == np.round(a))):
        raise ValueError(
            f"targets='label' needs one class index per image (ints of shape ({batch},)) or one-hot labels of "
            f"shape ({batch}, classes); got labels of dtype {np.asarray(labels).dtype} and shape {np.asarray(labels).shape}."
        )
    return a.astype(np.int64)


def _plain(value):
    """``value`` as JSON would give it back, so a fingerprint compares equal to the stored one."""
    return json.loads(json.dumps(value, default=repr))


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(old) | set(new))
    out = []
    for k in keys:
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} there, {b!r} now")
    return out


class _Warnings:
    """The warnings of every batch, said once per kind at the end, their counts summed over the batches."""

    COUNT = re.compile(r"(\d+) of (\d+) ")

    def __init__(self):
        self.seen: dict[tuple, list] = {}

    def record(self, caught) -> None:
        for w in caught:
            text = str(w.message)
            found = self.COUNT.search(text)
            key = (w.category, self.COUNT.sub("", text, count=1))
            entry = self.seen.setdefault(key, [text, 0, 0])
            if found:
                entry[1] += int(found.group(1))
                entry[2] += int(found.group(2))

    def emit(self) -> None:
        for (category, _), (text, bad, total) in self.seen.items():
            if total:
                text = self.COUNT.sub(f"{bad} of {total} ", text, count=1)
            warnings.warn(text, category, stacklevel=4)


def explain_dataset(
    model: keras.Model,
    data,
    method: str = "gradcam++",
    layer=None,
    targets: str | int | Callable | None = "predicted",
    *,
    out,
    batch_size: int = 64,
    chunk_size: int | None = None,
    overwrite: bool = False,
    verbose: int = 1,
    strategy=None,
    method_options: dict | None = None,
    **options,
) -> Run:
    """Explain a whole dataset, batch by batch, into a resumable run on disk.

    The data is read once, batch by batch, through one explainer (compiled once); the results go
    to ``out`` in chunks as they come, so memory stays flat whatever the number of samples, and a
    run that is interrupted (Ctrl-C, ``kill -9``, a crash) continues after its last complete chunk
    when called again with the same arguments.

    Parameters
    ----------
    model : keras.Model
        The model to explain; it is not modified.
    data : tf.data.Dataset, keras.utils.PyDataset, iterable of batches, array or tuple of arrays
        A ``tf.data.Dataset`` of images or of ``(images, labels)`` / ``(images, labels, masks)``
        tuples, batched or not (an unbatched one is batched by ``batch_size``); a
        ``keras.utils.PyDataset`` (its batches as they are); a generator, iterator or list of
        batches, each an array or an ``(images, labels[, masks])`` tuple; or the arrays
        themselves: ``images`` or ``(images, labels)`` (a dict of arrays for a multi-input model).
        Masks are read past (for the audit), not stored.
    method : str, default="gradcam++"
        A name from :data:`keras_gradcam.METHODS`, or a :class:`~keras_gradcam.BaseCAM` subclass.
    layer : str, keras.layers.Layer or None, default=None
        As in :func:`keras_gradcam.explain`.
    targets : {"predicted", "label"}, int or callable, default="predicted"
        ``"predicted"`` explains each sample's top-1 class; ``"label"`` its label (ints, or
        one-hot rows); an int the same class for all; a target object
        (:class:`~keras_gradcam.ClassTarget`, :class:`~keras_gradcam.OutputTarget`) or callable
        ``outputs -> (batch,)`` any score, as in :func:`keras_gradcam.explain`.
    out : str or os.PathLike
        The run folder (created if missing).
    batch_size : int, default=64
        Images per pass (and per batch of an unbatched dataset or of arrays).
    chunk_size : int, optional
        Samples per chunk on disk, rounded up to whole batches. Default: whole batches making
        about 32 MiB of heatmaps. A kill loses at most the chunk being filled.
    overwrite : bool, default=False
        Replace a run of other arguments in ``out`` (its manifest and chunks; nothing else in the
        folder is touched).
    verbose : {0, 1, 2}, default=1
        1: a progress bar on standard error (images, images/s, time left when the length is
        known); 2: one line at the end; 0: silent.
    strategy : tf.distribute.Strategy, optional
        Explain under this strategy (default: the ``strategy.scope()`` the call is made in, else
        the one the model was created under, else none). ``MirroredStrategy``: every pass of
        ``batch_size`` images is split across the machine's devices. ``MultiWorkerMirroredStrategy``:
        each worker explains a contiguous share of the batches into ``out/workers/<index>/``, the
        chief writes the manifest that joins them, and every worker returns the whole run;
        ``out`` must be a folder all workers share. The results equal a single-device run's;
        see docs/distributed.md.
    method_options : dict, optional
        The method's options as a dict, merged with ``**options``.
    **options
        Method options (``counterfactual=True``, ``n_samples=``, ...), as in :func:`keras_gradcam.explain`.

    Returns
    -------
    Run
        The results, memory-mapped from ``out``: ``run.heatmaps``, ``run.layer_heatmaps``,
        ``run.targets``, ``run.scores``, ``run.predictions``, ``run.labels``, ``run.finite``.
        :func:`keras_gradcam.load_run` gives the same object later.

    Raises
    ------
    ValueError
        ``out`` holds a run made with other arguments (method, layer, targets, options, batch
        size, model weights, data kind or length) and ``overwrite`` is False: the message lists
        what differs; or ``targets="label"`` for data without labels; or an empty dataset; or,
        over several workers, data of unknown length or ``overwrite=True``; or a
        ``TPUStrategy`` / ``ParameterServerStrategy``.
    TypeError
        ``data`` of a kind not listed above, ``targets`` of the wrong kind, or a ``strategy``
        that is not a ``tf.distribute.Strategy``.
    TimeoutError
        Over several workers: a worker waited 24 hours for the others' shares.

    Notes
    -----
    A second call with the same arguments into a complete run returns it without reading the
    data. A run is identified by a fingerprint of the method and its config, the targets, the
    batch size, a SHA-256 of the model's weights, and the data's kind and length when known
    (a generator's length is not known: resuming one with other data is the caller's
    responsibility, though a batch count that does not match is detected). A callable target is
    known by its qualified name, so two different lambdas look alike.

    Resuming reads the data from the first batch after the last complete chunk: arrays and
    ``PyDataset`` batches by index, ``tf.data`` with ``Dataset.skip``; a generator is read from
    its start and its first batches are dropped unexplained.

    Examples
    --------
    >>> run = kg.explain_dataset(model, dataset, method="gradcam", out="cams/")   # doctest: +SKIP
    >>> run.heatmaps.shape, run.scores[:4]                                        # doctest: +SKIP
    >>> run = kg.load_run("cams/")                                                # doctest: +SKIP
    """
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be a folder path (str or os.PathLike); got {type(out).__name__}.")
    out = os.fspath(out)
    batch_size = positive_int("batch_size", batch_size, expected="a positive int")
    if chunk_size is not None:
        chunk_size = positive_int("chunk_size", chunk_size, expected="a positive int or None")
    overwrite = boolean("overwrite", overwrite)
    verbose = one_of("verbose", verbose, (0, 1, 2), expected="0 (silent), 1 (progress bar) or 2 (one line)")
    per_batch_targets, targets_key = _targets_spec(targets)
    cls = get_method(method)
    options = merge_options(method_options, options)
    explainer = _explainer(cls, model, layer, batch_size, options)
    inputs = model_inputs(model)
    source = open_source(data, batch_size, rank=len(inputs[0].shape) if len(inputs) == 1 else None)
    fingerprint = _plain({
        "config": explainer.get_config(),
        "targets": targets_key,
        "batch_size": batch_size,
        "model": {"class": type(model).__name__, "weights_sha256": weights_digest(model)},
        "data": {"kind": source.kind, "n_samples": source.n_samples, "n_batches": source.n_batches},
    })

    where = placement(model, strategy)
    split_passes(explainer, where)
    if where.workers > 1:
        return _share(explainer, source, out, fingerprint, where, per_batch_targets, chunk_size, overwrite, verbose)

    manifest = read_manifest(out, any_version=overwrite) if os.path.isdir(out) else None
    if manifest is not None and overwrite:
        RunStore.clear(out)
        manifest = None
    _check_same(out, manifest, fingerprint)
    if manifest is not None and manifest["complete"]:
        return Run(out, manifest)
    store = RunStore(out, manifest or RunStore.fresh(fingerprint, layer=None, versions=library_versions()))
    _stream(explainer, source, store, per_batch_targets, chunk_size, verbose, expected=source.n_samples)
    return Run(out, store.manifest)


def _check_same(out: str, manifest: dict | None, fingerprint: dict, replace: str = "overwrite=True") -> None:
    if manifest is not None and manifest["fingerprint"] != fingerprint:
        differ = "; ".join(_differences(manifest["fingerprint"], fingerprint))
        raise ValueError(
            f"{out!r} holds a run made with other arguments ({differ}). Pass another out= for this run, the same "
            f"arguments to continue that one, or {replace} to replace it."
        )


def _share(explainer, source, out: str, fingerprint: dict, where: Placement, targets, chunk_size, overwrite: bool,
           verbose: int) -> Run:
    """A multi-worker run: this worker's share of the batches, then the whole run once the chief has joined them."""
    if source.n_batches is None:
        raise ValueError(
            f"a run over {where.workers} workers cuts the data into one share of batches per worker, so it needs the "
            f"data's length, which this {source.kind} source does not give; pass arrays, a keras.utils.PyDataset, or "
            "a tf.data.Dataset of known cardinality (dataset.apply(tf.data.experimental.assert_cardinality(n)))."
        )
    if overwrite:
        raise ValueError(
            f"overwrite=True is not supported over {where.workers} workers: they cannot agree on when the old run is "
            f"gone. Remove {out!r} before starting the workers, or pass another out=."
        )
    chief = where.worker == 0
    top = read_manifest(out) if os.path.isdir(out) else None
    if top is not None:
        _check_same(out, top, fingerprint, replace="remove the folder before starting the workers")
        if top["complete"]:
            return Run(out, top)
    if top is not None and chief:  # an incomplete single-device run of the same arguments: replaced
        RunStore.clear(out, workers=False)  # the other workers' folders are theirs to clear

    def share_fingerprint(worker: int) -> dict:
        first, stop = shard(source.n_batches, worker, where.workers)
        return _plain(dict(fingerprint, share={"worker": worker, "workers": where.workers, "batches": [first, stop]}))

    first, stop = shard(source.n_batches, where.worker, where.workers)
    folder, mine = worker_folder(out, where.worker), share_fingerprint(where.worker)
    manifest = read_manifest(folder) if os.path.isdir(folder) else None
    _check_same(folder, manifest, mine, replace="remove the run's folder before starting the workers")
    store = RunStore(folder, manifest or RunStore.fresh(mine, layer=None, versions=library_versions(),
                                                        share_id=uuid.uuid4().hex))
    if not store.manifest["complete"]:
        expected = None
        if source.n_samples is not None:  # whole batches of batch_size, the last one shorter
            size = fingerprint["batch_size"]
            expected = min(stop * size, source.n_samples) - first * size
        if stop > first:
            _stream(explainer, source, store, targets, chunk_size, verbose, first=first, take=stop - first,
                    expected=expected)
        else:
            store.finish()  # more workers than batches: nothing to explain here
    share_id = store.manifest["share_id"]
    if chief:
        shares = [store.manifest if w == where.worker else
                  wait_for(f"worker {w}'s share of {out!r}", lambda w=w: complete_share(out, w, share_fingerprint(w)))
                  for w in range(where.workers)]
        fresh = RunStore.fresh(fingerprint, layer=None, versions=library_versions())
        joined = dict(joined_manifest(fresh, shares), shares=[s["share_id"] for s in shares])
        RunStore(out, joined).commit(joined)
        return Run(out, joined)

    def whole():
        try:
            found = read_manifest(out)
        except ValueError:  # being replaced; read it again
            return None
        ok = found is not None and found["complete"] and share_id in found.get("shares", ())
        return found if ok else None

    return Run(out, wait_for(f"the chief to join the workers' shares in {out!r}", whole))


def _stream(explainer, source, store: RunStore, targets, chunk_size: int | None, verbose: int, *, first: int = 0,
            take: int | None = None, expected: int | None = None) -> None:
    """Explain the batches after the last complete chunk, writing a chunk whenever enough are done.

    ``first``, ``take``: the store holds batches ``first .. first + take`` of the source (one
    worker's share; all of them by default); ``expected``: their number of samples, when known.
    """
    done_samples, done_batches = store.manifest["n_samples"], store.manifest["n_batches"]
    total = expected
    bar = Progbar(total, verbose=verbose, unit_name="image", stateful_metrics=["images/s"]) if verbose else None
    if bar is not None and done_samples:
        bar.update(done_samples)
    pending: list[dict[str, np.ndarray]] = []
    pending_rows = 0
    said = _Warnings()
    count, start = done_samples, time.perf_counter()
    # chunks are written (and fsync'd) by one background thread while the next batches are
    # explained; at most one chunk is being written while the next one fills, so memory stays bounded
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keras-gradcam-run-writer")
    writing = None

    def flush():
        nonlocal pending, pending_rows, writing
        if writing is not None:
            writing.result()  # the previous chunk is on disk and in the manifest (or its error is raised here)
            writing = None
        if pending:
            arrays = {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}
            writing = writer.submit(store.write_chunk, arrays, len(pending))
            pending, pending_rows = [], 0

    try:
        batches = source.batches(first + done_batches)
        known = store.manifest["fields"]
        for batch_index, (images, labels) in enumerate(
                batches if take is None else itertools.islice(batches, take - done_batches)):
            n = batch_length(images)
            t = _label_targets(labels, n) if isinstance(targets, str) else targets
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                exp = explainer(images, t)
            said.record(caught)
            fields = {
                "heatmaps": exp.heatmaps, "layer_heatmaps": exp.layer_heatmaps, "targets": exp.targets,
                "scores": exp.scores, "predictions": exp.predictions, "finite": exp.finite,
                "labels": None if labels is None else storable_labels(labels),
            }
            arrays = {k: v for k, v in fields.items() if v is not None}
            merged = merge_fields(known, fields_of(arrays))
            if merged is None:  # checked on every batch, so that the batches before it still make a chunk
                flush()
                flush()
                raise ValueError(
                    f"batch {first + done_batches + batch_index} of the data gives "
                    f"{describe_difference(known, fields_of(arrays))}: every batch must have the same image size "
                    f"and the same kind of labels. The {store.manifest['n_samples']} samples before it are saved "
                    "in the run; resize the images to one size in the data pipeline (e.g. "
                    "dataset.map(lambda x, y: (tf.image.resize(x, size), y))) and rerun with overwrite=True."
                )
            known = merged
            pending.append(arrays)
            pending_rows += n
            if store.manifest.get("layer") is None:
                layer = explainer.layer
                store.manifest["layer"] = list(layer) if isinstance(layer, tuple) else layer
            if chunk_size is None:
                chunk_size = max(1, HEATMAP_BYTES_PER_CHUNK // max(1, exp.heatmaps[0].nbytes))
            if pending_rows >= chunk_size:
                flush()
            count += n
            if bar is not None:
                bar.update(count, values=[("images/s", (count - done_samples) / max(time.perf_counter() - start, 1e-9))])
        flush()
        flush()  # waits for the last chunk
    except KeyboardInterrupt:
        flush()  # the batches explained so far are complete: keep them
        flush()
        raise
    finally:
        writer.shutdown(wait=True)
    if store.manifest["n_samples"] == 0:
        raise ValueError("the data is empty: it gave no batch to explain.")
    if expected is not None and store.manifest["n_samples"] != expected:
        raise ValueError(
            f"the data gave {store.manifest['n_samples']} samples in all, but {expected} were expected; a resumed run "
            "must read the same data as the interrupted one (rerun with overwrite=True to start again)."
        )
    store.finish()
    if bar is not None and verbose == 2:
        bar.update(count, finalize=True)
    said.emit()
