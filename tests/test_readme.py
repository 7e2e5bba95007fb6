"""The README's code is what runs: its Python example and its plugin example, as a new user would copy them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.test_registry import make_dist

ROOT = Path(__file__).resolve().parents[1]


def _block(heading: str) -> str:
    """The first fenced python block after ``heading`` in the README."""
    text = (ROOT / "README.md").read_text()
    start = text.index("```python\n", text.index(heading)) + len("```python\n")
    return text[start:text.index("```", start)]


def _python(code: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, timeout=900)


def test_the_readme_python_example_runs(tmp_path):
    proc = _python(_block("## From Python"), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "results" / "fedbench.sqlite").is_file()  # the suite's runs went where the example says
    assert "fedem" in proc.stdout and "vectorized" in proc.stdout


def test_the_readme_plugin_example_installs_runs_and_passes_the_conformance_check(tmp_path):
    make_dist(tmp_path, "fedprox_plus", _block("## Adding a method"))
    check = ("from fedbench.testing import check_method\n"
             "report = check_method('fedprox-plus', settings={'client.mu': 0.5})\n"
             "print(sorted(report.passed), report.declined)\n")
    proc = _python(check, tmp_path, {"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "'both backends'" in proc.stdout and "'bounds'" in proc.stdout and "{}" in proc.stdout  # batched, nothing declined
