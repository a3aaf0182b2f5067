"""MkDocs hooks of the keras-gradcam site (``mkdocs.yml``: ``hooks:``).

* **Methods from the registry.** The "Methods" section of the navigation lists every method of
  :data:`keras_gradcam.METHODS`, in registry order. A method with a hand-written page
  ``docs/methods/<slug>.md`` gets it; a method without one gets a page generated from its class
  docstring, so a newly registered method is never missing from the site. A hand-written page of
  a method that is not registered (yet) is left out of the build.
* **Figures made by the build.** A small CNN is trained on :mod:`keras_gradcam.datasets` shapes
  (nothing downloaded) and every method explains the same probes; each method page shows its
  figure (``figures/<slug>.png``) and the overview page all methods side by side
  (``figures/methods.png``). The transformer pages get theirs the same way: the small ViT and the
  Swin-style model of ``examples/vision_transformer.py``, trained on the same shapes and explained
  with ``layer=None`` (``figures/vit.png``, ``figures/swin.png``). ``KG_DOCS_QUICK=1`` trains tiny
  models instead, and ``KG_DOCS_FIGURES=0`` puts grey placeholders in their place (both for the
  test suite).
* **Placeholders** in the Markdown: ``<!-- methods-table -->`` (a table of the registered
  methods), and on method pages ``<!-- figure -->`` and ``<!-- api -->`` (the class reference,
  rendered by mkdocstrings).
* **Math without JavaScript.** ``$$ ... $$`` blocks and ``\\( ... \\)`` inline formulas are turned
  into MathML when the site is built (latex2mathml), which browsers render natively: the site
  works offline and fetches nothing.
"""

from __future__ import annotations

import html
import importlib.util
import inspect
import io
import logging
import os
import pathlib
import re
import time
import warnings

log = logging.getLogger("mkdocs.hooks.keras_gradcam")

_FIGURES: dict[str, bytes] = {}  # cached across rebuilds of `mkdocs serve`
_TRANSFORMER_FIGURES: dict[str, bytes] = {}  # the same, for the transformer pages
_ROOT = pathlib.Path(__file__).resolve().parents[2]
_METHOD_OPTIONS = {
    "smoothgradcam++": {"n_samples": 16},
    "integrated-gradcam": {"steps": 16},
    "scorecam": {"verbose": 0},
    "ablationcam": {"verbose": 0},
}


def slug(name: str) -> str:
    """File name of a method's page: ``"gradcam++"`` -> ``"gradcampp"``."""
    return re.sub(r"[^a-z0-9-]", "", name.lower().replace("+", "p"))


def _methods():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from keras_gradcam.methods import METHODS

    return METHODS


def _display(name: str) -> str:
    from keras_gradcam.methods.registry import display_name

    return display_name(name)


def _summary(cls) -> str:
    doc = inspect.getdoc(cls) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


# -- navigation ---------------------------------------------------------------------------------
def on_config(config, **kwargs):
    methods = _methods()
    entries = [{"Overview": "methods/index.md"}] + [{_display(n): f"methods/{slug(n)}.md"} for n in methods]
    for item in config["nav"] or []:
        if isinstance(item, dict) and "Methods" in item:
            item["Methods"] = entries
    return config


