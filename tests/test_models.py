"""The paper's models: layer shapes from the paper, ImageNet weights only from a local file."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedbench.errors import ConfigError
from fedbench_plugins.models.networks import cifar10cnn, femnist_cnn, mobilenet_v2, next_char_lstm


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_cnn_layer_sizes_match_the_paper():
    # conv 1->32 k5 (832), conv 32->64 k5 (51,264), fc 1024->2048 (2,099,200), fc 2048->62 (127,038)
    assert n_params(femnist_cnn((1, 28, 28), 62)) == 832 + 51_264 + 2_099_200 + 127_038
    # CIFAR: conv 3->32 k5 (2,432), conv 32->64 k5, fc 1600->2048 (3,278,848), fc 2048->10 (20,490)
    assert n_params(cifar10cnn((3, 32, 32), 10)) == 2_432 + 51_264 + 3_278_848 + 20_490
    with pytest.raises(ValueError, match="at least 12x12"):
        femnist_cnn((1, 8, 8), 10)


def test_next_char_lstm_shapes_and_parameter_count():
    model = next_char_lstm((80,), 100)
    out = model(torch.randint(0, 100, (3, 80)))
    assert out.shape == (3, 80, 100)  # the authors' model: logits after every position
    lstm1 = 4 * (256 * 8 + 256 * 256 + 2 * 256)
    lstm2 = 4 * (256 * 256 + 256 * 256 + 2 * 256)
    assert n_params(model) == 100 * 8 + lstm1 + lstm2 + 256 * 100 + 100
    # position k's prediction depends on characters up to k only (the LSTM reads left to right)
    x = torch.zeros(1, 80, dtype=torch.long)
    y = x.clone()
    y[0, -1] = 5
    a, b = model(x), model(y)
    assert torch.equal(a[0, :-1], b[0, :-1]) and not torch.allclose(a[0, -1], b[0, -1])
    # positions=last: LEAF's next character only, the same weights' last position
    last = next_char_lstm((80,), 100, positions="last")
    last.load_state_dict(model.state_dict())
    assert last(x).shape == (1, 100)
    torch.testing.assert_close(last(x), a[:, -1])


def test_mobilenet_loads_local_weights_but_not_the_classifier(tmp_path):
    torch.manual_seed(0)
    source = mobilenet_v2((3, 32, 32), 1000)
    torch.save(source.state_dict(), tmp_path / "w.pth")
    torch.manual_seed(1)
    model = mobilenet_v2((3, 32, 32), 10, weights_path=str(tmp_path / "w.pth"))
    assert torch.equal(model.features[3].conv[0][0].weight, source.features[3].conv[0][0].weight)
    assert torch.equal(model.features[3].conv[0][1].running_var, source.features[3].conv[0][1].running_var)
    assert model.classifier[1].out_features == 10
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ConfigError, match="not found"):
        mobilenet_v2((3, 32, 32), 10, weights_path=str(tmp_path / "missing.pth"))
    torch.save({"junk": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ConfigError, match="does not match"):
        mobilenet_v2((3, 32, 32), 10, weights_path=str(tmp_path / "bad.pth"))


def test_mobilenet_adapts_to_grey_images():
    assert mobilenet_v2((1, 28, 28), 62)(torch.zeros(2, 1, 28, 28)).shape == (2, 62)
