"""A conformance check a plugin author runs in their own tests: ``check_method("name")``.

As scikit-learn's ``check_estimator`` does for estimators, :func:`check_method` runs a registered method on
a tiny federation and asserts what fedbench promises of every method::

    from fedbench.testing import check_method

    def test_my_method_conforms():
        report = check_method("fedmedian")
        assert not report.declined  # optional: insist that the batched engine runs it

It checks, in order, and raises ``AssertionError`` naming the first check that fails:

1. **bounds**: a value outside each declared range of the method's parameters (its client's, its
   aggregator's, its shared ones) is refused with a ``ConfigError`` before anything runs;
2. **determinism**: the same configuration and seed, built twice, gives bit-identical parameters, round
   statistics and evaluations, on each engine;
3. **both backends**: the one-client-at-a-time engine and the batched one give the same parameters, round
   statistics and per-client evaluations after every round (to ``rtol``/``atol``), or the batched one
   declines with a reason (reported in ``CheckReport.declined``, never a different result);
4. **partial participation**: the same with half the clients sampled per round (a method that refuses it
   with a ``ConfigError`` is reported in ``CheckReport.skipped``);
5. **unseen clients**: with ``unseen_fraction``, clients held out of training are scored after adapting
   (finite losses, accuracies in [0, 1]), or the method says it serves none (``None``);
6. **a stored run**: a run written to a real results file reads back with the metrics it computed, and
   running it again computes nothing.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fedbench.runs.build import build_simulation, resolve_run
from fedbench.errors import ConfigError
from fedbench.plugin.registry import Registry, get_registry

#: the tiny federation every check trains: the synthetic data set with 8 clients of 10 features
TINY = {"dataset.n_clients": 8, "dataset.n_test": 40, "dataset.dim": 10, "eval_every": 1}


@dataclass
class CheckReport:
    """What :func:`check_method` checked: the checks passed, what the batched engine declined (and why),
    and checks that did not apply (and why)."""

    method: str
    passed: list[str] = field(default_factory=list)
    declined: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def check_method(name: str, *, dataset: str = "synthetic", settings: Mapping[str, Any] | None = None,
                 rounds: int = 3, seed: int = 7, rtol: float = 1e-5, atol: float = 1e-6,
                 registry: Registry | None = None) -> CheckReport:
    """Run the conformance checks on the registered method ``name`` (see the module doc); ``settings``
    (``GROUP.KEY`` -> value) go on top of the tiny federation's. Returns a :class:`CheckReport`."""
    registry = registry or get_registry()
    over = {**(TINY if dataset == "synthetic" else {}), "rounds": rounds, **dict(settings or {})}
    report = CheckReport(name)
    _bounds(registry, name, dataset, over, report)
    sims = {}
    for engine in ("sequential", "vectorized"):
        cfg = _config(registry, dataset, name, seed, over, engine)
        if cfg is None:
            report.declined["vectorized"] = _why_not_vectorised(registry, dataset, name, seed, over)
            continue
        a, b = _trace(registry, cfg), _trace(registry, cfg)
        _assert_same(a, b, 0.0, 0.0, f"{name}: the {engine} engine, built twice with seed {seed}, differs")
        sims[engine] = a
    report.passed.append("determinism")
    if len(sims) == 2:
        _assert_same(sims["sequential"], sims["vectorized"], rtol, atol, f"{name}: the two engines differ")
        declined = sims["vectorized"]["declined"]
        if declined:
            report.declined["vectorized rounds"] = declined
        report.passed.append("both backends")
    _partial(registry, name, dataset, seed, over, rtol, atol, report)
    _unseen(registry, name, dataset, seed, over, report)
    _stored(registry, name, dataset, seed, over, report)
    return report


def _config(registry: Registry, dataset: str, name: str, seed: int, over: dict, engine: str):  # noqa: ANN202
    """The run's configuration on ``engine``, or None where the batched engine cannot build it."""
    cfg = resolve_run(registry, dataset=dataset, method=name, seed=seed, overrides=over, engine=engine)
    if engine == "vectorized":
        try:
            build_simulation(registry, cfg)
        except ConfigError as e:
            if "vectorized engine cannot run this" in str(e):
                return None
            raise
    return cfg


def _why_not_vectorised(registry: Registry, dataset: str, name: str, seed: int, over: dict) -> str:
    cfg = resolve_run(registry, dataset=dataset, method=name, seed=seed, overrides=over, engine="auto")
    return build_simulation(registry, cfg).engine


def _trace(registry: Registry, cfg) -> dict:  # noqa: ANN001
    """Every round's statistics and parameters, and every evaluation, of ``cfg``'s run."""
    sim = build_simulation(registry, cfg)
    agg = sim.aggregator
    out: dict[str, Any] = {"rounds": [], "params": [], "evals": []}
    out["evals"].append(_scores(agg.evaluate()))
    for r in range(cfg.train.rounds):
        stats = agg.fit_round(r)
        out["rounds"].append((stats.train_loss, stats.bytes_sent))
        out["params"].append(_params(agg))
        out["evals"].append(_scores(agg.evaluate()))
    engine = agg.engine
    out["declined"] = engine.note().strip()
    return out


def _params(agg) -> list[torch.Tensor]:  # noqa: ANN001
    """The aggregator's global parameters and what each client keeps of its own between rounds."""
    kept = [t for c in agg.clients for key in sorted(getattr(c, "kept", {}) or {}) for t in c.kept[key]
            if isinstance(t, torch.Tensor)]
    weights = [c.learners_weights for c in agg.clients if isinstance(getattr(c, "learners_weights", None), torch.Tensor)]
    return [p.detach().clone() for p in [*agg.global_params, *kept, *weights]]