# -- figures ------------------------------------------------------------------------------------
def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _make_figures() -> dict[str, bytes]:
    """Train a small CNN once, explain three probes with every registered method, draw them."""
    if _FIGURES:
        return _FIGURES
    if os.environ.get("KG_DOCS_FIGURES", "1") == "0":  # structure-only builds (tests): grey placeholders
        from keras_gradcam.io import encode_png

        blank = encode_png(__import__("numpy").full((8, 8, 3), 200, "uint8"))
        for name in list(_methods()) + [None]:
            _FIGURES["figures/methods.png" if name is None else f"figures/{slug(name)}.png"] = blank
        _FIGURES["figures/smoothing.png"] = _FIGURES["figures/road.png"] = blank
        return _FIGURES
    import matplotlib

    matplotlib.use("Agg")
    import keras

    import keras_gradcam as kg
    from keras_gradcam import datasets
    from keras_gradcam.viz.plots import plot

    quick = os.environ.get("KG_DOCS_QUICK", "") not in ("", "0")
    n, size, epochs = (96, 32, 1) if quick else (1200, 64, 10)
    start = time.perf_counter()
    keras.utils.set_random_seed(0)
    data = datasets.make_shapes(n=n, image_size=size, seed=0)
    held_out = datasets.make_shapes(n=90, image_size=size, seed=1)
    probes = held_out[datasets.make_probe_set(held_out, per_class=1)]
    inputs = keras.Input((size, size, 3))
    x = inputs
    for filters in (16, 32, 64):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="last_conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(data.num_classes, activation="softmax")(x))
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy")
    model.fit(data.images, data.labels, epochs=epochs, batch_size=32, verbose=0)

    explanations = {}
    for name in _methods():
        # layer=None: the last feature map before pooling, 'last_conv' (and methods that explain the input take no layer)
        exp = kg.explain(model, probes.images, method=name, **_METHOD_OPTIONS.get(name, {}))
        explanations[name] = exp
        fig = plot(exp, probes.images, labels=probes.labels, class_names=probes.class_names, figsize=(6.4, 6.2))
        fig.suptitle(f"{_display(name)} at layer {exp.layer!r} of a small CNN", fontsize=9)
        _FIGURES[f"figures/{slug(name)}.png"] = _png(fig)
    fig = plot({_display(k): v for k, v in explanations.items()}, probes.images, labels=probes.labels,
               class_names=probes.class_names, show=("image", "overlay"))
    _FIGURES["figures/methods.png"] = _png(fig)
    smoothing = {"Grad-CAM": {}, "aug_smooth=True": {"aug_smooth": True}, "eigen_smooth=True": {"eigen_smooth": True},
                 "relu=False": {"relu": False}}  # docs/smoothing.md
    fig = plot({k: kg.explain(model, probes.images, method="gradcam", **v) for k, v in smoothing.items()}, probes.images,
               labels=probes.labels, class_names=probes.class_names, show=("image", "overlay"))
    _FIGURES["figures/smoothing.png"] = _png(fig)
    _FIGURES["figures/road.png"] = _road_figure(model, held_out, 8 if quick else 24)
    log.info("keras-gradcam: %d figures in %.0f s%s", len(_FIGURES), time.perf_counter() - start,
             " (KG_DOCS_QUICK)" if quick else "")
    return _FIGURES


def _road_figure(model, held_out, n: int) -> bytes:
    """docs/road.md: mean true-class probability as pixels are removed and imputed, MoRF and LeRF."""
    import matplotlib.pyplot as plt
    import numpy as np

    import keras_gradcam as kg
    from keras_gradcam import metrics

    x, y = held_out.images[:n], held_out.labels[:n]
    maps = {"Grad-CAM": kg.explain(model, x, method="gradcam", targets=y).heatmaps,
            "Grad-CAM++": kg.explain(model, x, method="gradcam++", targets=y).heatmaps,
            "random map": np.random.default_rng(0).random(x.shape[:3])}
    p = np.asarray(metrics.ROAD_PERCENTAGES)
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for (label, h), colour in zip(maps.items(), ("tab:red", "tab:orange", "tab:grey")):
        morf = metrics.road_curve(model, x, h, y, order="morf")
        lerf = metrics.road_curve(model, x, h, y, order="lerf")
        score = float(((lerf - morf) / 2).mean())
        ax.plot(p, morf.mean(0), "-", color=colour, label=f"{label} MoRF (ROAD {score:+.3f})")
        ax.plot(p, lerf.mean(0), "--", color=colour, label=f"{label} LeRF")
    ax.set_xlabel("% of pixels removed and imputed")
    ax.set_ylabel("mean probability of the true class")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return _png(fig)


