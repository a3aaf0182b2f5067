"""The documentation site builds without warnings, and every Python snippet in it runs.

* ``mkdocs build --strict`` (what ``make docs`` runs) must pass: broken links, missing figures,
  unresolvable API references and docstring problems are warnings, and warnings fail. Both site
  builds are in the slow suite (``make test-slow``): one puts grey placeholders where the figures
  go (``KG_DOCS_FIGURES=0``), the other builds the real figures from a tiny model
  (``KG_DOCS_QUICK=1``). The default suite checks, without building, that ``mkdocs.yml``'s
  navigation (after the hook fills in the methods) lists every page.
* Every ```` ```python ```` block of every page runs, page by page in one namespace, in a
  temporary folder, unless the line before it is ``<!-- test: skip -->``.
"""

import os
import pathlib
import re
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

import keras_gradcam as kg  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if p.name != "claims.md" and "_hooks" not in p.parts)


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9-]", "", name.lower().replace("+", "p"))


def build(site, **env_extra):
    pytest.importorskip("mkdocs", reason="the docs extras are not installed: pip install -e '.[docs]'")
    pytest.importorskip("mkdocstrings", reason="the docs extras are not installed: pip install -e '.[docs]'")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", NO_MKDOCS_2_WARNING="1", **env_extra)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(site)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    log = done.stdout + done.stderr
    warnings = [line for line in log.splitlines() if re.match(r"(WARNING|ERROR)\s+-", line)]
    assert done.returncode == 0 and not warnings, "\n".join(warnings) or log[-3000:]
    return log


@pytest.mark.slow
def test_site_builds_strict_without_warnings(tmp_path):
    site = tmp_path / "site"
    build(site, KG_DOCS_FIGURES="0")
    # one page per registered method, generated from its docstring if nobody wrote one
    for name in kg.METHODS:
        page = site / "methods" / f"{slug(name)}.html"
        assert page.is_file(), f"no page for method {name!r}"
        text = page.read_text()
        assert f"figures/{slug(name)}.png" in text
        assert (site / "figures" / f"{slug(name)}.png").is_file()
        assert kg.get_method(name).__name__ in text  # the API reference rendered
    gradcam = (site / "methods" / "gradcam.html").read_text()
    assert "<math" in gradcam and "$$" not in gradcam  # formulas as MathML, no JavaScript needed
    index = (site / "methods" / "index.html").read_text()
    assert all(f'href="{slug(n)}.html"' in index for n in kg.METHODS)  # the generated methods table
    for page in site.rglob("*.html"):  # offline: nothing fetched from the web when viewing
        assert "fonts.googleapis" not in page.read_text(), page
    api = (site / "api.html").read_text()
    for name in ("plot", "overlay", "GradCAMCallback", "Explanation", "evaluate"):
        assert name in api


