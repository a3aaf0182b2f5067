"""Progress bars go to standard error: standard output is for results (the CLI prints tables there)."""

import keras
import numpy as np

from keras_gradcam.core.progress import Progbar
from keras_gradcam.methods.ablationcam import AblationCAM
from keras_gradcam.methods.scorecam import ScoreCAM


def _tiny():
    # the shapes of tests/test_perturbation_cams.py's model (6x6 input, 3x3 maps): Score-CAM's shared
    # masking function is traced for them already when both files run in one process
    inp = keras.Input((6, 6, 1))
    h = keras.layers.Conv2D(3, 1)(inp)
    h = keras.layers.AveragePooling2D(2, name="pool")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inp, keras.layers.Dense(2)(h))


X = np.random.default_rng(0).random((2, 6, 6, 1)).astype(np.float32)


def test_progbar_writes_to_stderr_only(capsys):
    bar = Progbar(3, unit_name="thing")
    for _ in range(3):
        bar.add(1)
    out, err = capsys.readouterr()
    assert out == ""
    assert "3/3" in err and "/thing" in err


def test_score_cam_and_ablation_cam_bars_are_on_stderr(capsys):
    model = _tiny()
    for cls in (ScoreCAM, AblationCAM):
        cls(model, "pool", verbose=1)(X, targets=0)
        out, err = capsys.readouterr()
        assert out == "", cls.__name__
        assert "/pass" in err, cls.__name__
        cls(model, "pool", verbose=2)(X, targets=0)  # the one-line summary too
        out, err = capsys.readouterr()
        assert out == "" and "/pass" in err, cls.__name__
