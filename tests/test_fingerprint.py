"""The core's fingerprint (part of every run id) covers every module that can change a number, in
subpackages too, and none of those that only present results."""

from __future__ import annotations

import shutil
from pathlib import Path

import fedbench
from fedbench.fingerprint import core_fingerprint, package_fingerprint


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
    (root / "report.py").write_text((root / "report.py").read_text() + "\n# a presentation edit\n")
    assert package_fingerprint(root) == edited
    (root / "learner.py").write_text((root / "learner.py").read_text() + "\n# an edit to the training loop's file\n")
    assert package_fingerprint(root) != edited
