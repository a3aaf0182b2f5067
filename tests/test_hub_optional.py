"""KerasHub is an optional extra: keras-gradcam imports and explains without it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace as NS

from keras_gradcam.core.tokens import declared_grid, declared_grids

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


def test_declared_grids_read_from_backbone_attributes():
    """The grids a KerasHub backbone declares, read by duck typing (no KerasHub needed)."""
    vit = NS(image_shape=(224, 160, 3), patch_size=16)
    assert declared_grids(vit) == ((14, 10),)
    assert declared_grid(141, declared_grids(vit)).grid == (14, 10) and declared_grid(141, declared_grids(vit)).prefix == 1
    assert declared_grid(142, declared_grids(vit)).prefix == 2  # DeiT: class + distillation tokens
    assert declared_grid(140 + 17, declared_grids(vit)) is None  # more than MAX_PREFIX = 16 extra tokens
    first = NS(image_shape=(3, 64, 32), patch_size=(8, 4), data_format="channels_first")
    assert declared_grids(first) == ((8, 8),)
    swin = NS(image_shape=(64, 64, 3), patch_size=4, depths=(2, 2, 6))
    assert declared_grids(swin) == ((16, 16), (8, 8), (4, 4))
    assert declared_grid(64, declared_grids(swin)).grid == (8, 8)  # a later stage: no prefix tokens
    assert declared_grid(65, declared_grids(swin)) is None
    mit = NS(image_shape=(64, 64, 3), layerwise_strides=[4, 2, 2])
    assert declared_grids(mit) == ((16, 16), (8, 8), (4, 4))
    assert declared_grids(NS(image_shape=(None, None, 3), patch_size=16)) == ()  # any size: nothing declared
    assert declared_grids(NS(image_shape=(30, 30, 3), patch_size=16)) == ()  # not a whole number of patches
    assert declared_grids(NS()) == ()
