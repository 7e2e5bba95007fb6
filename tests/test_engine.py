"""The vectorised engine equals the one-at-a-time path."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from fedbench import Client
from fedbench.runs.build import build_simulation, resolve_run
from fedbench.engine import vectorisable
from fedbench.errors import ConfigError
from fedbench.runs.runner import execute_run
from fedbench.reporting.store import ResultStore
from tests.conftest import TINY

CASES = [
    ("fedem", {}),
    ("fedem", {"local_epochs": 2, "batch_size": 16, "participation": 0.5}),
    ("fedavg", {"batch_size": 7, "weight_decay": 0.01}),
    ("fedavg", {"momentum": 0.0, "keep_optimizer_state": False}),
    ("local", {"batch_size": 32}),
    ("pfedme", {"participation": 0.5, "batch_size": 16}),  # per-client starting points and a proximal anchor
    ("ditto", {"participation": 0.5}),  # two phases: the sent global fit, the kept personal fit with its own momentum
    ("fedrep", {"batch_size": 16, "client.head_epochs": 2}),  # frozen tensors per phase, a kept head merged in
    ("apfl", {"batch_size": 16, "participation": 0.5}),  # the client's own step: two learners on the same batches
    ("pfedme-moreau", {"batch_size": 16, "client.k_steps": 2, "participation": 0.5}),  # its own step, a carried personal model
    # and every other method of the suite
    ("fedprox", {"participation": 0.5}),
    ("scaffold", {}),
    ("fedavg+", {}),
    ("fedbn", {"participation": 0.5}),
    ("fedavgm", {}),
    ("fedadam", {}),
    ("fedyogi", {}),
    ("clustered", {}),
    ("d-fedavg", {}),
    ("d-fedem", {}),
    ("qffl", {"participation": 0.5}),
    ("afl", {}),
    ("l2sgd", {}),
]


def _pair(registry, method, extra):
    sims = []
    for engine in ("sequential", "vectorized"):
        cfg = resolve_run(registry, dataset="synthetic", method=method, seed=3, overrides={**TINY, **extra}, engine=engine)
        sims.append(build_simulation(registry, cfg))
    assert sims[0].engine.startswith("sequential") and sims[1].engine.startswith("vectorized")
    return sims[0].aggregator, sims[1].aggregator


def _state(agg):
    personal = getattr(agg, "personal", None)
    if personal is not None:
        return [p for cid in sorted(personal) for p in personal[cid]]
    # and what clients keep to themselves (Ditto's personal models, FedRep's heads)
    kept = [p for c in agg.clients for name in sorted(c.kept) for p in c.kept[name]]
    assert len(kept) == sum(len(ps) for c in agg.clients for ps in c.kept.values())
    own = [p for c in agg.clients for p in (getattr(c, "_own", None) or [])]
    return agg.global_params + kept + own


def test_every_method_of_the_baselines_suite_is_compared(registry):
    from fedbench.runs.suite import load_suite

    suite = load_suite(registry, "baselines-synthetic")
    assert {run.method for run in suite.runs} <= {method for method, _ in CASES}


@pytest.mark.parametrize("method, extra", CASES)
def test_parameters_equal_after_every_round(registry, method, extra):
    seq, vec = _pair(registry, method, extra)
    for r in range(3):
        stats_s, stats_v = seq.fit_round(r), vec.fit_round(r)
        assert stats_v.train_loss == pytest.approx(stats_s.train_loss, rel=1e-5)
        assert stats_v.bytes_sent == stats_s.bytes_sent
        for a, b in zip(_state(seq), _state(vec)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        for cs, cv in zip(seq.clients, vec.clients):
            torch.testing.assert_close(cs.learners_weights, cv.learners_weights, rtol=1e-5, atol=1e-6)
            for ms, mv in zip(cs.momentum, cv.momentum):
                assert (ms is None) == (mv is None)
                if ms is not None:
                    torch.testing.assert_close(ms, mv, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["fedem", "local", "d-fedem", "pfedme", "ditto", "fedrep", "apfl", "pfedme-moreau"])
def test_evaluation_equal(registry, method):
    seq, vec = _pair(registry, method, {})
    seq.fit_round(0), vec.fit_round(0)
    for a, b in zip(seq.evaluate(), vec.evaluate()):
        assert (a.client_id, a.n_train, a.n_test) == (b.client_id, b.n_train, b.n_test)
        for field in ("train_loss", "train_acc", "test_loss", "test_acc"):
            assert getattr(b, field) == pytest.approx(getattr(a, field), rel=1e-5, abs=1e-6)


def test_final_accuracy_equal_end_to_end(registry, tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    outs = []
    for engine in ("sequential", "vectorized"):
        cfg = resolve_run(registry, dataset="synthetic", method="fedem", seed=1, overrides={**TINY, "rounds": 6}, engine=engine)
        outs.append(execute_run(registry, cfg, store, progress=False, force=True))
    assert outs[0].engine.startswith("sequential") and outs[1].engine.startswith("vectorized")
    assert abs(outs[0].metrics["test_acc"] - outs[1].metrics["test_acc"]) < 0.1


class TestFallback:
    def test_models_whose_state_cannot_be_vectorised_fall_back(self):
        counter = nn.Linear(2, 2)
        counter.register_buffer("steps", torch.zeros((), dtype=torch.long))
        assert "non-floating-point buffers (steps)" in vectorisable(counter, [])
        assert "dropout" in vectorisable(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)), [])
        assert vectorisable(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)), []) is None  # per-row buffers

    def test_client_overriding_the_loop_is_not_vectorisable(self):
        class Custom(Client):
            def step(self, params, round_, lr):
                return super().step(params, round_, lr)

        reason = vectorisable(nn.Linear(2, 1), [object.__new__(Custom)])
        assert "Custom overrides step()" in reason

    def test_plain_and_mixture_clients_are_vectorisable(self, registry):
        seq, vec = _pair(registry, "fedem", {})
        assert vectorisable(nn.Linear(2, 1), vec.clients) is None

    def test_a_batchnorm_model_with_a_clients_own_step_falls_back_and_forcing_vectorized_fails_clearly(self, registry):
        bn = {**TINY, "model": "mlp", "model.batch_norm": True}
        cfg = resolve_run(registry, dataset="synthetic", method="apfl", seed=0, overrides=bn, engine="vectorized")
        with pytest.raises(ConfigError, match="vectorized engine cannot run this: client type .* own step"):
            build_simulation(registry, cfg)
        auto = build_simulation(registry, resolve_run(registry, dataset="synthetic", method="apfl", seed=0, overrides=bn))
        assert auto.engine.startswith("sequential (vectorized engine not applicable: client type")
        auto.aggregator.fit_round(0)  # and the fallback really trains


BATCHNORM = [  # the model's running statistics per client: shared and averaged, kept (FedBN), with mixtures
    ("fedavg", {"batch_size": 16}),
    ("fedavg", {"batch_size": 17, "participation": 0.5}),  # a lone last sample (86 = 5 x 17 + 1): skipped, as the reference does
    ("fedbn", {"batch_size": 16}),
    ("fedem", {"batch_size": 16, "local_epochs": 2}),
    ("ditto", {"batch_size": 16, "participation": 0.5}),  # a kept phase: its statistics are not the client's
    ("local", {"batch_size": 16}),
]


@pytest.mark.parametrize("method, extra", BATCHNORM)
def test_batchnorm_models_train_vectorised_with_the_reference_statistics(registry, method, extra):
    seq, vec = _pair(registry, method, {"model": "mlp", "model.hidden": 8, "model.batch_norm": True, **extra})
    assert vectorisable(vec.engine.model, vec.clients) is None
    if extra["batch_size"] == 17:
        assert any(c.n_train % 17 == 1 for c in vec.clients)
    for r in range(3):
        a, b = seq.fit_round(r), vec.fit_round(r)
        assert b.train_loss == pytest.approx(a.train_loss, rel=1e-5)
        for p, q in zip(_state(seq), _state(vec)):
            torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)
        for cs, cv in zip(seq.clients, vec.clients):  # every client's running statistics
            for p, q in zip(cs.buffers, cv.buffers):
                torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)
        assert (seq.global_buffers is None) == (vec.global_buffers is None)
        for p, q in zip(seq.global_buffers or [], vec.global_buffers or []):
            torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)
    moved = [c for c in vec.clients if not torch.equal(c.buffers[0], vec.clients[0].ensemble.learners[0].get_buffers() * 0)]
    assert moved  # statistics really were computed
    for a, b in zip(seq.evaluate(), vec.evaluate()):
        assert b.test_loss == pytest.approx(a.test_loss, rel=1e-4) and b.test_acc == pytest.approx(a.test_acc)


    def test_mlp_without_batchnorm_is_vectorised_and_equal(self, registry):
        extra = {"model": "mlp", "model.hidden": 8}
        seq, vec = _pair(registry, "fedem", extra)
        for r in range(2):
            seq.fit_round(r), vec.fit_round(r)
        for a, b in zip(seq.global_params, vec.global_params):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def _registry_with(name, load, default_model):
    """The installed plugins plus a test plugin providing one data set (real pluggy registration)."""
    from fedbench import DatasetSpec, hookimpl
    from tests.conftest import with_plugin

    class TestData:
        @hookimpl
        def fedbench_datasets(self):
            return [DatasetSpec(name=name, load=load, params={"seed": 0}, default_model=default_model)]

    return with_plugin(TestData(), "testdata")


def _image_registry():
    """The installed plugins plus a tiny multiclass image data set."""
    from fedbench import FederatedData

    def load(data_root=None, seed=0):
        g = torch.Generator().manual_seed(seed)
        tr = [(torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 4, (n,), generator=g)) for n in (5, 9, 3)]
        te = [(torch.randn(4, 3, 16, 16, generator=g), torch.randint(0, 4, (4,), generator=g)) for _ in range(3)]
        return FederatedData.from_clients(tr, te, task="multiclass", num_classes=4)

    return _registry_with("tiny-images", load, "cifar10cnn")


class TestConvolutions:
    def test_cpu_auto_choice_runs_convolutions_one_client_at_a_time(self):
        reg = _image_registry()
        cfg = resolve_run(reg, dataset="tiny-images", method="fedem", seed=0, overrides={"rounds": 1})
        sim = build_simulation(reg, cfg)
        assert sim.engine.split("; ")[0] == "sequential (chosen for speed: Conv2d layers run faster one client at a time on a CPU)"

    def test_forced_vectorized_cnn_equals_sequential(self):
        reg = _image_registry()
        sims = [
            build_simulation(
                reg,
                resolve_run(reg, dataset="tiny-images", method="fedem", seed=0, overrides={"batch_size": 4, "lr": 0.01}, engine=e),
            )
            for e in ("sequential", "vectorized")
        ]
        assert sims[1].engine.startswith("vectorized")
        seq, vec = sims[0].aggregator, sims[1].aggregator
        for r in range(2):
            seq.fit_round(r), vec.fit_round(r)
        for a, b in zip(seq.global_params, vec.global_params):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        for a, b in zip(seq.evaluate(), vec.evaluate()):
            assert b.test_loss == pytest.approx(a.test_loss, rel=1e-4) and b.test_acc == a.test_acc


    @pytest.mark.parametrize("method", ["fedem", "local"])  # global learners, and each client's own parameters
    def test_evaluation_passes_are_bounded_by_the_models_activations(self, monkeypatch, method):
        import fedbench.engine.vectorized.evaluate as engine_module

        reg = _image_registry()
        cfg = resolve_run(reg, dataset="tiny-images", method=method, seed=0, overrides={"batch_size": 4}, engine="vectorized")
        free = build_simulation(reg, cfg)
        assert free.engine.startswith("vectorized")
        free.aggregator.fit_round(0)
        want = free.aggregator.evaluate()
        eng = free.aggregator.engine
        (logits, acts), = eng._sample_cost.values()
        # by hand: one sample's widest layer output, doubled (input and output live at once), and its 4 logits
        widest = []
        hooks = [m.register_forward_hook(lambda _m, _i, out: widest.append(out.numel()))
                 for m in eng.model.modules() if not list(m.children())]
        eng.model.eval()
        with torch.no_grad():
            eng.model(torch.zeros(1, 3, 16, 16))
        for h in hooks:
            h.remove()
        assert (logits, acts) == (4, 2 * max(widest))
        monkeypatch.setattr(engine_module, "EVAL_ACTIVATIONS", 2 * acts)  # two samples' worth per pass
        bounded = build_simulation(reg, cfg)
        bounded.aggregator.fit_round(0)
        seen = []
        first = next(m for m in bounded.aggregator.engine.model.modules() if isinstance(m, torch.nn.Conv2d))
        first.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[0]))
        got = bounded.aggregator.evaluate()
        m = cfg.n_learners if method == "fedem" else 1  # FedEM's learners run side by side in one pass
        assert seen and max(seen) <= max(1, 2 // m) and max(seen) < 8
        for a, b in zip(want, got):
            assert b.test_acc == a.test_acc and b.test_loss == pytest.approx(a.test_loss, rel=1e-5)


class FedDynClient(Client):
    """FedDyn's client (Acar et al., ICLR 2021), written as an outside plugin author would: local objective
    f_i(w) - <g_i, w> + alpha/2 ||w - w_received||^2, then g_i <- g_i - alpha (w_i - w_received). Its state g_i
    reaches the objective through term_context and is updated in after_fit: no core edit, both backends."""

    alpha = 0.1

    def term_context(self, params, extras):  # noqa: ANN001, ANN201
        if not hasattr(self, "g"):
            self.g = [torch.zeros_like(p) for p in params]
        return [{**ctx, "g": g} for ctx, g in zip(super().term_context(params, extras), self.g)]

    def local_term(self, theta, ctx):  # noqa: ANN001, ANN201
        return -(ctx["g"] * theta).sum() + self.alpha / 2 * (theta - ctx["received"]).pow(2).sum()

    def after_fit(self, ins, update):  # noqa: ANN001, ANN201
        self.g = [g - self.alpha * (w - p) for g, w, p in zip(self.g, update.params, ins.params)]


def test_an_outside_client_with_state_and_a_local_term_runs_vectorised_and_equals_sequential(registry):
    seq, vec = _pair(registry, "fedavg", {"momentum": 0.0, "participation": 0.5})
    for agg in (seq, vec):
        for c in agg.clients:
            c.__class__ = FedDynClient
    assert vectorisable(torch.nn.Linear(2, 1), vec.clients) is None
    def memories_agree(seq, vec):  # noqa: ANN001
        for cs, cv in zip(seq.clients, vec.clients):
            assert hasattr(cs, "g") == hasattr(cv, "g")
            for gs, gv in zip(getattr(cs, "g", []), getattr(cv, "g", [])):
                torch.testing.assert_close(gs, gv, rtol=1e-5, atol=1e-6)

    _in_step(seq, vec, 4, memories_agree)
    trained = [c for c in vec.clients if hasattr(c, "g")]
    assert trained and all(float(c.g[0].abs().max()) > 0 for c in trained)  # the state really moved
    # and it changes training: the same rounds without the term end elsewhere
    plain, _ = _pair(registry, "fedavg", {"momentum": 0.0, "participation": 0.5})
    for r in range(4):
        plain.fit_round(r)
    assert not torch.allclose(plain.global_params[0], seq.global_params[0])


def _in_step(seq, vec, rounds: int, check=None) -> None:  # noqa: ANN001
    """Train both engines a round at a time: the global parameters, and ``check(seq, vec)``, agree after each."""
    for r in range(rounds):
        seq.fit_round(r), vec.fit_round(r)
        for a, b in zip(seq.global_params, vec.global_params):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        if check is not None:
            check(seq, vec)


def test_fedavg_plus_trains_vectorised_and_tunes_per_client_with_the_same_numbers(registry):
    def tuned_scores_agree(seq, vec):  # noqa: ANN001
        es, ev = seq.evaluate(), vec.evaluate()  # the tuned copies, scored per client on both
        assert [e.test_acc for e in ev] == pytest.approx([e.test_acc for e in es], abs=1e-6)
        assert [c.last_tune_lr for c in vec.clients] == [c.last_tune_lr for c in seq.clients]

    _in_step(*_pair(registry, "fedavg+", {"participation": 0.5}), 4, tuned_scores_agree)


def test_fedbn_runs_vectorised_through_receive_and_after_fit(registry):
    seq, vec = _pair(registry, "fedbn", {"participation": 0.5})
    _in_step(seq, vec, 3)
    assert all((cs._own is None) == (cv._own is None) for cs, cv in zip(seq.clients, vec.clients))
    assert any(cv._own is not None for cv in vec.clients)  # after_fit ran on the vectorised backend


class JointSGDClient(Client):
    """The plain client with its SGD written as a client's own step: ``Client.joint_step``, the default."""

    def fit_phases(self):
        from fedbench import FitPhase

        return (FitPhase(term=None, step="joint_step"),)