def _scores(results) -> list[tuple]:  # noqa: ANN001
    return [(r.client_id, r.n_train, r.n_test, r.train_loss, r.train_acc, r.test_loss, r.test_acc) for r in results]


def _assert_same(a: dict, b: dict, rtol: float, atol: float, what: str) -> None:
    for r, (x, y) in enumerate(zip(a["rounds"], b["rounds"])):
        assert math.isclose(x[0], y[0], rel_tol=rtol, abs_tol=atol) and x[1] == y[1], \
            f"{what}: round {r + 1}'s train loss / bytes: {x} against {y}"
    for r, (xs, ys) in enumerate(zip(a["params"], b["params"])):
        assert len(xs) == len(ys), f"{what}: round {r + 1} keeps {len(xs)} against {len(ys)} tensors"
        for i, (x, y) in enumerate(zip(xs, ys)):
            close = torch.equal(x, y) if rtol == atol == 0.0 else torch.allclose(x, y, rtol=rtol, atol=atol)
            assert close, f"{what}: after round {r + 1}, tensor {i} differs by {float((x - y).abs().max()):.3g}"
    for r, (xs, ys) in enumerate(zip(a["evals"], b["evals"])):
        for x, y in zip(xs, ys):
            same = x[:3] == y[:3] and all(math.isclose(u, v, rel_tol=rtol, abs_tol=atol) for u, v in zip(x[3:], y[3:]))
            assert same, f"{what}: evaluation after round {r}, client {x[0]}: {x} against {y}"


def _bounds(registry: Registry, name: str, dataset: str, over: dict, report: CheckReport) -> None:
    me = registry.get("method", name)
    groups = [("client", registry.get("client", me.client).rules), ("aggregator", registry.get("aggregator", me.aggregator).rules),
              ("method", me.shared_rules)]
    tried = 0
    for group, rules in groups:
        for key, rule in rules.items():
            bad = [v for v in ((rule.low - 1.0) if rule.low is not None else None,
                               (rule.high + 1.0) if rule.high is not None and math.isfinite(rule.high) else None)
                   if v is not None and math.isfinite(v)]
            for value in bad:
                tried += 1
                try:
                    resolve_run(registry, dataset=dataset, method=name, seed=0, overrides={**over, f"{group}.{key}": value})
                except ConfigError:
                    continue
                raise AssertionError(f"{name}: {group}.{key}={value!r} is outside its declared range ({rule.rule()}) "
                                     "but was accepted")
    if tried:
        report.passed.append("bounds")
    else:
        report.skipped["bounds"] = "no parameter of the method declares a range"


def _partial(registry: Registry, name: str, dataset: str, seed: int, over: dict, rtol: float, atol: float,
             report: CheckReport) -> None:
    part = {**over, "participation": 0.5}
    try:
        cfgs = [_config(registry, dataset, name, seed, part, e) for e in ("sequential", "vectorized")]
    except (ConfigError, ValueError) as e:  # a method that needs every client says so when it is built
        report.skipped["partial participation"] = f"refused: {e}"
        return
    traces = [_trace(registry, c) for c in cfgs if c is not None]
    if len(traces) == 2:
        _assert_same(traces[0], traces[1], rtol, atol, f"{name}: with participation 0.5 the two engines differ")
    report.passed.append("partial participation")


def _unseen(registry: Registry, name: str, dataset: str, seed: int, over: dict, report: CheckReport) -> None:
    cfg = resolve_run(registry, dataset=dataset, method=name, seed=seed, overrides={**over, "unseen_fraction": 0.25})
    sim = build_simulation(registry, cfg)
    sim.aggregator.fit_round(0)
    scores = sim.aggregator.evaluate_new(sim.unseen)
    if scores is None:
        report.skipped["unseen clients"] = "the method serves no new clients (evaluate_new gives None)"
        return
    assert len(scores) == len(sim.unseen), f"{name}: {len(scores)} scores for {len(sim.unseen)} unseen clients"
    for s in scores:
        assert math.isfinite(s.test_loss) and 0.0 <= s.test_acc <= 1.0, f"{name}: an unseen client scores {s}"
    report.passed.append("unseen clients")


def _stored(registry: Registry, name: str, dataset: str, seed: int, over: dict, report: CheckReport) -> None:
    from fedbench.runs.runner import execute_run
    from fedbench.reporting.store import ResultStore

    cfg = resolve_run(registry, dataset=dataset, method=name, seed=seed, overrides=over)
    with tempfile.TemporaryDirectory() as folder:
        store = ResultStore(Path(folder) / "check.sqlite")
        try:
            first = execute_run(registry, cfg, store, progress=False)
            assert first.status == "done", f"{name}: the stored run ended {first.status}: {first.error}"
            stored = store.metrics([cfg.run_id])
            last = stored[stored["round"] == stored["round"].max()]
            for metric, value in first.metrics.items():
                got = last.loc[last["name"] == metric, "value"]
                assert len(got) and math.isclose(float(got.iloc[0]), value, rel_tol=1e-12, abs_tol=0.0), \
                    f"{name}: stored {metric} {list(got)} is not the computed {value}"
            again = execute_run(registry, cfg, store, progress=False)
            assert again.status == "skipped", f"{name}: a run already done was computed again ({again.status})"
        finally:
            store.close()
    report.passed.append("stored run")
