"""FedMedian (Yin et al., ICML 2018) as a third-party fedbench plugin.

The server replaces the weighted mean of the clients' parameters by their
coordinate-wise median, a classic defence against a minority of corrupted
updates. With ``trim = 0`` the median is taken over all sampled clients.
Nothing in fedbench is changed: this module registers an aggregator and a
method through fedbench's hooks, found via this package's entry point.
"""

from __future__ import annotations

import torch

from fedbench import AggregatorSpec, CentralizedAggregator, MethodSpec, hookimpl


def coordinate_median(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The coordinate-wise median (the mean of the two middle values for an even count)."""
    stacked = torch.stack(tensors).sort(dim=0).values
    n = stacked.shape[0]
    return stacked[n // 2] if n % 2 else (stacked[n // 2 - 1] + stacked[n // 2]) / 2


class MedianAggregator(CentralizedAggregator):
    """Server aggregation by coordinate-wise median instead of the weighted mean."""

    def aggregate_fit(self, round_, updates):  # noqa: ANN001
        self.global_params = [
            coordinate_median([u.params[m] for u in updates]) for m in range(len(self.global_params))
        ]


@hookimpl
def fedbench_aggregators():  # noqa: ANN201
    return [AggregatorSpec(name="median", doc="coordinate-wise median of the clients' parameters", cls=MedianAggregator)]


@hookimpl
def fedbench_methods():  # noqa: ANN201
    return [
        MethodSpec(
            name="fedmedian",
            doc="FedMedian: coordinate-wise median aggregation (Yin et al. 2018)",
            client="plain",
            aggregator="median",
            n_learners=1,
        )
    ]
