"""Per-client summaries (fedbench.fl.metrics), by hand."""

from __future__ import annotations

import numpy as np
import pytest

from fedbench.fl.client import EvalResult
from fedbench.fl.metrics import summarise


def _client(i: int, n_test: int, acc: float) -> EvalResult:
    return EvalResult(i, 10, n_test, 0.5, 0.9, 0.7 if n_test else 0.0, acc)


def test_the_summaries_by_hand_and_clients_without_a_test_set_left_out_of_the_per_client_ones():
    # three scored clients (accuracies 1.0, 0.5, 0.8 on 2, 4, 4 samples) and two with no test sample
    results = [_client(0, 2, 1.0), _client(1, 0, 0.0), _client(2, 4, 0.5), _client(3, 4, 0.8), _client(4, 0, 0.0)]
    s = summarise(results)
    assert s["test_acc"] == pytest.approx(100 * (2 * 1.0 + 4 * 0.5 + 4 * 0.8) / 10)  # 72 %
    assert s["test_acc_mean"] == pytest.approx(100 * (1.0 + 0.5 + 0.8) / 3)  # not / 5 (46 %)
    assert s["test_acc_p10"] == pytest.approx(100 * float(np.percentile([1.0, 0.5, 0.8], 10)))  # 56 %, not 0 %
    assert s["train_acc"] == pytest.approx(90.0)


def test_no_test_sample_anywhere_is_an_error_not_a_number():
    with pytest.raises(ValueError, match="no client has a test sample"):
        summarise([_client(0, 0, 0.0), _client(1, 0, 0.0)])


def test_a_run_says_when_some_clients_have_no_test_sample_and_scores_without_them(tmp_path):
    import sqlite3

    from tests.conftest import run_cli
    from tests.test_registry import make_dist

    # an outside data set whose own split leaves client 1 of 3 without a test sample
    make_dist(tmp_path, "no_test_ds", """
        import torch
        from fedbench import DatasetSpec, FederatedData, hookimpl

        def load(data_root=None, seed=0):
            g = torch.Generator().manual_seed(seed)
            x, y = torch.randn(60, 4, generator=g), torch.randint(0, 2, (60,), generator=g)
            return FederatedData(x[:45], y[:45], torch.tensor([0, 15, 30, 45]), x[45:], y[45:], torch.tensor([0, 8, 8, 15]),
                                 task="multiclass", num_classes=2)

        @hookimpl
        def fedbench_datasets():
            return [DatasetSpec(name="no_test_ds", doc="a client without a test sample", load=load, default_model="linear",
                                params={"seed": 0})]
        """)
    db = tmp_path / "r.sqlite"
    proc = run_cli("run", "--dataset", "no_test_ds", "--method", "fedavg", "--rounds", "2", "--results", str(db),
                   env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert "1 of 3 clients have no test sample; test_acc_mean and test_acc_p10 leave them out" in proc.stderr
    con = sqlite3.connect(db)
    assert con.execute("SELECT status FROM runs").fetchall() == [("done",)]  # (the values: the test above, by hand)
