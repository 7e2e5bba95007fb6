"""The core's fingerprint (part of every run id) covers every module that can change a number, in
subpackages too, and none of those that only present results."""

from __future__ import annotations

import shutil
from pathlib import Path

import fedbench
from fedbench.runs.fingerprint import core_fingerprint, package_fingerprint


def test_a_change_anywhere_in_the_core_but_presentation_changes_run_ids(tmp_path: Path):
    root = tmp_path / "fedbench"
    shutil.copytree(Path(fedbench.__file__).parent, root, ignore=shutil.ignore_patterns("__pycache__"))
    assert package_fingerprint(root) == core_fingerprint()  # the copy hashes as the package does
    (root / "engine_parts").mkdir()
    (root / "engine_parts" / "__init__.py").write_text("")
    kernel = root / "engine_parts" / "kernel.py"
    kernel.write_text("SCALE = 1.0\n")
    with_sub = package_fingerprint(root)
    assert with_sub != core_fingerprint()
    kernel.write_text("SCALE = 2.0\n")  # a numeric edit one folder down
    edited = package_fingerprint(root)
    assert edited != with_sub
    for presented in ("reporting/report.py", "reporting/htmlreport.py", "runs/executor.py", "cli.py"):
        (root / presented).write_text((root / presented).read_text() + "\n# a presentation edit\n")
        assert package_fingerprint(root) == edited, presented
    for computing in ("fl/learner.py", "engine/vectorized/train.py", "runs/build.py", "plugin/params.py"):
        (root / computing).write_text((root / computing).read_text() + "\n# an edit that may change numbers\n")
        assert package_fingerprint(root) != edited, computing
        edited = package_fingerprint(root)
