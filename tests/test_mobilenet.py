"""fedbench's MobileNetV2 against torchvision's, the network the FedEM authors build: the same parameters
under one seed, bit for bit, the same outputs and gradients, and torchvision's state_dict loading into it;
and a run that builds it does not import torchvision."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from fedbench_plugins.models.mobilenet import MobileNetV2, round_channels
from fedbench_plugins.models.networks import mobilenet_v2

tv = pytest.importorskip("torchvision.models")


def test_channel_rounding_by_hand():
    # nearest multiple of 8, at least 8, and once more up when rounding lost over 10 %
    assert [round_channels(w) for w in (32, 16 * 0.5, 24 * 0.35, 3.0, 12, 1280 * 1.4, 100, 90)] == [
        32, 8, 8, 8, 16, 1792, 104, 88]
    assert round_channels(76) == 80 and round_channels(75.9) == 72  # 72 >= 0.9 * 75.9 = 68.3: kept
    assert round_channels(19.9) == 24  # 16 < 0.9 * 19.9 = 17.9: one more step
    assert round_channels(11) == 16 and round_channels(9) == 16  # 8 < 9.9 and 8 < 8.1


@pytest.mark.parametrize("width_mult,n_outputs", [(1.0, 10), (0.5, 100), (1.4, 7)])
def test_same_parameters_as_torchvision_under_one_seed(width_mult, n_outputs):
    torch.manual_seed(3)
    ours = MobileNetV2(n_outputs, width_mult=width_mult)
    torch.manual_seed(3)
    theirs = tv.mobilenet_v2(weights=None, num_classes=n_outputs, width_mult=width_mult)
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b)  # names and order: torchvision's ImageNet file loads as it is
    for name in a:
        assert a[name].dtype == b[name].dtype and torch.equal(a[name], b[name]), name
    # the generator is left where torchvision leaves it (what is drawn next is the same)
    torch.manual_seed(3)
    MobileNetV2(n_outputs, width_mult=width_mult)
    after_ours = torch.rand(4)
    torch.manual_seed(3)
    tv.mobilenet_v2(weights=None, num_classes=n_outputs, width_mult=width_mult)
    assert torch.equal(after_ours, torch.rand(4))


def test_same_outputs_gradients_and_statistics_as_torchvision():
    torch.manual_seed(0)
    ours = MobileNetV2(10)
    theirs = tv.mobilenet_v2(weights=None, num_classes=10)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(6, 3, 32, 32)
    for mode in ("train", "eval"):
        getattr(ours, mode)(), getattr(theirs, mode)()
        torch.manual_seed(1)
        out_a = ours(x)
        torch.manual_seed(1)
        out_b = theirs(x)
        assert torch.equal(out_a, out_b), mode
        out_a.square().sum().backward()
        out_b.square().sum().backward()
        for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
            assert torch.equal(p.grad, q.grad), (mode, name)
        ours.zero_grad(), theirs.zero_grad()
    for name, buf in ours.named_buffers():  # the training pass moved BatchNorm's statistics the same way
        assert torch.equal(buf, theirs.get_buffer(name)), name


def test_residual_blocks_where_the_shapes_allow():
    model = MobileNetV2(10)
    blocks = list(model.features)[1:-1]
    assert len(blocks) == 17 and sum(b.residual for b in blocks) == 10  # 1+2+3+2+1+2 repeats add their input
    block = blocks[2]  # second block of the 24-channel stage: stride 1, 24 -> 24
    x = torch.randn(2, 24, 8, 8)
    block.eval()
    assert torch.equal(block(x), x + block.conv(x))


def test_pretrained_classifier_starts_as_a_fresh_linear(tmp_path):
    torch.manual_seed(0)
    torch.save(MobileNetV2(1000).state_dict(), tmp_path / "w.pth")
    torch.manual_seed(5)
    model = mobilenet_v2((3, 32, 32), 10, weights_path=str(tmp_path / "w.pth"))
    weight = model.classifier[1].weight
    bound = 1 / 1280 ** 0.5  # nn.Linear's default draw: uniform within 1/sqrt(fan_in), not normal(0, 0.01)
    assert weight.abs().max() <= bound and weight.abs().max() > 0.9 * bound
    fresh = nn.Linear(1280, 10)
    assert fresh.weight.shape == weight.shape


def test_building_it_does_not_import_torchvision():
    code = ("import sys; from fedbench_plugins.models.networks import mobilenet_v2; "
            "m = mobilenet_v2((3, 32, 32), 10); m(__import__('torch').zeros(2, 3, 32, 32)); "
            "print('torchvision' in sys.modules, 'sympy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
