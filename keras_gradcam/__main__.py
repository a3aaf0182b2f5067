"""``python -m keras_gradcam ...``: the same as the ``keras-gradcam`` command (see :mod:`keras_gradcam.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
