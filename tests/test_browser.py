"""TensorBoard shows the callback's probe cards, checked in a real browser as a person would.

The test trains the demo (``examples/dataset_bias.py --quick``) into a temporary ``runs/`` (or uses
``$KG_BROWSER_LOGDIR``, e.g. the ``runs/`` of ``make demo``), starts TensorBoard on loopback,
opens its Time Series dashboard filtered to the probe tags in headless Chromium -- the dashboard
that renders TensorBoard's image cards in the page's DOM -- and checks, after the JavaScript has
run, that every probe tag has a card whose ``<img>`` source TensorBoard actually serves as an
image. It then takes a screenshot; with ``KG_SAVE_SCREENSHOT=1`` (``make test-browser``) the
screenshot becomes the callback guide's picture, ``docs/assets/tensorboard_probes.png``.

Skipped, with the reason, when Chromium is not installed (``make test-browser`` installs it from
the system packages).
"""

import html
import importlib.util
import os
import pathlib
import re
import shutil
import urllib.parse

import pytest
from headless import chromium as headless_chromium
from headless import requires_chromium
from tbserver import get, tensorboard

ROOT = pathlib.Path(__file__).resolve().parent.parent
pytestmark = requires_chromium


ATTEMPTS = 5  # page loads before a missing card counts as a failure


def chromium(*args, window: str = "1400,900", timeout: int = 120) -> str:
    return headless_chromium(*args, window=window, budget_ms=20000, offline=False, timeout=timeout)


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    given = os.environ.get("KG_BROWSER_LOGDIR")
    if given:
        assert pathlib.Path(given).is_dir(), f"KG_BROWSER_LOGDIR={given!r} is not a folder; run `make demo` first"
        return pathlib.Path(given)
    runs = tmp_path_factory.mktemp("browser") / "runs"
    spec = importlib.util.spec_from_file_location("example_dataset_bias", ROOT / "examples" / "dataset_bias.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    demo.main(["--quick", "--logdir", str(runs), "--out", str(runs.parent / "bias.png")])
    return runs


@pytest.fixture(scope="module")
def served(logdir):
    with tensorboard(logdir, ready=lambda tags: any("/probe_" in t for run in tags.values() for t in run),
                     timeout=120) as (base, tags, reason):
        assert reason is None, f"TensorBoard did not list the probe image tags: {reason}; it listed {tags}"
        yield base, tags


def test_probe_cards_render_and_their_images_are_served(served, tmp_path):
    base, tags = served
    expected = sorted({t for run_tags in tags.values() for t in run_tags if "/probe_" in t})
    assert expected, f"TensorBoard lists no probe image tags: {tags}"
    url = f"{base}/?tagFilter={urllib.parse.quote('/probe_')}#timeseries"
    # A tall window: the dashboard only renders the cards that are in view. Headless Chromium
    # sometimes dumps the page after the card groups are counted but before the cards are drawn
    # (about one load in five on 2 busy cores; the page then says "12 cards" and shows none), so
    # a fresh browser gets a few tries; a page that never draws a card still fails.
    for _ in range(ATTEMPTS):
        dom = html.unescape(chromium("--dump-dom", url, window="1400,6000"))
        # the rendered page (after its JavaScript ran) names every probe tag ...
        missing = [t for t in expected if t.split("/")[-1] not in dom]
        sources = re.findall(r'<img[^>]*\ssrc="(data/plugin/timeseries/imageData\?[^"]+)"', dom)
        if not missing and len(sources) >= len(expected):
            break
    assert not missing, f"probe cards not rendered in {ATTEMPTS} page loads: {missing}"
    assert "Tags matching filter" in dom
    # ... and shows images whose source TensorBoard serves
    assert len(sources) >= len(expected), f"{len(sources)} card images for {len(expected)} probe tags"
    for src in sources[:4]:
        data, kind = get(f"{base}/{src}")
        assert kind.startswith("image/"), kind
        assert data[:2] == b"\xff\xd8" or data[:8] == b"\x89PNG\r\n\x1a\n"

    shot = tmp_path / "tensorboard.png"
    chromium(f"--screenshot={shot}", url)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    if os.environ.get("KG_SAVE_SCREENSHOT") == "1":
        target = ROOT / "docs" / "assets" / "tensorboard_probes.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)
