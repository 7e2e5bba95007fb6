"""Slow: the FedEM paper's synthetic benchmark end to end (run with `pytest -m slow` or `tox -e slow`)."""

from __future__ import annotations

import pytest

from fedbench.runs.build import resolve_run
from fedbench.runs.runner import execute_run
from fedbench.reporting.store import ResultStore
from fedbench.runs.suite import load_suite


@pytest.mark.slow
def test_synthetic_paper_setting_lands_beside_the_authors_numbers(registry, tmp_path):
    """Seed 1 of the synthetic-paper suite: every method within 2 points of the authors' code
    (FedEM's spread over seeds is about ±1), and the paper's ordering FedEM > FedAvg > Local."""
    suite = load_suite(registry, "synthetic-paper", seeds=[1])
    refs = suite.references.set_index("method")["value"]
    store = ResultStore(tmp_path / "r.sqlite")
    acc = {}
    for cfg in suite.runs:
        out = execute_run(registry, cfg, store, progress=False)
        assert out.status == "done", out.error
        acc[cfg.method] = out.metrics["test_acc"]
    for method, value in acc.items():
        assert abs(value - refs[method]) <= 2.0, (method, value, refs[method])
    assert acc["fedem"] > acc["fedavg"] + 3 > acc["local"] + 3


@pytest.mark.slow
def test_both_engines_agree_on_the_full_fedem_run(registry, tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    outs = [
        execute_run(
            registry,
            resolve_run(registry, dataset="synthetic", method="fedem", seed=1, overrides={"rounds": 200, "eval_every": 50}, engine=e),
            store, progress=False, force=True,
        )
        for e in ("vectorized", "sequential")
    ]
    assert abs(outs[0].metrics["test_acc"] - outs[1].metrics["test_acc"]) < 0.1