def _example(name: str):
    """A script of ``examples/`` loaded as a module (its builders, without running ``main``)."""
    spec = importlib.util.spec_from_file_location(f"kg_docs_example_{name}", _ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _transformer_figures() -> dict[str, bytes]:
    """Train examples/vision_transformer.py's ViT and Swin-style model; Grad-CAM and Grad-CAM++ with layer=None."""
    if _TRANSFORMER_FIGURES:
        return _TRANSFORMER_FIGURES
    if os.environ.get("KG_DOCS_FIGURES", "1") == "0":
        from keras_gradcam.io import encode_png

        blank = encode_png(__import__("numpy").full((8, 8, 3), 200, "uint8"))
        _TRANSFORMER_FIGURES.update({"figures/vit.png": blank, "figures/swin.png": blank})
        return _TRANSFORMER_FIGURES
    import matplotlib

    matplotlib.use("Agg")
    import keras

    import keras_gradcam as kg
    from keras_gradcam import datasets, metrics
    from keras_gradcam.viz.plots import plot

    quick = os.environ.get("KG_DOCS_QUICK", "") not in ("", "0")
    start = time.perf_counter()
    example = _example("vision_transformer")
    held_out = datasets.make_shapes(n=16 if quick else 300, image_size=32, seed=1)
    probes = held_out[datasets.make_probe_set(held_out, per_class=1)]
    uniform = float(held_out.masks.mean())
    builds = {  # (model, training images, epochs): about a minute each on two CPU cores
        "vit": (lambda: example.build_vit(depth=1 if quick else 3), 96 if quick else 2400, 1 if quick else 20),
        "swin": (lambda: example.build_swin(depths=(1, 1) if quick else (2, 2), dim=16), 96 if quick else 1200,
                 1 if quick else 15),
    }
    for key, (build, n, epochs) in builds.items():
        keras.utils.set_random_seed(0)
        model = build()
        example.train(model, datasets.make_shapes(n=n, image_size=32, seed=0), epochs)
        shown, shares = {}, []
        for method in ("gradcam", "gradcam++"):
            with warnings.catch_warnings():  # all-zero maps (common for Grad-CAM++ here) are left out of the share
                warnings.simplefilter("ignore", RuntimeWarning)
                exp = kg.explain(model, held_out.images, method=method, targets=held_out.labels)
                shares.append(float(metrics.energy_pointing_game(exp.heatmaps, held_out.masks)))
            shown[_display(method)] = exp[datasets.make_probe_set(held_out, per_class=1)]
        fig = plot(shown, probes.images, labels=probes.labels, class_names=probes.class_names, show=("image", "overlay"))
        what = "ViT" if key == "vit" else "Swin-style model"
        fig.suptitle(f"layer=None ({exp.layer!r}) of a small {what}: energy inside the objects {shares[0]:.0%} "
                     f"(Grad-CAM), {shares[1]:.0%} (Grad-CAM++); uniform {uniform:.0%}", fontsize=8)
        _TRANSFORMER_FIGURES[f"figures/{key}.png"] = _png(fig)
    log.info("keras-gradcam: transformer figures in %.0f s%s", time.perf_counter() - start,
             " (KG_DOCS_QUICK)" if quick else "")
    return _TRANSFORMER_FIGURES


# -- files --------------------------------------------------------------------------------------
_GENERATED_PAGE = """# {display}

{summary}

![{display} on three probes](../figures/{slug}.png)

*The figure is made when the site is built: a small CNN trained on synthetic shapes, explained with
the method's defaults; titles give the explained class and its pre-softmax score.*

This page is generated from the class docstring (the method has no hand-written page yet).

## Reference

::: {path}
"""


def on_files(files, config, **kwargs):
    from mkdocs.structure.files import File

    methods = _methods()
    wanted = {f"methods/{slug(n)}.md": n for n in methods}
    for file in list(files):
        uri = file.src_uri
        if uri.startswith("methods/") and uri.endswith(".md") and uri != "methods/index.md" and uri not in wanted:
            log.info("keras-gradcam: %s documents no registered method; left out of the build", uri)
            files.remove(file)
    present = {f.src_uri for f in files}
    for uri, name in wanted.items():
        if uri not in present:
            cls = methods[name]
            page = _GENERATED_PAGE.format(display=_display(name), summary=_summary(cls), slug=slug(name),
                                          path=f"{cls.__module__}.{cls.__qualname__}")
            files.append(File.generated(config, uri, content=page))
    for uri, data in {**_make_figures(), **_transformer_figures()}.items():
        files.append(File.generated(config, uri, content=data))
    return files


# -- page text ----------------------------------------------------------------------------------
def _methods_table() -> str:
    rows = ["| name (`method=`) | method | in one line |", "|---|---|---|"]
    for name, cls in _methods().items():
        rows.append(f"| [`{name}`]({slug(name)}.md) | {_display(name)} | {_summary(cls).replace('|', '/')} |")
    return "\n".join(rows)


def _math(markdown: str) -> str:
    from latex2mathml.converter import convert

    def block(m):
        return "\n\n" + convert(m.group(1).strip(), display="block") + "\n\n"

    def inline(m):
        return convert(m.group(1).strip())

    parts = re.split(r"(```.*?```)", markdown, flags=re.S)  # leave code blocks alone
    for i in range(0, len(parts), 2):
        text = re.sub(r"\$\$(.+?)\$\$", block, parts[i], flags=re.S)
        parts[i] = re.sub(r"\\\((.+?)\\\)", inline, text)
    return "".join(parts)


def on_page_markdown(markdown, page, config, files, **kwargs):
    uri = page.file.src_uri
    if "<!-- methods-table -->" in markdown:
        markdown = markdown.replace("<!-- methods-table -->", _methods_table())
    if uri.startswith("methods/") and uri != "methods/index.md":
        name = {f"methods/{slug(n)}.md": n for n in _methods()}.get(uri)
        if name is not None:
            cls = _methods()[name]
            figure = (f"![{html.escape(_display(name))} on three probes](../figures/{slug(name)}.png)\n\n"
                      "*Made when this site is built: a small CNN trained on synthetic shapes, explained with the "
                      "method's defaults (its last convolution). Columns: the image, the heatmap, the overlay; titles give the explained "
                      "class and its pre-softmax score.*")
            markdown = markdown.replace("<!-- figure -->", figure)
            markdown = markdown.replace("<!-- api -->", f"::: {cls.__module__}.{cls.__qualname__}")
    return _math(markdown)