@pytest.mark.parametrize("engine", ["sequential", "vectorized"])
def test_the_default_joint_step_is_the_reference_sgd(registry, engine):
    # one learner: the step's unweighted batch loss is the reference's (weights 1), and both draw one
    # order per epoch from the same stream, so the two give the same parameters and momentum every round
    extra = {**TINY, "momentum": 0.9, "weight_decay": 0.01, "batch_size": 16}
    sims = [build_simulation(registry, resolve_run(registry, dataset="synthetic", method="fedavg", seed=2,
                                                   overrides=extra, engine=engine)) for _ in range(2)]
    for c in sims[1].aggregator.clients:
        c.__class__ = JointSGDClient
    assert all(s.engine.startswith(engine) for s in sims)
    for r in range(3):
        plain, joint = sims[0].aggregator.fit_round(r), sims[1].aggregator.fit_round(r)
        assert joint.train_loss == pytest.approx(plain.train_loss, rel=1e-5)
        torch.testing.assert_close(sims[1].aggregator.global_params[0], sims[0].aggregator.global_params[0],
                                   rtol=1e-5, atol=1e-6)
        for a, b in zip(sims[0].aggregator.clients, sims[1].aggregator.clients):
            torch.testing.assert_close(b.momentum[0], a.momentum[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("budget", [None, 2_000, 40])
def test_e_step_losses_of_clients_with_their_own_parameters_are_batched_over_clients_and_equal(registry, monkeypatch, budget):
    """D-FedEM's clients each hold their own learners: their E-step losses are computed many clients per
    pass (padded to the widest of a block); whatever the blocks and pass widths, each client's losses are
    those of a pass over that client alone and of its own ensemble (to rounding: the matrix products
    group the sums differently)."""
    import fedbench.engine.vectorized.evaluate as engine_module

    cfg = resolve_run(registry, dataset="synthetic", method="d-fedem", seed=3, overrides=TINY, engine="vectorized")
    agg = build_simulation(registry, cfg).aggregator
    agg.fit_round(0)
    clients = agg.clients
    params = [agg.instructions(1, 0.1, c).params for c in clients]
    assert len({id(p) for p in params}) == len(clients)  # every client its own parameters
    eng = agg.engine
    alone = [eng._learner_outputs(ps, c.data.train_x, lambda z: z, c) for c, ps in zip(clients, params)]
    if budget is not None:  # 8 * budget input elements per pass: several blocks, several passes per client
        monkeypatch.setattr(engine_module, "EVAL_BUDGET", budget)
    batched = eng._train_losses(clients, params)
    for c, ps, logits, losses in zip(clients, params, alone, batched):
        expected = torch.stack([eng.task.loss(logits[j], c.data.train_y) for j in range(len(ps))])
        assert losses.shape == expected.shape == (len(ps), c.n_train)
        torch.testing.assert_close(losses, expected, rtol=1e-6, atol=1e-7)
        c.load(ps)
        torch.testing.assert_close(losses, c.ensemble.per_sample_losses(c.data.train_x, c.data.train_y))


def test_row_major_linear_is_the_same_linear_layer_and_gradient():
    """The engine's layout of F.linear (RowMajorLinear) computes the same outputs and gradients as
    F.linear, under vmap over rows and on plain inputs of any rank, with or without bias."""
    import torch.nn.functional as F
    from torch.func import vmap

    from fedbench.engine import RowMajorLinear

    gen = torch.Generator().manual_seed(0)
    for x_shape, out_features, bias in [((5, 7, 11), 1, True), ((5, 7, 11), 3, False), ((4, 6, 2, 9), 10, True)]:
        x = torch.randn(*x_shape, generator=gen, dtype=torch.float64)
        w = torch.randn(x_shape[0], out_features, x_shape[-1], generator=gen, dtype=torch.float64)
        b = torch.randn(x_shape[0], out_features, generator=gen, dtype=torch.float64) if bias else None
        g = torch.randn(*x_shape[:-1], out_features, generator=gen, dtype=torch.float64)
        results = []
        for row_major in (False, True):
            wr = w.clone().requires_grad_(True)
            br = b.clone().requires_grad_(True) if bias else None
            fn = (lambda xx, ww, bb: F.linear(xx, ww, bb)) if bias else (lambda xx, ww, bb: F.linear(xx, ww))
            if row_major:
                with RowMajorLinear():
                    out = vmap(fn, in_dims=(0, 0, 0 if bias else None))(x, wr, br)
            else:
                out = vmap(fn, in_dims=(0, 0, 0 if bias else None))(x, wr, br)
            grads = torch.autograd.grad((out * g).sum(), [wr] + ([br] if bias else []))
            results.append((out, grads))
        (out_a, grads_a), (out_b, grads_b) = results
        assert out_b.shape == out_a.shape and out_b.is_contiguous()
        torch.testing.assert_close(out_b, out_a)
        for ga, gb in zip(grads_a, grads_b):
            torch.testing.assert_close(gb, ga)
    # a one-sample input (a vector) and other functions pass through unchanged
    v, w2 = torch.randn(11, generator=gen), torch.randn(3, 11, generator=gen)
    plain_v, plain_relu = F.linear(v, w2), torch.relu(v)
    with RowMajorLinear():
        assert torch.equal(F.linear(v, w2), plain_v)
        assert torch.equal(torch.relu(v), plain_relu)
    manual = torch.randn(4, 11, generator=gen)
    with RowMajorLinear():
        inside = F.linear(manual, w2)
    torch.testing.assert_close(inside, manual @ w2.T)


def test_buckets_split_short_batches_from_full_ones_unless_padding_them_is_cheaper():
    """Rows with a batch of at most B/2 samples form their own row set, unless padding them to the full
    rows' width adds at most ``merge_padding`` samples; chunks are even and hold every row once."""
    from fedbench.engine.vectorized.schedule import _buckets

    count = torch.tensor([0, 128, 10, 100, 60, 0])
    # merging pads rows 2 and 4 from width 60 to 128: 2 * 68 = 136 padded samples
    split = _buckets(count, 128, 10**6, merge_padding=135)
    assert [s.tolist() for s in split] == [[2, 4], [1, 3]]
    merged = _buckets(count, 128, 10**6, merge_padding=136)
    assert [s.tolist() for s in merged] == [[1, 2, 3, 4]]
    assert _buckets(torch.zeros(4, dtype=torch.long), 128, 10**6) == []
    only_short = _buckets(torch.tensor([3, 0, 64]), 128, 10**6)  # one group: nothing to merge
    assert [s.tolist() for s in only_short] == [[0, 2]]
    assert [len(c) for c in _buckets(torch.tensor([64] * 4), 128, 128)] == [2, 2]  # chunked by its width, 64
    # 7 full rows, at most 3 rows (3 * 128 samples) per chunk: 3 even chunks, not 3 + 3 + 1
    chunks = _buckets(torch.full((7,), 128), 128, 3 * 128)
    assert [len(c) for c in chunks] == [3, 2, 2] and [r for c in chunks for r in c.tolist()] == list(range(7))
    # short rows are chunked by their own width: 64 samples each
    assert [len(c) for c in _buckets(torch.tensor([64] * 5 + [128]), 128, 128, merge_padding=0)] == [2, 2, 1, 1]


@pytest.mark.parametrize("set_cost", [0, 1 << 40])
@pytest.mark.parametrize("method, extra", [CASES[1], CASES[7]])
def test_short_batches_alone_or_padded_into_the_full_rows_give_the_reference_numbers(registry, monkeypatch, set_cost, method, extra):
    """Whether the rows with short last batches train as a row set of their own (SET_COST 0) or padded
    into the full rows' set (the tiny model always merges), every round equals the one-at-a-time path."""
    import fedbench.engine.vectorized.schedule as engine_module

    monkeypatch.setattr(engine_module, "SET_COST", set_cost)
    calls = []
    real = engine_module._buckets
    monkeypatch.setattr(engine_module, "_buckets", lambda *a: calls.append(real(*a)) or calls[-1])
    seq, vec = _pair(registry, method, extra)
    for r in range(2):
        seq.fit_round(r), vec.fit_round(r)
        for a, b in zip(_state(seq), _state(vec)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # SET_COST 0 splits a step with both kinds of rows into two sets; a huge one never does
    assert any(len(sets) >= 2 for sets in calls) == (set_cost == 0)


def test_the_schedule_holds_every_rows_reference_orders_batch_by_batch(registry):
    """The vectorised schedule draws each client's keys in place and masks its padding by position: row
    (client, learner) at epoch e is epoch_orders of the client's round generator, cut into batches, as
    global sample indices, the last batch padded with the client's first sample; ``counts`` give every
    batch's real samples (min(B, n - j B) at batch j), 0 in the steps the row idles."""
    from fedbench.fl.learner import epoch_orders
    from fedbench.fl.seeding import STREAM_TRAIN, generator

    over = {**TINY, "dataset.n_clients": 6}
    cfg = resolve_run(registry, dataset="synthetic", method="fedem", seed=5, overrides=over, engine="vectorized")
    agg = build_simulation(registry, cfg).aggregator
    eng, clients, m, epochs, batch = agg.engine, agg.clients, 3, 2, 4
    sizes = [c.n_train for c in clients]
    assert len(set(sizes)) > 1 and max(sizes) > 2 * batch and min(sizes) % batch  # different numbers of batches
    steps = eng._schedule(clients, m, epochs, batch, 7)
    nb_max = -(-max(sizes) // batch)
    assert steps.gidx.shape == (len(clients) * m, epochs * nb_max, batch) and steps.counts.shape == steps.gidx.shape[:2]
    for ci, c in enumerate(clients):
        first = int(eng.data.train_offsets[c.client_id])
        orders = epoch_orders(generator(5, STREAM_TRAIN, 7, c.client_id), m * epochs, c.n_train).view(m, epochs, -1)
        nb = -(-c.n_train // batch)
        for j in range(m):
            r = ci * m + j
            assert int(steps.first[r]) == first
            row = steps.gidx[r].view(epochs, nb_max * batch)
            counts = steps.counts[r].reshape(epochs, nb_max)
            for e in range(epochs):
                assert torch.equal(row[e, : c.n_train] - first, orders[j, e])
                assert (row[e, c.n_train: nb * batch] == first).all()
                assert counts[e].tolist() == [min(batch, c.n_train - b * batch) for b in range(nb)] + [0] * (nb_max - nb)

@pytest.mark.parametrize("method, extra", [
    ("fedem", {"local_epochs": 2, "participation": 0.5}),  # M = 3 learners sharing a block, a subset of it
    ("fedprox", {"batch_size": 90}),  # a local term; clients of 67, 69 and 86 samples
    ("fedrep", {"client.head_epochs": 3}),  # frozen tensors, the block reused every epoch
])
def test_clients_whose_batch_is_their_whole_data_train_from_one_block_and_equal_the_reference(registry, monkeypatch, method, extra):
    """A client with at most B samples has one batch per epoch, its whole data in the order drawn: the
    engine trains every such client's learners from one padded block of their samples (the inputs read
    once for all M learners, no gather per step). The gradients are summed in another order than the
    reference's shuffled one: every round still equals the one-at-a-time path to rounding."""
    from fedbench.engine import VectorizedEngine

    calls = []
    real = VectorizedEngine._whole_grad
    monkeypatch.setattr(VectorizedEngine, "_whole_grad", lambda self, theta, *a: calls.append(theta.shape[0]) or real(self, theta, *a))
    seq, vec = _pair(registry, method, extra)
    batch = vec.train.batch_size
    whole = [c for c in vec.clients if c.n_train <= batch]
    assert whole and len(whole) < len(vec.clients)
    for r in range(3):
        seq.fit_round(r), vec.fit_round(r)
        for a, b in zip(_state(seq), _state(vec)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    m = len(vec.clients[0].ensemble)
    assert calls and all(rows % m == 0 and rows <= len(whole) * m for rows in calls)


def test_a_block_over_the_row_budget_leaves_those_clients_to_the_gathered_batches(registry, monkeypatch):
    import fedbench.engine.vectorized.schedule as engine_module
    from fedbench.engine import VectorizedEngine

    monkeypatch.setattr(engine_module, "ROW_BUDGET", 128 * 10)  # less than the block of 4 clients x 128 x 10 inputs
    calls = []
    monkeypatch.setattr(VectorizedEngine, "_whole_grad", lambda *a: calls.append(1))
    seq, vec = _pair(registry, "fedem", {})
    seq.fit_round(0), vec.fit_round(0)
    assert not calls
    for a, b in zip(_state(seq), _state(vec)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


class ParityProxClient(Client):
    """An outside FedProx variant whose mu differs by client (0 on even ids, 5 on odd ones), written against
    the documented ``local_term``: the batched step must not run client 0's term for everyone."""

    def local_term(self, theta, ctx):  # noqa: ANN001, ANN201
        mu = 0.0 if self.client_id % 2 == 0 else 5.0
        return mu / 2 * (theta - ctx["received"]).pow(2).sum()


def test_a_local_term_reading_a_per_client_value_is_not_batched_and_equals_sequential(registry):
    seq, vec = _pair(registry, "fedavg", {"momentum": 0.0, "participation": 1.0})
    for agg in (seq, vec):
        for c in agg.clients:
            c.__class__ = ParityProxClient
    _in_step(seq, vec, 3)
    assert list(vec.engine.declined.values()) == [0]  # declined from the first round on, with its reason
    (why,) = vec.engine.declined
    assert "client 1's local term (ParityProxClient.local_term)" in why and "per-client value" in why
    assert "one client at a time" in vec.engine.note()
    # and the terms really differ: a uniform mu of 5 ends elsewhere (the check is not vacuous)
    uniform, _ = _pair(registry, "fedprox", {"momentum": 0.0, "participation": 1.0, "client.mu": 5.0})
    for r in range(3):
        uniform.fit_round(r)
    assert not torch.allclose(uniform.global_params[0], seq.global_params[0])


def test_clients_with_equal_terms_stay_batched(registry):
    seq, vec = _pair(registry, "fedprox", {"momentum": 0.0, "participation": 0.5, "client.mu": 0.5})
    _in_step(seq, vec, 2)
    assert vec.engine.declined == {} and vec.engine.note() == ""


def test_the_client_check_names_types_settings_and_own_steps(registry):
    from fedbench.engine import ClientCheck

    _, vec = _pair(registry, "fedavg", {"momentum": 0.0})
    clients = vec.clients[:3]
    ins = [vec.instructions(0, 0.1, c) for c in clients]
    assert ClientCheck().why_not(clients, ins) is None
    clients[2].__class__ = JointSGDClient  # another type
    assert "is a JointSGDClient" in ClientCheck().why_not(clients, ins)

    class Wider(Client):
        def sgd_config(self, lr):  # noqa: ANN001, ANN202
            cfg = super().sgd_config(lr)
            return dataclasses.replace(cfg, batch_size=cfg.batch_size + self.client_id)

    for c in clients:
        c.__class__ = Wider
    assert "SGD settings differ" in ClientCheck().why_not(clients, ins)

    class OwnStep(JointSGDClient):
        def joint_step(self, theta, momentum, grad, sgd):  # noqa: ANN001, ANN201
            new, buf, value = super().joint_step(theta, momentum, grad, sgd)
            return new * (1.0 + getattr(self, "scale", 0.0)), buf, value

    for c in clients:
        c.__class__ = OwnStep
    check = ClientCheck()
    assert check.why_not(clients, ins) is None  # equal: remembered, not probed again
    assert set(check.equal) == {c.client_id for c in clients[1:]}
    clients[1].scale = 2.0  # a per-client value set between rounds: the changed client is probed again
    assert "client %d's own step (joint_step)" % clients[1].client_id in check.why_not(clients, ins)


class NamedTermClient(Client):
    """FedProx's term, its phase naming it by the method's name (plugin API 2's form)."""

    def local_term(self, theta, ctx):  # noqa: ANN001, ANN201
        return 0.25 * (theta - ctx["received"]).pow(2).sum()

    def fit_phases(self):  # noqa: ANN201
        from fedbench import FitPhase

        return (FitPhase(term="local_term"),)


class FunctionTermClient(NamedTermClient):
    """The same term, its phase naming the function itself."""

    def fit_phases(self):  # noqa: ANN201
        from fedbench import FitPhase

        return (FitPhase(term=type(self).local_term),)


@pytest.mark.parametrize("engine", ["sequential", "vectorized"])
def test_a_phase_names_its_term_by_function_or_by_name_with_the_same_numbers(registry, engine):
    sims = [build_simulation(registry, resolve_run(registry, dataset="synthetic", method="fedavg", seed=4,
                                                   overrides=TINY, engine=engine)) for _ in range(2)]
    for sim, cls in zip(sims, (NamedTermClient, FunctionTermClient)):
        for c in sim.aggregator.clients:
            c.__class__ = cls
    for r in range(2):
        assert sims[0].aggregator.fit_round(r) == sims[1].aggregator.fit_round(r)
    assert torch.equal(sims[0].aggregator.global_params[0], sims[1].aggregator.global_params[0])
    assert not sims[1].aggregator.engine.declined  # a function bound per client passes the check like a name


def test_phase_names_that_would_clash_are_refused_where_the_phase_is_written():
    from fedbench import FitPhase

    for kept in ({"keep": "received"}, {"keep": "previous"}, {"step": Client.joint_step, "term": None, "carry": ("received",)}):
        with pytest.raises(ValueError, match="cannot be named"):
            FitPhase(**kept)
    with pytest.raises(ValueError, match="the client type's function"):
        FitPhase(term=42)
