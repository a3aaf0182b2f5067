"""``python -m keras_gradcam.cli ...``: the same as the ``keras-gradcam`` command."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
