"""Whole datasets: :func:`explain_dataset` streams a dataset through one explainer into a
resumable run on disk; :func:`load_run` reads it back, memory-mapped.

``store.py`` holds the on-disk layout (chunk files and the manifest), ``stream.py`` the reading
of each kind of data source batch by batch, ``explain_dataset.py`` the driver, ``run.py`` the
:class:`Run` read back.
"""

from .explain_dataset import explain_dataset
from .run import Run, load_run
from .store import ChunkedArray

__all__ = ["ChunkedArray", "Run", "explain_dataset", "load_run"]
