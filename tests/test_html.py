"""leaderboard.html in a real browser: Debian's headless chromium loads the page from disk and from a static
HTTP server, a sort requested through the URL hash reorders the headline rows, and a screenshot is not blank.

Skipped only where chromium is absent and `CI` is unset; in CI a missing browser fails the test.
"""
from __future__ import annotations

import functools
import html
import http.server
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from cellfactory import cell, write_cells
from ecgbench.report.write import write_report

N = 60


def _browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    if os.environ.get("CI"):
        pytest.fail("CI is set but no chromium is installed: .ci/run installs Debian's chromium for this test")
    pytest.skip("no chromium on this machine (apt-get install chromium); CI runs this test")


def _ok(k: int, offset: int = 0) -> np.ndarray:
    return (np.arange(N) + offset) % N < k


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    """A run of three models whose ranking (white-box worst case) differs from their clean-accuracy order."""
    out = tmp_path_factory.mktemp("html") / "run"
    records = []
    for model, clean, fgsm, boundary, params in (("alpha", 40, 30, 35, 300), ("bravo", 55, 10, 50, 1500), ("charlie", 50, 20, 45, 200)):
        records += [cell(model, None, "clean", _ok(clean), n_params=params), cell(model, "fgsm", "adaptive", _ok(fgsm), n_params=params),
                    cell(model, "boundary", "adaptive", _ok(boundary), n_params=params), cell(model, "fgsm", "static", _ok(clean - 2), n_params=params)]
    write_report(write_cells(out, records))
    return out / "leaderboard.html"


def _dump(url: str, tmp: Path) -> str:
    res = subprocess.run([_browser(), "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp / 'profile'}",
                          "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def _rows(dom: str) -> list[list[str]]:
    """The headline table's body rows, as cell texts, in DOM order."""
    table = re.search(r'<table class="sortable" id="headline-mitbih".*?</table>', dom, re.S)
    assert table, "headline table missing from the DOM"
    body = re.search(r"<tbody>(.*)</tbody>", table.group(0), re.S).group(1)
    return [[html.unescape(re.sub(r"<[^>]+>", "", td)).strip() for td in re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)]
            for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)]


def test_page_is_self_contained(page: Path):
    text = page.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), "the page must not fetch anything"
    assert "<link" not in text and "<script src" not in text
    pngs = sorted(p.name for p in page.parent.glob("*.png"))
    assert pngs and text.count("data:image/png;base64,") == len(pngs)
    assert "Provenance" in text and "ecgbench run --profile quick" in text


def test_headline_rows_load_and_sort_by_any_column_from_disk(page: Path, tmp_path: Path):
    default = _rows(_dump(page.as_uri(), tmp_path))
    assert [r[1] for r in default] == ["alpha", "charlie", "bravo"]  # ranked by white-box worst case: 30, 20, 10 %
    by_clean = _rows(_dump(page.as_uri() + "#sort=clean:desc", tmp_path))
    assert [r[1] for r in by_clean] == ["bravo", "charlie", "alpha"]  # 55, 50, 40 %
    by_params = _rows(_dump(page.as_uri() + "#sort=params:asc", tmp_path))
    assert [r[2] for r in by_params] == ["200", "300", "1,500"]  # by number, not text ("1,500" < "200" as text)
    by_name = _rows(_dump(page.as_uri() + "#sort=model:desc", tmp_path))
    assert [r[1] for r in by_name] == ["charlie", "bravo", "alpha"]
    assert sorted(map(tuple, by_clean)) == sorted(map(tuple, default))  # a sort moves rows, never changes them


def test_page_served_by_a_static_http_server_sorts_too(page: Path, tmp_path: Path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(page.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        dom = _dump(f"http://127.0.0.1:{server.server_address[1]}/leaderboard.html#sort=black-box-worst:desc", tmp_path)
    finally:
        server.shutdown()
    assert [r[1] for r in _rows(dom)] == ["bravo", "charlie", "alpha"]  # boundary: 50, 45, 35 %


def test_screenshot_is_not_blank(page: Path, tmp_path: Path):
    import matplotlib.image

    shot = tmp_path / "shot.png"
    res = subprocess.run([_browser(), "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
                          f"--screenshot={shot}", "--window-size=1200,900", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (900, 1200)
    dark = (pixels.mean(axis=2) < 0.5).mean()
    assert pixels.std() > 0.05 and 0.005 < dark < 0.5, f"screenshot looks blank (std {pixels.std():.3f}, dark share {dark:.4f})"
