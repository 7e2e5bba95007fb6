"""``fedbench report --format html``: one self-contained page, opened in a real headless browser (Chromium),
its tables read back from the rendered DOM and compared with numbers computed here from the SQLite file."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

import fedbench
from tests.conftest import run_cli

BROWSER = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
needs_browser = pytest.mark.skipif(BROWSER is None, reason="no Chromium here (Debian: apt-get install chromium)")

SUITE = """description = "tiny, with reference numbers"
headline = "fedavg"
methods = ["fedavg", "local", "fedprox"]
seeds = [1, 2]
references = "ref.csv"
[set]
rounds = 4
eval_every = 2
[datasets.synthetic]
n_clients = 8
n_test = 60
dim = 10
"""
REFERENCE = "dataset,method,metric,value,source\nsynthetic,fedavg,test_acc,61.5,paper\nsynthetic,local,test_acc,55.25,paper\n"


class Tables(HTMLParser):
    """Every ``<table id=...>`` of a page as rows of cell texts, and the page's visible headings."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.headings: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._heading: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "table":
            self._table = dict(attrs).get("id", "")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []
        elif tag in ("h1", "h2"):
            self._heading = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        elif tag in ("td", "th") and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag in ("h1", "h2") and self._heading is not None:
            self.headings.append("".join(self._heading).strip())
            self._heading = None

    def handle_data(self, data: str) -> None:
        for part in (self._cell, self._heading):
            if part is not None:
                part.append(data)


def _browser(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("html")
    (tmp / "tiny.toml").write_text(SUITE)
    (tmp / "ref.csv").write_text(REFERENCE)
    db = tmp / "r.sqlite"
    fedbench.run_suite(str(tmp / "tiny.toml"), results=db, progress=False)
    proc = run_cli("report", "--suite", str(tmp / "tiny.toml"), "--results", str(db), "--format", "html",
                   "--out", str(tmp / "out" / "report.html"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(tmp / "out" / "report.html")
    return tmp, db, tmp / "out" / "report.html"


def _final(db: Path) -> dict[tuple[str, int], float]:
    """(method, seed) -> test_acc at the last round, straight from the SQLite file."""
    rows = sqlite3.connect(db).execute(
        "SELECT r.method, r.seed, m.value FROM metrics m JOIN runs r USING (run_id) "
        "WHERE m.name = 'test_acc' AND m.round = r.rounds").fetchall()
    return {(m, s): v for m, s, v in rows}


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def test_the_page_is_self_contained(page):
    _, _, path = page
    text = path.read_text()
    assert "<script" not in text and "<link" not in text and "@import" not in text
    assert not re.search(r"""\bsrc\s*=""", text)  # no image, frame or script from anywhere
    assert all(h.startswith("#") for h in re.findall(r"""href\s*=\s*["']([^"']*)""", text))  # links inside the page only


@needs_browser
def test_the_rendered_tables_hold_the_stored_numbers(page):
    tmp, db, path = page
    dom = _browser("--dump-dom", path.as_uri())
    assert dom.returncode == 0 and "<table" in dom.stdout, dom.stderr[-2000:]
    parsed = Tables()
    parsed.feed(dom.stdout)
    final = _final(db)
    comp = parsed.tables["comparison"]
    header, row = comp[0], comp[1]
    cells = dict(zip(header, row))
    means = {}
    for method in ("fedavg", "local", "fedprox"):
        mean, std = _mean_std([final[(method, 1)], final[(method, 2)]])
        means[method] = mean
        assert cells[method].startswith(f"{mean:.2f} ± {std:.2f} (n=2)"), (method, cells[method])
    refs = {r[1]: r for r in parsed.tables["references"][1:]}
    ref_header = parsed.tables["references"][0]
    for method, value in (("fedavg", 61.5), ("local", 55.25)):
        got = dict(zip(ref_header, refs[method]))
        assert float(got["reference"]) == value
        assert float(got["delta"]) == pytest.approx(means[method] - value, abs=0.006)
    gap = dict(zip(parsed.tables["gaps"][0], parsed.tables["gaps"][1]))
    best = max(("local", "fedprox"), key=means.get)
    assert gap["headline"] == "fedavg" and gap["best other"] == best
    assert float(gap["gap"]) == pytest.approx(means["fedavg"] - means[best], abs=0.006)
    assert len(parsed.tables["runs"]) == 1 + 6
    assert {"Learning curves", "test_acc against bytes sent", "Per-client accuracy"} <= set(parsed.headings)
    assert dom.stdout.count("<svg") == 3 and "mean ± std over 2 seeds" in dom.stdout


@needs_browser
def test_the_screenshot_shows_the_figures(page):
    import numpy as np
    from matplotlib.image import imread

    tmp, _, path = page
    shot = Path(os.environ.get("FEDBENCH_ARTIFACTS", tmp)) / "report-screenshot.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    proc = _browser(f"--screenshot={shot}", "--window-size=1200,2400", path.as_uri())
    assert shot.is_file(), proc.stderr[-2000:]
    image = imread(shot)[..., :3]
    assert image.shape[:2] == (2400, 1200)
    vermillion = np.array([0xD5, 0x5E, 0x00]) / 255  # the headline's curves, drawn only inside the figures
    near = np.abs(image - vermillion).max(axis=2) < 0.05
    assert near.sum() > 500
    assert len(np.unique((image * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 50  # not a blank page
