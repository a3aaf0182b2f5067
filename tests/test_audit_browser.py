"""The audit report opens in a real browser with no network, as a person would open it.

The page is ``$KG_AUDIT_REPORT`` (``make test-browser`` points it at ``outputs/audit_biased/index.html``
from ``make demo``) or, by default, a report saved here from the hand-set corner model of
``test_audit.py`` (two classes, both flagged). Headless Chromium loads it from ``file://`` with every
host name unresolvable; the dumped DOM must hold the class table (one row per class, the expected
headers) and the embedded PNGs, and the screenshot must show them drawn (the maps' colours, not a
blank page). With ``KG_SAVE_SCREENSHOT=1`` the screenshot becomes ``docs/assets/audit_report.png``,
the picture of docs/audit.md.

Skipped, with the reason, when Chromium is not installed (``make test-browser`` installs it).
"""

import base64
import html
import json
import os
import pathlib
import re
import shutil

import numpy as np
import pytest
from headless import chromium as headless_chromium
from headless import requires_chromium
from test_audit import _model, corner_data

import keras_gradcam as kg

ROOT = pathlib.Path(__file__).resolve().parent.parent
pytestmark = requires_chromium

HEADERS = ["class", "images", "accuracy", "consistency", "flagged", "region", "accuracy covered"]


def chromium(*args, window: str = "1200,1600", timeout: int = 120) -> str:
    return headless_chromium(*args, window=window, budget_ms=5000, offline=True, timeout=timeout)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    given = os.environ.get("KG_AUDIT_REPORT")
    if given:
        assert pathlib.Path(given).is_file(), f"KG_AUDIT_REPORT={given!r} is not a file; run `make demo` first"
        return pathlib.Path(given).resolve()
    x, y, masks = corner_data()
    report = kg.audit(_model(crop=True), x, y, masks=masks, class_names=["red", "green"], method="hirescam",
                      layer="conv")
    return pathlib.Path(report.save(str(tmp_path_factory.mktemp("audit") / "audit"))).resolve()


def test_the_page_shows_the_class_table_and_its_embedded_images(page, tmp_path):
    summary = json.loads((page.parent / "summary.json").read_text())
    names = [c["name"] for c in summary["classes"]]
    source = page.read_text(encoding="utf-8")
    assert "http://" not in source and "https://" not in source  # nothing to fetch

    dom = chromium("--dump-dom", page.as_uri())
    table = re.search(r"<table>(.*?)</table>", dom, re.S)
    assert table, f"no class table in the rendered page: {dom[:500]}"
    rows = re.findall(r"<tr>(.*?)</tr>", table.group(1), re.S)
    headers = [html.unescape(h) for h in re.findall(r"<th>(.*?)</th>", rows[0])]
    assert headers[: len(HEADERS)] == HEADERS
    assert len(rows) == 1 + len(names)
    for row, c in zip(rows[1:], summary["classes"]):
        cells = [html.unescape(v) for v in re.findall(r"<td>(.*?)</td>", row)]
        assert cells[0].endswith(c["name"]) and cells[4] == ("YES" if c["flagged"] else "no")
    for name in summary["flagged"]:
        assert f"class {names.index(name)}: {name}" in html.unescape(dom)
    # the embedded images: each decodes as a PNG; every class has its mean map and frequency
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', dom)
    assert len(images) >= 1 + 2 * len(names)
    assert all(base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n" for b in images)

    shot = tmp_path / "audit.png"
    chromium(f"--screenshot={shot}", page.as_uri())
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))[..., :3]
    # drawn, not blank: the maps' saturated colours are on screen (about 1 % of the window; 0.1 % with
    # the images taken out, measured on the quick demo's page)
    saturation = pixels.max(axis=-1) - pixels.min(axis=-1)
    assert (saturation > 0.5).mean() > 0.004, "the screenshot shows no coloured picture"
    if os.environ.get("KG_SAVE_SCREENSHOT") == "1":
        target = ROOT / "docs" / "assets" / "audit_report.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)
    assert np.isfinite(pixels).all()
