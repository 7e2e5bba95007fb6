"""Shared by the pooled data sets: split one labelled pool over clients with a registered partitioner."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fedbench.fl.data import FederatedData
from fedbench.errors import DataError
from fedbench.plugin.params import Param
from fedbench.runs.partition import federate, split_indices
from fedbench.plugin.registry import get_registry

#: parameters of every pooled data set; the chosen partitioner's own settings (its spec's params)
#: join them for each run (``fedbench.runs.build.dataset_parameters``)
POOLED_PARAMS: dict[str, Any] = {
    "n_clients": Param(10, low=1, doc="number of clients"),
    "partitioner": Param("dirichlet", kind="partitioner", doc="how the pool is split over clients"),
    "test_fraction": Param(0.2, low=0.0, high=1.0, low_open=True, high_open=True, doc="per-client test share"),
    "seed": Param(0, doc="the split's seed (fixed across training seeds)"),
    "fraction": Param(1.0, low=0.0, high=1.0, low_open=True, doc="share of the pool kept"),
}


def kept_samples(n: int, params: dict[str, Any]) -> np.ndarray | None:
    """The sorted indices of the pool's samples kept (a seeded random ``fraction`` of ``n``), None for all.
    A loader may gather just these from its files and pass them to :func:`federate_pool` (``kept=``) with all
    ``n`` labels."""
    p = {**{k: v.default for k, v in POOLED_PARAMS.items()}, **params}
    fraction = float(p["fraction"])
    if not 0 < fraction <= 1:
        raise DataError(f"fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return None
    return np.sort(np.random.default_rng(int(p["seed"]) + 2).permutation(n)[: max(1, round(fraction * n))])


def federate_pool(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, params: dict[str, Any], coarse: torch.Tensor | None = None,
    kept: np.ndarray | None = None,
) -> FederatedData:
    """Keep a random ``fraction`` of the pool (seeded), split it over ``n_clients`` with ``partitioner``;
    each client's samples 80/20 train/test. ``coarse``: each sample's coarse label, for hierarchical partitioners.
    ``kept``: :func:`kept_samples` of the pool when the loader gathered only those samples into ``x`` (``y`` and
    ``coarse`` still cover the whole pool); by default the kept samples are drawn here and taken from ``x``."""
    p = {**{k: v.default for k, v in POOLED_PARAMS.items()}, **params}
    keep = kept_samples(len(y), p) if kept is None else kept
    if keep is not None:
        index = torch.from_numpy(keep)
        x = x if kept is not None else x[index]
        y = y[index]
        coarse = coarse[index] if coarse is not None else None
    if len(x) != len(y):
        raise DataError(f"{len(x)} images for {len(y)} labels after keeping a fraction {p['fraction']}; a loader "
                        "passes the whole pool, or kept=kept_samples(...) with exactly those images")
    if int(p["n_clients"]) > len(y):
        raise DataError(f"n_clients={p['n_clients']} is more than the {len(y):,} samples kept (fraction {p['fraction']}); "
                        "every client needs samples: lower n_clients or raise the fraction")
    if coarse is not None:
        p["coarse_labels"] = coarse.numpy()
    parts = split_indices(get_registry(), str(p["partitioner"]), y.numpy(), int(p["n_clients"]), int(p["seed"]), p)
    return federate(x, y, parts, test_fraction=float(p["test_fraction"]), seed=int(p["seed"]), task="multiclass", num_classes=num_classes)


def to_float_images(x: torch.Tensor, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> torch.Tensor:
    """uint8 images (N, C, H, W) as float32 in [0, 1], normalised per channel as ``(x - mean) / std`` when given:
    one float copy, the rest in place (what ``ToTensor`` then ``Normalize`` compute)."""
    out = x.to(torch.float32).div_(255.0)
    if mean is not None:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        out.sub_(torch.tensor(mean, dtype=torch.float32).view(shape)).div_(torch.tensor(std, dtype=torch.float32).view(shape))
    return out


def image_table(channels: int, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> torch.Tensor:
    """The ``(channels, 256)`` lookup of every uint8 level in every channel through :func:`to_float_images`
    (one row when no per-channel normalisation makes the channels differ): the data set's
    ``input_table``, so that a stored pixel becomes, batch by batch, exactly the float the whole-image
    conversion gives (an elementwise map: a pixel's value depends on its level and channel only)."""
    rows = channels if mean is not None and len(mean) > 1 else 1
    levels = torch.arange(256, dtype=torch.uint8).view(1, 1, 256).expand(1, rows, 256).contiguous()
    return to_float_images(levels, mean, std).view(rows, 256)


def federate_images(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, params: dict[str, Any], coarse: torch.Tensor | None = None,
    mean: Sequence[float] | None = None, std: Sequence[float] | None = None, drop_last: bool = False,
    kept: np.ndarray | None = None,
) -> FederatedData:
    """:func:`federate_pool` on uint8 images, kept as uint8 (a quarter of float32: CIFAR-10's 60,000 images are
    0.18 GB, not 0.7 GB); each model turns a batch into floats in [0, 1], normalised per channel when ``mean``
    and ``std`` are given, through the data set's ``input_table`` (:func:`image_table`)."""
    if x.dtype != torch.uint8:
        raise DataError(f"federate_images takes uint8 images, got {x.dtype}")
    data = federate_pool(x, y, num_classes, params, coarse=coarse, kept=kept)
    return dataclasses.replace(data, drop_last=drop_last, input_table=image_table(x.shape[1], mean, std))
