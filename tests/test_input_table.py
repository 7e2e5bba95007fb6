"""Inputs stored as integer codes (uint8 pixels) and decoded by each model, batch by batch, through the data
set's ``input_table``: the same numbers as storing the decoded floats, on both engines."""

from __future__ import annotations

import pytest
import torch

from fedbench.runs.build import build_simulation, resolve_run
from fedbench.fl.data import FederatedData, decode_inputs
from fedbench.errors import DataError
from fedbench_plugins.datasets.pooled import image_table, to_float_images

MEAN, STD = (0.5, 0.25, 0.125), (0.2, 0.3, 0.4)


def _coded(seed: int = 0) -> FederatedData:
    g = torch.Generator().manual_seed(seed)
    tr = [(torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=g), torch.randint(0, 4, (n,), generator=g))
          for n in (5, 9, 3)]
    te = [(torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8, generator=g), torch.randint(0, 4, (4,), generator=g))
          for _ in range(3)]
    return FederatedData.from_clients(tr, te, task="multiclass", num_classes=4, input_table=image_table(3, MEAN, STD))


def _floats(seed: int = 0) -> FederatedData:
    d = _coded(seed)
    return FederatedData(to_float_images(d.train_x, MEAN, STD), d.train_y, d.train_offsets,
                         to_float_images(d.test_x, MEAN, STD), d.test_y, d.test_offsets, d.task, d.num_classes)


def test_a_code_decodes_to_the_hand_computed_value_per_channel():
    table = image_table(3, MEAN, STD)
    x = torch.tensor([[[[0, 255]], [[51, 51]], [[255, 0]]]], dtype=torch.uint8)  # (1, 3, 1, 2)
    got = decode_inputs(table, x, 3)
    want = torch.tensor([[[[(0 - 0.5) / 0.2, (1 - 0.5) / 0.2]], [[(0.2 - 0.25) / 0.3] * 2], [[(1 - 0.125) / 0.4, -0.125 / 0.4]]]])
    torch.testing.assert_close(got, want)
    assert torch.equal(decode_inputs(table, x[0], 3), got[0])  # one sample, no batch axis
    assert torch.equal(decode_inputs(image_table(3), x, 3), x.float() / 255)  # no normalisation: one row


def test_the_container_refuses_codes_it_cannot_decode():
    d = _coded()
    with pytest.raises(DataError, match="integer codes"):
        FederatedData(d.train_x.float(), d.train_y, d.train_offsets, d.test_x, d.test_y, d.test_offsets, d.task,
                      d.num_classes, input_table=d.input_table)
    with pytest.raises(DataError, match="outside input_table's 16 codes"):
        FederatedData(d.train_x, d.train_y, d.train_offsets, d.test_x, d.test_y, d.test_offsets, d.task,
                      d.num_classes, input_table=d.input_table[:, :16])
    with pytest.raises(DataError, match="2 rows"):
        FederatedData(d.train_x, d.train_y, d.train_offsets, d.test_x, d.test_y, d.test_offsets, d.task,
                      d.num_classes, input_table=d.input_table[:2])
    assert d.select([2, 0]).input_table is d.input_table and d.to("cpu").input_table is not None
    client = d.client(1)
    assert torch.equal(client.decode(client.train_x[0]), d.decode(client.train_x)[0])  # one sample, no batch axis


def _registry(load):
    from fedbench import DatasetSpec, hookimpl
    from tests.conftest import with_plugin

    class TestData:
        @hookimpl
        def fedbench_datasets(self):
            return [DatasetSpec(name="codes", load=load, params={"seed": 0}, default_model="cifar10cnn")]

    return with_plugin(TestData(), "testdata")


@pytest.mark.parametrize("method, engine", [("fedavg", "sequential"), ("fedem", "sequential"), ("fedem", "vectorized")])
def test_training_on_codes_equals_training_on_their_floats(method, engine):
    sims = []
    for load in (lambda data_root=None, seed=0: _coded(seed), lambda data_root=None, seed=0: _floats(seed)):
        reg = _registry(load)
        cfg = resolve_run(reg, dataset="codes", method=method, seed=0, overrides={"batch_size": 4, "lr": 0.01}, engine=engine)
        sims.append(build_simulation(reg, cfg))
    assert sims[0].engine.split()[0] == engine and sims[0].data.train_x.dtype == torch.uint8
    coded, floats = sims[0].aggregator, sims[1].aggregator
    for r in range(2):
        assert coded.fit_round(r).train_loss == floats.fit_round(r).train_loss
    for a, b in zip(coded.global_params, floats.global_params):
        assert torch.equal(a, b)
    for a, b in zip(coded.evaluate(), floats.evaluate()):
        assert (a.test_loss, a.test_acc, a.train_loss) == (b.test_loss, b.test_acc, b.train_loss)


def test_the_data_cache_keeps_the_table_and_checks_it(tmp_path):
    from fedbench.runs import datacache
    d = _coded()
    datacache._save(tmp_path / "entry.pt", d)
    back = datacache._load(tmp_path / "entry.pt")
    assert back.train_x.dtype == torch.uint8 and torch.equal(back.input_table, d.input_table)
    assert torch.equal(back.decode(back.test_x), d.decode(d.test_x))
