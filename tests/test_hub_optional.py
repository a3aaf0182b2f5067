"""KerasHub is an optional extra: keras-gradcam imports and explains without it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_import_and_explain_without_keras_hub():
    """``sys.modules["keras_hub"] = None`` makes ``import keras_hub`` fail, as if it were not installed."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["keras_hub"] = None
        import keras, numpy as np
        import keras_gradcam as kg
        inputs = keras.Input((8, 8, 3))
        x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
        model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x)))
        exp = kg.explain(model, np.ones((1, 8, 8, 3), "float32"), method="gradcam")
        assert exp.heatmaps.shape == (1, 8, 8) and exp.layer == "conv"
        assert sys.modules["keras_hub"] is None
        print("ok")
        """
    )
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ok")