@pytest.mark.slow
def test_site_builds_with_real_figures(tmp_path):
    site = tmp_path / "site"
    log = build(site, KG_DOCS_QUICK="1")
    assert "figures in" in log
    for name in kg.METHODS:
        data = (site / "figures" / f"{slug(name)}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    for name in ("segmentation", "detection"):  # docs/_hooks/kg_dense.py
        data = (site / "figures" / f"{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def snippets(page: pathlib.Path) -> list[str]:
    text = page.read_text()
    blocks = []
    for m in re.finditer(r"(?m)^```python\n(.*?)^```", text, flags=re.S):
        before = text[: m.start()].rstrip().splitlines()
        if before and before[-1].strip() == "<!-- test: skip -->":
            continue
        blocks.append(m.group(1))
    return blocks


def test_pages_have_snippets_or_none_to_run():
    assert sum(len(snippets(p)) for p in PAGES) >= 20


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_snippets_run(page, tmp_path, monkeypatch):
    blocks = snippets(page)
    if not blocks:
        pytest.skip(f"{page.name} has no Python snippets")
    registered = {f"{slug(n)}.md" for n in kg.METHODS}
    if page.parent.name == "methods" and page.name != "index.md" and page.name not in registered:
        pytest.skip(f"{page.name} documents a method that is not registered in kg.METHODS (left out of the site)")
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"docs_{page.stem}"}
    for i, code in enumerate(blocks):
        try:
            exec(compile(code, f"{page.relative_to(DOCS)} [snippet {i + 1}]", "exec"), namespace)
        except ModuleNotFoundError as error:  # KerasHub is optional: its snippets need it installed
            if error.name != "keras_hub":
                raise
            pytest.skip(f"{page.name} snippet {i + 1} needs keras_hub")
        finally:
            plt.close("all")


def loaded_config():
    """mkdocs.yml as a build sees it: loaded, with the hooks' ``on_config`` run (it fills the nav)."""
    pytest.importorskip("mkdocs", reason="the docs extras are not installed: pip install -e '.[docs]'")
    from mkdocs.config import load_config

    config = load_config(str(ROOT / "mkdocs.yml"))
    return config.plugins.on_config(config)  # mkdocs runs the hooks as plugins: as in a build


def nav_pages(nav) -> set[str]:
    """Every page path named in a mkdocs nav (nested lists of strings and one-key dicts)."""
    if isinstance(nav, str):
        return {nav}
    if isinstance(nav, dict):
        return set().union(*(nav_pages(v) for v in nav.values()))
    return set().union(*(nav_pages(v) for v in nav)) if nav else set()


def test_the_nav_lists_every_page(monkeypatch):
    monkeypatch.setenv("KG_DOCS_FIGURES", "0")
    listed = nav_pages(loaded_config()["nav"])
    registered = {f"methods/{slug(n)}.md" for n in kg.METHODS}
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md") if "_hooks" not in p.parts}
    # a method page whose method is not registered is left out of the site on purpose
    pages = {p for p in pages if not p.startswith("methods/") or p == "methods/index.md" or p in registered}
    assert pages - listed == set(), "pages missing from mkdocs.yml's nav"
    # method pages may be generated by the hook; every other nav entry is a file in docs/
    written = {p for p in listed if not p.startswith(("methods/", "http:", "https:"))}
    assert written - pages == set(), "nav entries with no page"


def test_public_names_have_docstrings():
    missing = [name for name in kg.__all__ if name != "__version__" and not (getattr(kg, name).__doc__ or "").strip()]
    assert missing == []


def test_a_newly_registered_method_gets_a_generated_page_and_figure(monkeypatch):
    pytest.importorskip("mkdocs", reason="the docs extras are not installed: pip install -e '.[docs]'")
    import importlib.util

    from mkdocs.config import load_config
    from mkdocs.structure.files import get_files

    spec = importlib.util.spec_from_file_location("kg_docs_hook", DOCS / "_hooks" / "kg_docs.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    monkeypatch.setenv("KG_DOCS_FIGURES", "0")

    class NewCAM(kg.GradCAM):
        """New-CAM: a method registered after the docs were written."""

        name = "new-cam"

    monkeypatch.setitem(kg.METHODS, "new-cam", NewCAM)
    config = load_config(str(ROOT / "mkdocs.yml"))
    config = config.plugins.on_config(config)  # mkdocs runs the hooks as plugins: as in a build
    methods_nav = next(item["Methods"] for item in config["nav"] if isinstance(item, dict) and "Methods" in item)
    assert {"new-cam": "methods/new-cam.md"} in methods_nav
    assert len(methods_nav) == len(kg.METHODS) + 1  # the overview, then one page per method
    files = config.plugins.on_files(get_files(config), config=config)
    page = files.get_file_from_path("methods/new-cam.md")
    assert page is not None and "New-CAM: a method registered" in page.content_string
    assert f"::: {__name__}" in page.content_string  # its API reference, from the class docstring
    assert files.get_file_from_path("figures/new-cam.png") is not None
    assert "[`new-cam`](new-cam.md)" in hook._methods_table()
