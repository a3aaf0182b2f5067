"""Progress bars on standard error.

``keras.utils.Progbar`` prints through ``keras.utils.io_utils.print_msg``, which writes to
``sys.stdout``; a library (and the command line, whose standard output carries the results)
wants progress on standard error instead. :class:`Progbar` is Keras's bar with its output, and
its terminal check, redirected there.
"""

from __future__ import annotations

import contextlib
import sys

import keras

__all__ = ["Progbar"]


class Progbar(keras.utils.Progbar):
    """``keras.utils.Progbar`` that writes to ``sys.stderr`` instead of ``sys.stdout``.

    Takes the same arguments as ``keras.utils.Progbar`` (``target``, ``verbose``,
    ``unit_name``, ...). Standard output is redirected to standard error while the bar is
    created (so its "is this a terminal?" check looks at stderr) and while it is updated, and
    nowhere else. ``sys.stderr`` is looked up at each call, so a redirected or captured stderr
    is honoured.

    Examples
    --------
    >>> from keras_gradcam.core.progress import Progbar
    >>> bar = Progbar(3, unit_name="pass")
    >>> for _ in range(3):
    ...     bar.add(1)                                          # doctest: +SKIP
    """

    def __init__(self, *args, **kwargs):
        with contextlib.redirect_stdout(sys.stderr):
            super().__init__(*args, **kwargs)

    def update(self, current, values=None, finalize=None):  # noqa: D102 - Keras's method, on stderr
        with contextlib.redirect_stdout(sys.stderr):
            super().update(current, values=values, finalize=finalize)
