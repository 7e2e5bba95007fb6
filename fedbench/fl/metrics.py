"""Summaries of per-client evaluation results, as in the FedEM paper.

The headline is accuracy over all clients' test samples (the average of
client accuracies weighted by test-set size); fairness is read from the
unweighted mean and the 10th percentile over the clients that have a test set (a client without
a test sample has no accuracy; counting it as 0 % would pull both down without a word; the run
says how many there are when it starts). Accuracies in percent.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedbench.fl.client import EvalResult


def summarise(results: Sequence[EvalResult]) -> dict[str, float]:
    """Weighted and per-client summaries of one evaluation of all clients."""
    if not results:
        raise ValueError("no evaluation results to summarise")
    n_test = np.array([r.n_test for r in results], dtype=float)
    n_train = np.array([r.n_train for r in results], dtype=float)
    test_acc = np.array([r.test_acc for r in results])
    scored = n_test > 0  # a client without a test sample has no accuracy (not 0 %): it is left out
    if not scored.any():
        raise ValueError("no client has a test sample: nothing to score; lower the data set's train fraction")
    return {
        "test_acc": 100 * float(np.average(test_acc, weights=n_test)),
        "test_acc_mean": 100 * float(test_acc[scored].mean()),
        "test_acc_p10": 100 * float(np.percentile(test_acc[scored], 10)),
        "test_loss": float(np.average([r.test_loss for r in results], weights=n_test)),
        "train_acc": 100 * float(np.average([r.train_acc for r in results], weights=n_train)),
        "train_loss": float(np.average([r.train_loss for r in results], weights=n_train)),
    }
