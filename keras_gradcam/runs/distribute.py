"""Runs under ``tf.distribute``: which devices explain, which share of the data this worker takes.

A strategy comes from ``strategy=``, else from the ``strategy.scope()`` the call is made in, else
from the one the model was created under. On one machine (``MirroredStrategy``) every pass is
split across the machine's devices (see :mod:`keras_gradcam.core.replicas`). Under
``MultiWorkerMirroredStrategy`` the batches are also cut into one contiguous range per worker:
each worker explains its range into its own folder ``out/workers/<index>/`` (a complete run store
of its own, resumable on its own), and the chief (worker 0) waits until every worker's folder is
complete, then writes ``out/manifest.json`` listing all the workers' chunks in the data's order,
so :func:`~keras_gradcam.load_run` reads them as one run.

Workers are numbered as ``tf.distribute`` orders them: the ``chief`` task first (if the cluster
has one), then the ``worker`` tasks by index.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass

import keras
import tensorflow as tf

from ..core.engine import BaseCAM
from .store import CHUNKS, WORKERS, describe_difference, merge_fields, read_manifest

__all__ = ["Placement", "placement", "shard", "worker_folder", "wait_for", "joined_manifest", "WORKERS", "WAIT_S"]

WAIT_S = 24 * 3600.0  # how long a worker waits for the others' shares before giving up
POLL_S = 0.2


@dataclass(frozen=True)
class Placement:
    """Where a run explains.

    Attributes
    ----------
    strategy : tf.distribute.Strategy or None
        None: no strategy, the default placement.
    devices : tuple of str or None
        This worker's devices; each pass is split across them (None: the default placement).
    worker, workers : int
        This worker's index and the number of workers (0 and 1 on one machine).
    """

    strategy: object | None
    devices: tuple[str, ...] | None
    worker: int
    workers: int


def _model_strategy(model: keras.Model):
    """The strategy whose scope ``model`` was created in, or None (Keras records it at construction)."""
    found = getattr(model, "distribute_strategy", None)  # the scope's strategy, or the current default
    if found is None or found is tf.distribute.get_strategy():
        return None
    return found


def placement(model: keras.Model, strategy=None) -> Placement:
    """The :class:`Placement` of a run: ``strategy=``, else the current scope's, else the model's.

    Raises
    ------
    TypeError
        ``strategy`` is not a ``tf.distribute.Strategy``.
    ValueError
        A ``TPUStrategy`` or ``ParameterServerStrategy``: not supported (see docs/distributed.md).
    """
    if strategy is None:
        strategy = tf.distribute.get_strategy() if tf.distribute.has_strategy() else _model_strategy(model)
    if strategy is None:
        return Placement(None, None, 0, 1)
    if not isinstance(strategy, tf.distribute.Strategy):
        raise TypeError(
            f"strategy must be a tf.distribute.Strategy (e.g. tf.distribute.MirroredStrategy()) or None; got "
            f"{type(strategy).__module__}.{type(strategy).__name__}."
        )
    if type(strategy).__name__.startswith("TPUStrategy"):
        raise ValueError(
            "TPUStrategy is not supported yet: explaining on TPU cores needs the capture compiled inside "
            "strategy.run (XLA replication), which this version does not do. Run on GPUs or CPUs "
            "(MirroredStrategy, MultiWorkerMirroredStrategy), as docs/distributed.md describes."
        )
    if "ParameterServer" in type(strategy).__name__:
        raise ValueError(
            "ParameterServerStrategy is not supported: run on GPUs or CPUs with MirroredStrategy (one machine) or "
            "MultiWorkerMirroredStrategy (several), as docs/distributed.md describes."
        )
    devices = tuple(strategy.extended.worker_devices)
    worker, workers = _worker_index(strategy)
    return Placement(strategy, devices, worker, workers)


def _worker_index(strategy) -> tuple[int, int]:
    resolver = getattr(strategy, "cluster_resolver", None)
    spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
    tasks = [("chief", i) for i in range(len(spec.get("chief", [])))]
    tasks += [("worker", i) for i in range(len(spec.get("worker", [])))]
    if len(tasks) <= 1:
        return 0, 1
    here = (resolver.task_type, int(resolver.task_id or 0))
    if here not in tasks:
        raise ValueError(
            f"this process is task {here[0]!r} {here[1]} of the cluster, which explains no data; run "
            "explain_dataset on the chief and worker tasks only."
        )
    return tasks.index(here), len(tasks)


def split_passes(explainer: BaseCAM, where: Placement) -> None:
    """Split the explainer's passes across ``where.devices`` (none: one device), or warn that it cannot.

    Only an explainer that runs its passes through the engine's one compiled function
    (:meth:`BaseCAM.passes`, not overridden, nor :meth:`~keras_gradcam.core.engine.Explainer.run`)
    can be split; the others (Score-CAM, Ablation-CAM, the guided methods...) run on one device
    each pass, with a warning.
    """
    kind = type(explainer)
    splits = getattr(kind, "passes", None) is BaseCAM.passes and kind.run is BaseCAM.run
    explainer.devices = where.devices if splits else None
    if where.devices and not splits:
        warnings.warn(
            f"{explainer.name} runs its own passes (it is not one compiled forward/backward pass per batch), so each of "
            f"its passes runs on one device, not split across the {len(where.devices)} devices of the strategy; the "
            "results are the same, and under MultiWorkerMirroredStrategy the workers still share the data.",
            RuntimeWarning,
            stacklevel=3,
        )


def shard(n_batches: int, worker: int, workers: int) -> tuple[int, int]:
    """The batches ``[first, stop)`` worker ``worker`` of ``workers`` explains: contiguous, sizes within one."""
    return n_batches * worker // workers, n_batches * (worker + 1) // workers


def worker_folder(out: str, worker: int) -> str:
    return os.path.join(out, WORKERS, f"{worker:03d}")


def wait_for(what: str, ready, timeout: float = None):
    """Poll ``ready()`` (a value, or None while not ready) until it gives a value; ``TimeoutError`` after ``timeout``."""
    timeout = WAIT_S if timeout is None else timeout
    start = time.monotonic()
    while True:
        value = ready()
        if value is not None:
            return value
        if time.monotonic() - start > timeout:
            raise TimeoutError(
                f"waited {timeout:.0f} s for {what}: a worker stopped or is still running; run explain_dataset "
                "again with the same arguments on every worker to continue (each worker resumes its share)."
            )
        time.sleep(POLL_S)


def complete_share(out: str, worker: int, fingerprint: dict):
    """Worker ``worker``'s manifest once its share of this run is complete, else None."""
    try:
        manifest = read_manifest(worker_folder(out, worker))
    except ValueError:  # being replaced; read it again
        return None
    if manifest is None or not manifest["complete"] or manifest["fingerprint"] != fingerprint:
        return None
    return manifest


def joined_manifest(fresh: dict, shares: list[dict]) -> dict:
    """One manifest listing every worker's chunks in the data's order (chunk files stay in the workers' folders)."""
    chunks, n_samples, n_batches, fields, layer = [], 0, 0, None, None
    for worker, share in enumerate(shares):
        layer = layer if layer is not None else share.get("layer")
        if share["fields"] is not None:
            merged = merge_fields(fields, share["fields"])  # text labels: as wide as the longest of any worker
            if merged is None:
                raise ValueError(
                    f"worker {worker}'s share gives {describe_difference(fields, share['fields'])} (the workers "
                    "before it): every batch of the data must have the same image size and the same kind of labels."
                )
            fields = merged
        folder = os.path.join(WORKERS, f"{worker:03d}", CHUNKS)
        for index, chunk in enumerate(share["chunks"]):
            chunks.append({"start": n_samples, "n": chunk["n"], "batches": chunk["batches"], "folder": folder,
                           "index": index})
            n_samples += chunk["n"]
            n_batches += chunk["batches"]
    return dict(fresh, complete=True, n_samples=n_samples, n_batches=n_batches, fields=fields, chunks=chunks,
                layer=layer, workers=len(shares))
